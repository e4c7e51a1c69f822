"""Which filesystem holds a folder, from the mount table: ``file_watcher: auto`` polls folders
on filesystems whose writers the kernel here may not see (another machine's writes to NFS,
a FUSE daemon's own writes), and watches the rest with inotify."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["REMOTE_TYPES", "Mount", "mount_of", "remote_mounts"]

#: Filesystem types (``/proc/self/mountinfo``'s fstype, before any ``.subtype``) where
#: inotify reports only the writes made through this machine's mount.
REMOTE_TYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "lustre",
        "gpfs",
        "fuse",
        "fuseblk",
        "ceph",
        "glusterfs",
        "beegfs",
        "afs",
        "9p",
        "panfs",
        "pvfs2",
        "orangefs",
        "ocfs2",
        "gfs2",
        "virtiofs",
    }
)


@dataclass(frozen=True, slots=True)
class Mount:
    point: str  # where it is mounted
    fstype: str  # e.g. nfs4, fuse.sshfs
    source: str  # e.g. server:/export

    @property
    def remote(self) -> bool:
        return self.fstype.split(".", 1)[0] in REMOTE_TYPES


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounts(table: str = "/proc/self/mountinfo") -> list[Mount]:
    """Every mount this process sees (empty where there is no mountinfo)."""
    try:
        with open(table, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split()
        try:
            sep = fields.index("-", 6)
            out.append(Mount(_unescape(fields[4]), fields[sep + 1], _unescape(fields[sep + 2])))
        except (ValueError, IndexError):
            continue
    return out


def _below(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top + os.sep)


def mount_of(folder: str, table: str = "/proc/self/mountinfo") -> Mount | None:
    """The mount holding ``folder`` (the last mounted of the longest matching mount point)."""
    path = os.path.realpath(folder)
    best: Mount | None = None
    for m in mounts(table):
        if _below(path, m.point) and (best is None or len(m.point) >= len(best.point)):
            best = m
    return best


def remote_mounts(folder: str, table: str = "/proc/self/mountinfo") -> list[Mount]:
    """The network or FUSE mounts that hold ``folder`` or lie below it."""
    path = os.path.realpath(folder)
    out = []
    holder = mount_of(path, table)
    if holder is not None and holder.remote:
        out.append(holder)
    out.extend(m for m in mounts(table) if m.remote and m.point != path and _below(m.point, path))
    return out
