"""Job containment: whatever a job starts ends with it, even what left its process group.

A daemon, ``nohup`` or a double fork calls ``setsid()`` and so leaves the job's process group,
which is all a signal to the group reaches. Each job therefore also runs in a container the
kernel keeps track of:

- a **cgroup v2** of its own, where this process may make one: a child of the runner's own
  cgroup (``meow_async.<runner pid>/<job id>.<pid>``), joined by the job's process before it
  runs anything. Whatever is left in it when the job's process ends, or when the job is
  stopped, is killed at once (``cgroup.kill``, Linux 5.14+).
- otherwise a **child subreaper** (``PR_SET_CHILD_SUBREAPER``): the job's process is one, so
  what it orphans while it runs stays in its tree (and is stopped with it), and the fork server
  is one, so what the job's end orphans becomes the server's child, and is killed then.

Standard library only: the fork server loads this file by its path (see forkserver.py).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import time
from typing import Any

__all__ = [
    "Cgroups",
    "become_subreaper",
    "children",
    "kill_cgroup",
    "kill_tree",
    "remove_cgroup",
    "tree",
]

#: The folder of one runner's job cgroups: this, then the runner's pid.
PREFIX = "meow_async."
PR_SET_CHILD_SUBREAPER = 36


# -- cgroup v2 ------------------------------------------------------------------------------------


class Cgroups:
    """Where one runner's jobs get their cgroups: ``<own cgroup>/meow_async.<runner pid>``."""

    def __init__(self, top: str) -> None:
        self.top = top

    @classmethod
    def make(cls, runner_pid: int) -> Cgroups:
        """Make the runner's folder of job cgroups and check that a process can be moved
        into one; OSError says why not (no cgroup v2, not delegated, too old a kernel)."""
        own = own_cgroup()
        if own is None:
            raise OSError(errno.ENOENT, "no cgroup v2 hierarchy is mounted")
        _sweep(own)
        top = os.path.join(own, f"{PREFIX}{runner_pid}")
        with contextlib.suppress(FileExistsError):
            os.mkdir(top)
        self = cls(top)
        try:
            self._probe()
        except OSError:
            with contextlib.suppress(OSError):
                os.rmdir(top)
            raise
        return self

    def _probe(self) -> None:
        """A child process joins a cgroup here, as each job's process will."""
        if not os.path.exists(os.path.join(self.top, "cgroup.kill")):
            raise OSError(errno.ENOTSUP, "this kernel has no cgroup.kill (Linux 5.14+)")
        path = os.path.join(self.top, f"probe.{os.getpid()}")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(r)
            code = 0
            try:
                join(path)
            except OSError as e:
                os.write(w, f"{e.strerror or e}".encode())
                code = 1
            os._exit(code)
        os.close(w)
        try:
            why = os.read(r, 4096).decode(errors="replace")
            os.waitpid(pid, 0)
        finally:
            os.close(r)
            remove_cgroup(path)
        if why:
            raise OSError(errno.EACCES, f"cannot move a process into {path}: {why}")

    def path(self, job_id: str, tag: object) -> str:
        return os.path.join(self.top, f"{job_id}.{tag}")

    def close(self) -> None:
        """Remove the runner's folder, once every job's cgroup in it is gone."""
        with contextlib.suppress(OSError):
            os.rmdir(self.top)


def own_cgroup() -> str | None:
    """This process's cgroup v2 folder, if the unified hierarchy is mounted."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            rel = next((line[3:] for line in f.read().splitlines() if line.startswith("0::")), None)
        mount = _cgroup2_mount()
    except OSError:
        return None
    if rel is None or mount is None:
        return None
    root, point = mount
    if root != "/" and rel.startswith(root):
        rel = rel[len(root) :]
    path = os.path.join(point, rel.lstrip("/"))
    return path if os.path.isdir(path) else None


def _cgroup2_mount() -> tuple[str, str] | None:
    """The cgroup2 mount: its root within the hierarchy, and where it is mounted."""
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields, _, rest = line.partition(" - ")
            if rest.split()[:1] == ["cgroup2"]:
                parts = fields.split()
                return _unescape(parts[3]), _unescape(parts[4])
    return None


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def make_cgroup(path: str) -> None:
    try:
        os.mkdir(path)
    except FileExistsError:
        pass
    except FileNotFoundError:
        # The runner's folder, removed by a fork server that ended while its successor had
        # no job running (a new generation swapped in): made again.
        os.makedirs(path, exist_ok=True)


def join(path: str) -> None:
    """Move the calling process into the cgroup ``path``, made if need be."""
    make_cgroup(path)
    fd = os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)


def procs(path: str) -> list[int]:
    """The processes in a cgroup (none if it is gone)."""
    try:
        with open(os.path.join(path, "cgroup.procs"), encoding="ascii") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def kill_cgroup(path: str) -> int:
    """SIGKILL everything in a cgroup; how many processes were in it."""
    n = len(procs(path))
    with contextlib.suppress(OSError):
        fd = os.open(os.path.join(path, "cgroup.kill"), os.O_WRONLY)
        try:
            os.write(fd, b"1")
        finally:
            os.close(fd)
    return n


def signal_outside(pids: list[int], group: int, sig: int) -> None:
    """Signal those of ``pids`` that left process group ``group`` (which had the signal)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            if os.getpgid(pid) != group:
                os.kill(pid, sig)


def remove_cgroup(path: str) -> bool:
    """Remove an empty cgroup: True once it is gone, False while processes remain in it."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError as e:
        if e.errno == errno.EBUSY:
            return False
        raise
    return True


def stop_cgroup(path: str, wait: float = 2.0) -> int:
    """Kill what a job's cgroup holds and remove it (waiting ``wait`` s at most for the killed
    to be gone): how many processes it held. For cgroups whose runner died."""
    n = kill_cgroup(path)
    deadline = time.monotonic() + wait
    with contextlib.suppress(OSError):
        while not remove_cgroup(path) and time.monotonic() < deadline:
            time.sleep(0.01)
    return n


def _sweep(own: str) -> None:
    """Remove the job cgroups of runners that are gone, as far as they are empty (a killed
    runner's jobs still in one are killed by the restart that reads their ``process.log``)."""
    with contextlib.suppress(OSError), os.scandir(own) as entries:
        for entry in entries:
            name = entry.name
            if not name.startswith(PREFIX) or not name[len(PREFIX) :].isdigit():
                continue
            if os.path.exists(f"/proc/{name[len(PREFIX) :]}"):
                continue  # its runner (or a process with its pid) is alive
            with contextlib.suppress(OSError), os.scandir(entry.path) as jobs:
                for job in jobs:
                    if job.is_dir(follow_symlinks=False):
                        with contextlib.suppress(OSError):
                            remove_cgroup(job.path)
            with contextlib.suppress(OSError):
                os.rmdir(entry.path)


# -- subreaper ------------------------------------------------------------------------------------


def become_subreaper() -> bool:
    """Make the calling process a child subreaper (Linux 3.4+): descendants orphaned below it
    become its children instead of init's. False where it cannot be."""
    prctl = _prctl()
    return prctl is not None and int(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0


_prctl_fn: Any = None


def _prctl() -> Any:
    """libc's prctl, looked up once (a job's process calls it as it starts)."""
    global _prctl_fn  # looked up once
    if _prctl_fn is None:
        try:
            import ctypes

            _prctl_fn = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            _prctl_fn = False
    return _prctl_fn or None


def children(pid: int) -> list[int]:
    """The children of ``pid`` (of all its threads), from /proc: each thread's ``children``
    file where the kernel has them (CONFIG_PROC_CHILDREN), else a walk of every process."""
    if not _children_files():
        return _children_by_walk(pid)
    out: list[int] = []
    with contextlib.suppress(OSError), os.scandir(f"/proc/{pid}/task") as tasks:
        for task in tasks:
            with contextlib.suppress(OSError), open(f"{task.path}/children", "rb") as f:
                out.extend(int(p) for p in f.read().split())
    return out


_has_children_files: bool | None = None


def _children_files() -> bool:
    global _has_children_files  # looked up once
    if _has_children_files is None:
        me = os.getpid()
        _has_children_files = os.path.exists(f"/proc/{me}/task/{me}/children")
    return _has_children_files


def _children_by_walk(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError), os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    stat = f.read()
                if int(stat[stat.rfind(b")") + 2 :].split()[1]) == pid:
                    out.append(int(entry.name))
    return out


def tree(pid: int) -> list[int]:
    """Every descendant of ``pid``, parents before their children."""
    out: list[int] = []
    todo = children(pid)
    seen = set(todo)
    while todo:
        p = todo.pop()
        out.append(p)
        for c in children(p):
            if c not in seen:
                seen.add(c)
                todo.append(c)
    return out


def kill_tree(pids: list[int], sig: int = signal.SIGKILL) -> int:
    """Signal each of ``pids`` and all of their descendants, all found before any is signalled
    (a killed parent hands its children on), parents first (a shell that saw its child die
    would record an exit of its own); how many processes there were."""
    every = [*pids, *(d for pid in pids for d in tree(pid))]
    for pid in every:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)
    return len(every)
