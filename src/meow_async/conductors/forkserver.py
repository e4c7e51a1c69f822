"""The fork server: a warm Python interpreter that forks one child per job.

Runs as its own process (``python forkserver.py FD RUNNER_PID CONTAINMENT``), started by the
runner. It imports only the standard library, then whatever the recipes ask to ``preload``, so
a job's process starts as a fork of an interpreter that has done its imports already. Jobs that
need a new program (Bash, a new interpreter) are forked and exec'd from here too when jobs are
contained, so each is in its container before it runs anything (see containment.py).
Single-threaded: one selector over the runner's socket and a self-pipe for SIGCHLD.

Each job writes its own ``process.log`` (see :data:`RUN_SCRIPT` and the ``log_*`` helpers),
so its start and its exit are on disk whether or not the runner lives to see them.

Protocol, one JSON object per line each way:
  runner -> server  {"op": "preload", "modules": [...], "probe", "exclude"}
                    {"op": "start", "id", "dir", "script" | "argv", "env" | "env_add",
                     "attempt", "check", "learn"}
                    {"op": "kill", "pid", "sig"}
  server -> runner  {"op": "ready", "pid", "containment", "why"}
                    {"op": "preloaded", "failed": {module: why}, "tainted"}
                    {"op": "started", "id", "pid", "t"} | {"op": "refused", "id", "why", "vanished"}
                    {"op": "exit", "pid", "status", "contained", "left", "imports"}
                    {"op": "note", "text"}

A job started with ``learn`` says, as it ends, which top-level modules of the standard library
and of site-packages it imported that the server had not (one line on a pipe to the server,
``PID NAME...``); the server adds them to the job's ``exit`` message. ``preload`` with
``probe`` imports each module on its own and checks that the server is still fit to fork:
a module that fails, lives outside the standard library, site-packages and PYTHONPATH (or in
an ``exclude`` folder), or leaves a new descriptor or a thread behind (one its own fork
handlers do not stop, as OpenBLAS's do), or changes the environment, is refused with why;
the last three taint the server (``tainted``: that module), which the runner then replaces.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

PROCESS_LOG = "process.log"
#: Bytes of a job's report of its imports at most: one atomic write to a pipe (PIPE_BUF).
_REPORT_MAX = 4096
#: Seconds the server keeps trying to remove a job's cgroup whose leftovers it killed.
_REMOVE_FOR = 10.0

#: Runs a script as ``python script.py`` would, and returns its exit code rather than
#: exiting. One source, used by the fork server's children and, through ``python -c``, by
#: spawned Python jobs (whose interpreter may not have meow_async installed).
RUN_SCRIPT = r"""
def _meow_run_script(path, code=None):
    import sys
    main = type(sys)("__main__")  # a fresh __main__, as the interpreter makes for a script
    main.__file__ = path
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    try:
        if code is None:
            with open(path, "rb") as f:
                code = compile(f.read(), path, "exec")
        exec(code, main.__dict__)
    except SystemExit as e:
        code = e.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    except BaseException as e:
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != path:
            tb = tb.tb_next  # our own frames: a script run by `python script.py` has none
        e.__traceback__ = tb or e.__traceback__  # what the hook prints (not its argument)
        sys.excepthook(type(e), e, e.__traceback__)
        return 130 if isinstance(e, KeyboardInterrupt) else 1
    return 0


def _meow_finish():
    # As the interpreter ends: wait for non-daemon threads, then atexit, then flush.
    import atexit, sys
    threading = sys.modules.get("threading")
    if threading is not None:
        threading._shutdown()
    atexit._run_exitfuncs()
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:
            pass
"""

#: The script's code object as the runner compiled it (model/precompiled.py: hex of magic
#: number, source hash, marshalled code, in $MEOW_BOOT_CODE), if it is this interpreter's
#: bytecode of the file as it is now: a fresh interpreter's first compile() costs 1-5 ms.
PRECOMPILED = r"""
def _meow_precompiled(path):
    import os, sys, marshal, _imp
    payload = os.environ.pop("MEOW_BOOT_CODE", None)  # not for the job's own children
    if not payload or sys.flags.optimize:
        return None
    try:
        data = bytes.fromhex(payload)
        ext = sys.modules["_frozen_importlib_external"]
        if data[:4] != ext.MAGIC_NUMBER:
            return None
        with open(path, "rb") as f:
            if data[4:12] != _imp.source_hash(ext._RAW_MAGIC_NUMBER, f.read()):
                return None  # changed since the runner compiled it
        code = marshal.loads(data[12:])
        _imp._fix_co_filename(code, path)  # as run from here (a link, a moved folder)
        return code
    except Exception:
        return None
"""

#: ``python -c SPAWN_BOOT script.py``: a spawned Python job that records its own exit (in
#: the file named by $MEOW_PROCESS_LOG, set by the conductor) once it has ended as the
#: interpreter would end it.
SPAWN_BOOT = (
    RUN_SCRIPT
    + PRECOMPILED
    + r"""
import os as _os, sys as _sys, time as _time
_path = _os.path.abspath(_sys.argv[1])
_sys.argv = _sys.argv[1:]
_sys.path[0] = _os.path.dirname(_path)
_me = _os.getpid()
_code = _meow_run_script(_path, _meow_precompiled(_path))
_meow_finish()
if _os.getpid() == _me:  # a fork of the job's (os.fork() in the script) ends here too
    try:
        _fd = _os.open(_os.environ["MEOW_PROCESS_LOG"], _os.O_WRONLY | _os.O_APPEND)
        _os.write(_fd, ("exit %d %.6f\n" % (_code & 0xFF, _time.time())).encode())
        _os.close(_fd)
    except (OSError, KeyError):
        pass
_sys.exit(_code)
"""
)

_namespace: dict[str, Any] = {}
exec(compile(RUN_SCRIPT, "<meow_async>", "exec"), _namespace)  # noqa: S102 - our own constant


def log_line(fd: int, *fields: object) -> None:
    """One ``process.log`` line: a single append, so lines never interleave."""
    os.write(fd, (" ".join(str(f) for f in fields) + "\n").encode())


def start_time_of(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), to tell it from a reuse."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[19]) if len(fields) > 19 else None


class Server:
    def __init__(self, sock: socket.socket, contain: Containment | None = None) -> None:
        self.sock = sock
        self.contain = contain or Containment(None, "none", "")
        self.children: dict[int, str | None] = {}  # job pid -> its cgroup (None: none)
        self.started = 0
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd does the work
        # Ctrl+C in the runner's terminal reaches its whole process group, this server too.
        # The runner decides what a stop does to running jobs (graceful first); the server
        # ends when the runner closes its end. Jobs get the default handler back (run_job).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # A closed terminal hangs up the whole group too: the runner logs and ignores it.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.selector = selectors.DefaultSelector()
        self.selector.register(sock, selectors.EVENT_READ, "runner")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "child")
        self.buf = b""
        # Jobs' reports of what they imported (see report_imports); read before each reap.
        self.report_r, self.report_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.report_buf = b""
        self.reports: dict[int, list[str]] = {}
        self.known: frozenset[str] = frozenset()
        self.roots: tuple[str, ...] = ()

    def send(self, msg: dict[str, Any]) -> None:
        self.sock.sendall((json.dumps(msg) + "\n").encode())

    def serve(self) -> None:
        # Objects that exist now are never collected in a child: a collection there would
        # touch (and so copy) every page they live on. About 1 ms less CPU per job.
        gc.freeze()
        self.known = frozenset(sys.modules)
        self.roots = _roots()
        c = self.contain
        self.send({"op": "ready", "pid": os.getpid(), "containment": c.mode, "why": c.why})
        try:
            while True:
                timeout = 0.05 if c.removing else None
                for key, _ in self.selector.select(timeout):
                    if key.data == "child":
                        self.reap()
                    elif not self.read():
                        return  # the runner closed its end
                if c.removing:
                    self.notes(c.retry_removals())
        finally:
            # Running jobs go on (the runner has stopped them, or a restart settles them);
            # what ended jobs left behind does not.
            self.notes(c.finish(self.children))

    def notes(self, texts: list[str]) -> None:
        for text in texts:
            with contextlib.suppress(OSError):
                self.send({"op": "note", "text": text})

    def read(self) -> bool:
        try:
            data = self.sock.recv(1 << 16)
        except InterruptedError:
            return True
        if not data:
            return False
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            msg = json.loads(line)
            getattr(self, "op_" + msg["op"])(msg)
        return True

    def read_reports(self) -> None:
        """What ended jobs said they imported: each wrote before it exited, so before the
        reap that finds it gone."""
        data = b""
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while chunk := os.read(self.report_r, 1 << 16):
                data += chunk
        *lines, self.report_buf = (self.report_buf + data).split(b"\n")
        for line in lines:
            pid, _, names = line.decode(errors="replace").partition(" ")
            if pid.isdigit() and int(pid) in self.children:
                self.reports[int(pid)] = [n for n in names.split() if n.isidentifier()]

    def reap(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        self.read_reports()
        ended: list[dict[str, Any]] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid not in self.children:
                continue  # a process a job left behind, re-parented to us and killed
            contained, left = self.contain.ended(self.children.pop(pid))
            msg = {"op": "exit", "pid": pid, "status": status, "contained": contained}
            if left:
                msg["left"] = left
            imports = self.reports.pop(pid, None)
            if imports:
                msg["imports"] = imports
            ended.append(msg)
        if self.contain.mode == "subreaper":
            # What the jobs that ended left is ours now (a running job's orphans are its
            # own children): killed, and counted for the job if only one ended.
            left = self.contain.kill_orphans(self.children)
            if left and len(ended) == 1:
                ended[0]["left"] = left
            elif left and ended:
                self.notes([f"{left} process(es) left running by {len(ended)} jobs: killed"])
        for msg in ended:
            self.send(msg)

    def op_preload(self, msg: dict[str, Any]) -> None:
        failed: dict[str, str] = {}
        tainted = None
        exclude = tuple(os.path.join(os.path.abspath(d), "") for d in msg.get("exclude", ()))
        for name in msg["modules"]:
            if msg.get("probe"):
                why, tainted = _probe(name, self.roots, exclude)
                if why:
                    failed[name] = why
                if tainted:
                    break  # this server is unfit to fork: the runner starts another
                continue
            try:
                __import__(name)
            except BaseException as e:
                failed[name] = f"{type(e).__name__}: {e}"
        gc.freeze()  # see serve()
        self.known = frozenset(sys.modules)
        self.send({"op": "preloaded", "failed": failed, "tainted": tainted})

    def op_kill(self, msg: dict[str, Any]) -> None:
        pid, sig = msg["pid"], msg["sig"]
        if pid in self.children:  # not reaped yet, so the number is still the job's
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
            self.contain.signal(pid, self.children[pid], sig)

    def op_start(self, msg: dict[str, Any]) -> None:
        job_id, job_dir = msg["id"], msg["dir"]
        check = msg.get("check")
        if check and not os.path.exists(check):
            why = f"the triggering file {check} vanished before the job started"
            self.send({"op": "refused", "id": job_id, "why": why, "vanished": True})
            return
        try:
            fd = os.open(
                os.path.join(job_dir, PROCESS_LOG),
                os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                0o666,
            )
        except OSError as e:
            self.send({"op": "refused", "id": job_id, "why": f"cannot start: {e}"})
            return
        pid = -1
        try:
            now = time.time()
            # The intent, before any process exists; the child adds its pid, then its exit.
            mode = "spawn" if "argv" in msg else "fork"
            log_line(fd, "start", msg["attempt"], f"{now:.6f}", mode)
            for f in (sys.stdout, sys.stderr):
                f.flush()
            cgroup = self.contain.cgroup_for(job_id, f"{os.getpid()}-{self.started}")
            self.started += 1
            if "argv" in msg and cgroup is not None:
                # A new program needs none of this interpreter: spawned (vfork, so no copy of
                # our memory), through a shell that joins the job's cgroup and execs it.
                pid = _spawn_into(cgroup, msg, fd)
                self.children[pid] = cgroup
            else:
                pid = os.fork()
                if pid == 0:
                    self.child(fd, msg)  # never returns
                self.children[pid] = self.contain.cgroup_for(job_id, pid)
        except OSError as e:
            self.send({"op": "refused", "id": job_id, "why": f"cannot start: {e}"})
            return
        finally:
            if pid != 0:
                os.close(fd)
        self.send({"op": "started", "id": job_id, "pid": pid, "t": now})

    def child(self, fd: int, msg: dict[str, Any]) -> None:
        code = 1
        try:
            os.setsid()  # its own session and process group, as a spawned job's
            pid = os.getpid()
            # In its container before it runs anything (or starts anything that could leave).
            cgroup, why = self.contain.enter(msg["id"], pid)
            fields: list[object] = ["pid", pid, start_time_of(pid), f"{time.time():.6f}"]
            log_line(fd, *fields, *([cgroup] if cgroup else []))
            try:
                code = self.run_job(msg, fd, why)
            except BaseException as e:
                with contextlib.suppress(OSError):
                    os.write(2, f"meow_async: could not start the job: {e!r}\n".encode())
            # Only the job's own process records its exit: a child the script forked
            # (os.fork()) that ends its copy of the script returns here too.
            if os.getpid() == pid:
                with contextlib.suppress(OSError):
                    log_line(fd, "exit", code & 0xFF, f"{time.time():.6f}")
        finally:
            os._exit(code & 0xFF)

    def run_job(self, msg: dict[str, Any], log: int, why: str = "") -> int:
        """In the child: become the job's process and run its script, returning its exit
        code, or exec its program (``argv``), holding ``log`` (process.log) open."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self.selector.close()
        self.sock.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        os.close(self.report_r)
        if not msg.get("learn") or "argv" in msg:
            os.close(self.report_w)
        os.chdir(msg["dir"])
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open("stdout.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        err = os.open("stderr.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        for src, dst in ((null, 0), (out, 1), (err, 2)):
            os.dup2(src, dst)
            os.close(src)
        if why:
            os.write(2, f"meow_async: this job runs uncontained: {why}\n".encode())
        if "env" in msg:
            _set_environ(msg["env"])  # the runner's environment changed since we started
        else:
            os.environ.update(msg["env_add"])
        if "argv" in msg:
            _exec(msg["argv"], log)  # never returns
        script = msg["script"]
        sys.argv = [script]
        sys.path.insert(0, msg["dir"])  # as `python script.py` puts its folder first
        _reseed()
        me = os.getpid()
        code: int = _namespace["_meow_run_script"](script)
        _namespace["_meow_finish"]()
        if msg.get("learn") and os.getpid() == me:
            self.report_imports(me, msg["dir"])
        return code

    def report_imports(self, pid: int, job_dir: str) -> None:
        """In the job's process, as it ends: the top-level modules it imported that the
        server had not, from the standard library, site-packages or PYTHONPATH (see _roots)
        but not from the job's folder, to the server."""
        with contextlib.suppress(Exception):
            mine = os.path.join(os.path.abspath(job_dir), "")
            names = []
            for name, module in list(sys.modules.items()):
                # Private modules (_decimal) come with the public ones that import them.
                if "." in name or name.startswith("_") or name in self.known:
                    continue
                path = getattr(module, "__file__", None)
                if not isinstance(path, str) or path.startswith(mine):
                    continue
                if _under(path, self.roots):
                    names.append(name)
            line = str(pid).encode()
            for name in sorted(names):
                more = b" " + name.encode()
                if len(line) + len(more) >= _REPORT_MAX:
                    break  # one write, so that reports of jobs ending together never mix
                line += more
            if names:
                os.write(self.report_w, line + b"\n")


#: ``sh -c JOIN sh CGROUP PWD ARGV...``: joins the cgroup (before the program runs anything),
#: gives PWD back as the job was given it (the shell sets its own; "-": it had none), execs.
_JOIN = (
    'echo 0 2>/dev/null > "$1/cgroup.procs" || '
    '{ echo "meow_async: could not join the cgroup $1" >&2; exit 126; }\n'
    "case $2 in -) unset PWD;; *) PWD=${2#=};; esac\n"
    "shift 2\n"
    'exec "$@"\n'
)
_SHELL = "/bin/sh"
_ALL_SIGNALS = frozenset(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}


def _spawn_into(cgroup: str, msg: dict[str, Any], log: int) -> int:
    """The job's program, spawned with ``posix_spawn`` into ``cgroup`` (made here) in its
    folder, its own session, every signal at its default, stdout/stderr in files, and only
    ``process.log`` open besides (held for its life); its pid line written."""
    _lib().make_cgroup(cgroup)
    env = msg["env"] if "env" in msg else {**os.environ, **msg["env_add"]}
    pwd = env.get("PWD")
    argv = [_SHELL, "-c", _JOIN, "sh", cgroup, "-" if pwd is None else "=" + pwd, *msg["argv"]]
    held = os.dup(log)
    os.set_inheritable(held, True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    actions: list[tuple[Any, ...]] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, "stdout.txt", flags, 0o666),
        (os.POSIX_SPAWN_OPEN, 2, "stderr.txt", flags, 0o666),
    ]
    # Whatever else of ours a child would inherit (a preloaded C library's descriptor).
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable() if fd > 2 and fd != held]
    here = os.getcwd()
    os.chdir(msg["dir"])  # posix_spawn has no chdir: the child starts where we are
    try:
        pid = os.posix_spawn(
            _SHELL,
            argv,
            env,
            file_actions=actions,
            setsid=True,
            setsigdef=_ALL_SIGNALS,
            setsigmask=(),
        )
    finally:
        os.chdir(here)
        os.close(held)
    log_line(log, "pid", pid, start_time_of(pid), f"{time.time():.6f}", cgroup)
    return pid


def _roots() -> tuple[str, ...]:
    """Where learned modules may come from, as prefixes: the standard library, site-packages
    and PYTHONPATH's folders. Not a folder a ``.pth`` file put on the import path (an editable
    install: sources that their owner edits while the runner runs)."""
    import site

    found = [os.path.dirname(os.__file__), *site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        found.append(site.getusersitepackages())
    found += os.environ.get("PYTHONPATH", "").split(os.pathsep)
    roots = {os.path.join(os.path.abspath(p), "") for p in found if p and os.path.isdir(p)}
    return tuple(sorted(roots))


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path.startswith(r) for r in roots)


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _fds() -> set[str]:
    try:
        return set(os.listdir("/proc/self/fd"))
    except OSError:
        return set()


def _stopped_at_fork(threads: int) -> bool:
    """Whether the threads an import started are stopped by its own fork handlers, as
    OpenBLAS's (numpy's) are: one test fork, then count again. Such a module is as safe to
    fork as one that started none (its threads start again when it next needs them)."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return _threads() <= threads


def _probe(name: str, roots: tuple[str, ...], exclude: tuple[str, ...]) -> tuple[str, str | None]:
    """Import the learned module ``name`` if it is fit to be held by a server that forks:
    why not (empty: imported), and ``name`` again if importing it left this process unfit."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)  # where it is, without running it
    except BaseException as e:
        return f"cannot be found: {type(e).__name__}: {e}", None
    origin = spec.origin if spec is not None else None
    if origin in ("frozen", "built-in"):
        pass  # the standard library's, in the interpreter itself
    elif spec is None or not isinstance(origin, str) or not os.path.isabs(origin):
        return "not a module of the standard library or site-packages", None
    elif not _under(origin, roots) or _under(origin, exclude):
        where = os.path.dirname(origin)
        return f"lives in {where}, not the standard library, site-packages or PYTHONPATH", None
    threads, fds, env = _threads(), _fds(), dict(os.environ)
    failed = ""
    try:
        __import__(name)
    except BaseException as e:
        failed = f"failed to import: {type(e).__name__}: {e}"
    # Even one that failed may have left what makes this server unfit to fork.
    if _threads() > threads and not _stopped_at_fork(threads):
        return "started a thread at import", name
    opened = _fds() - fds
    if opened:
        return f"opened {len(opened)} file descriptor(s) at import", name
    # Jobs take the server's environment plus their own variables: it must stay the runner's.
    changed = sorted(k for k in env.keys() | os.environ.keys() if env.get(k) != os.environ.get(k))
    if changed:
        return f"changed the environment at import ({', '.join(changed[:5])})", name
    return failed, None


def _inheritable() -> list[int]:
    out = []
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            with contextlib.suppress(OSError):
                if os.get_inheritable(fd):
                    out.append(fd)
    return out


def _exec(argv: list[str], log: int) -> None:
    """Become ``argv`` as a spawned job does: the signals the server or Python ignore back to
    their defaults (as Popen's ``restore_signals`` does: ``yes | head`` needs SIGPIPE), no
    descriptor but 0-2 and ``process.log`` (held for the process's life)."""
    for sig in (signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    os.set_inheritable(log, True)
    os.closerange(3, log)
    os.closerange(log + 1, os.sysconf("SC_OPEN_MAX"))
    try:
        os.execve(argv[0], argv, os.environ)  # noqa: S606 - the job's own program
    except OSError as e:
        os.write(2, f"meow_async: could not start {argv[0]}: {e.strerror or e}\n".encode())
        os._exit(127)


class Containment:
    """How this server contains its jobs: ``cgroup``, ``subreaper`` or ``none`` (see
    containment.py), and the work that takes around each job."""

    def __init__(self, cgroups: Any, mode: str, why: str) -> None:
        self.cgroups = cgroups
        self.mode = mode
        self.why = why  # why not a cgroup (or not contained at all)
        self.removing: dict[str, float] = {}  # cgroups killed, removed once empty: deadline

    @classmethod
    def choose(cls, want: str, runner_pid: int) -> Containment:
        if want == "none" or not sys.platform.startswith("linux"):
            return cls(None, "none", "" if want == "none" else "not Linux")
        why = ""
        if want in ("auto", "cgroup"):
            try:
                cgroups = _lib().Cgroups.make(runner_pid)
            except OSError as e:
                why = f"no cgroup: {e.strerror or e}"
                if want == "cgroup":
                    return cls(None, "none", why)
            else:
                # Also a subreaper: what the jobs orphan is reaped here, whatever init does.
                _lib().become_subreaper()
                return cls(cgroups, "cgroup", "")
        if _lib().become_subreaper():
            return cls(None, "subreaper", why)
        return cls(None, "none", (why + "; " if why else "") + "prctl failed")

    def cgroup_for(self, job_id: str, tag: object) -> str | None:
        return self.cgroups.path(job_id, tag) if self.cgroups is not None else None

    def enter(self, job_id: str, pid: int) -> tuple[str | None, str]:
        """In the job's process: into its container. Its cgroup (if any), and what failed."""
        if self.mode == "subreaper":
            return None, "" if _lib().become_subreaper() else "prctl failed"
        path = self.cgroup_for(job_id, pid)
        if path is None:
            return None, ""
        try:
            _lib().join(path)
        except OSError as e:
            return None, f"could not join the cgroup {path}: {e.strerror or e}"
        return path, ""

    def signal(self, pid: int, cgroup: str | None, sig: int) -> None:
        """A stop of the job reaches all it started: its group has had the signal, and so
        now do the processes that left the group (all of them at once for SIGKILL)."""
        lib = _lib()
        if cgroup is not None:
            if sig == signal.SIGKILL:
                lib.kill_cgroup(cgroup)
            else:
                lib.signal_outside(lib.procs(cgroup), pid, sig)
        elif self.mode == "subreaper":
            lib.signal_outside(lib.tree(pid), pid, sig)

    def ended(self, cgroup: str | None) -> tuple[str, int]:
        """A job's process was reaped: kill what it left in its cgroup. How it was contained,
        and how many processes it left running (subreaper: see kill_orphans)."""
        if cgroup is None:
            return self.mode if self.mode == "subreaper" else "none", 0
        lib = _lib()
        if not os.path.isdir(cgroup):
            return "none", 0  # its process never made it (it said why in its stderr)
        try:
            if lib.remove_cgroup(cgroup):
                return "cgroup", 0
        except OSError:
            pass
        left = lib.kill_cgroup(cgroup)
        self.removing[cgroup] = time.monotonic() + _REMOVE_FOR
        return "cgroup", left

    def kill_orphans(self, jobs: dict[int, str | None]) -> int:
        """Subreaper: our children that are not jobs were left behind by a job that ended
        (a running job's orphans are its own children): killed with all below them."""
        if self.mode != "subreaper":
            return 0
        lib = _lib()
        orphans = [p for p in lib.children(os.getpid()) if p not in jobs]
        return lib.kill_tree(orphans) if orphans else 0

    def retry_removals(self) -> list[str]:
        notes = []
        now = time.monotonic()
        for path, deadline in list(self.removing.items()):
            try:
                gone = _lib().remove_cgroup(path)
            except OSError as e:
                gone, why = True, f"could not remove the cgroup {path}: {e.strerror or e}"
                notes.append(why)
            if gone:
                del self.removing[path]
            elif now > deadline:
                del self.removing[path]
                notes.append(f"the cgroup {path} still holds processes after SIGKILL")
        return notes

    def finish(self, jobs: dict[int, str | None]) -> list[str]:
        """At the server's end: what ended jobs left is gone before it exits."""
        self.kill_orphans(jobs)
        deadline = time.monotonic() + 2.0
        notes: list[str] = []
        while self.removing and time.monotonic() < deadline:
            notes += self.retry_removals()
            time.sleep(0.01)
        if self.cgroups is not None:
            self.cgroups.close()  # if no running job's cgroup is left in it
        return notes


_containment: ModuleType | None = None


def _lib() -> ModuleType:
    """containment.py: imported as part of meow_async in the runner; in the fork server (a
    script), loaded by its path under a name no job's module can have."""
    global _containment  # loaded once, on first use
    if _containment is None:
        if __package__:
            from . import containment

            _containment = containment
        else:
            import importlib.util

            path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "containment.py")
            spec = importlib.util.spec_from_file_location("_meow_async_containment", path)
            assert spec is not None  # noqa: S101 - our own file
            assert spec.loader is not None  # noqa: S101
            _containment = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(_containment)
    return _containment


def _set_environ(env: dict[str, str]) -> None:
    """Make the environment ``env``, changing only what differs (each change is a putenv)."""
    current = os.environ
    for key in [k for k in current if k not in env]:
        del current[key]
    for key, value in env.items():
        if current.get(key) != value:
            current[key] = value


def _reseed() -> None:
    """Forked children share their parent's random state: numpy's global generator would
    give every job the same numbers. (``random`` reseeds itself at fork.)"""
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()


def die_with(parent: int, code: int = 0) -> Callable[[], None]:
    """A call that makes Linux kill the calling process when the thread that started it ends
    (exiting with ``code`` at once if ``parent`` is already gone). prctl is looked up here, so
    in a child between fork and exec the call is all that runs."""
    try:
        import ctypes

        prctl: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        prctl = None

    def ask() -> None:
        if prctl is not None:
            prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # it died before prctl took effect
            os._exit(code)

    return ask


def main() -> None:
    fd, parent = int(sys.argv[1]), int(sys.argv[2])
    want = sys.argv[3] if len(sys.argv) > 3 else "none"
    die_with(parent)()
    del sys.path[0]  # our own folder: its module names must not shadow the jobs'
    os.set_inheritable(fd, False)  # passed to us; no job of ours may have it
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    # Broken: the runner closed its end while we started (it stopped meanwhile).
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        Server(sock, Containment.choose(want, parent)).serve()


if __name__ == "__main__":
    main()
