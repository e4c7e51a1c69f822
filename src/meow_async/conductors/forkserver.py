"""The fork server: a warm Python interpreter that forks one child per job.

Runs as its own process (``python forkserver.py FD RUNNER_PID``), started by the runner. It
imports only the standard library, then whatever the recipes ask to ``preload``, so a job's
process starts as a fork of an interpreter that has done its imports already. Single-threaded:
one selector over the runner's socket and a self-pipe for SIGCHLD.

Each job writes its own ``process.log`` (see :data:`RUN_SCRIPT` and the ``log_*`` helpers),
so its start and its exit are on disk whether or not the runner lives to see them.

Protocol, one JSON object per line each way:
  runner -> server  {"op": "preload", "modules": [...]}
                    {"op": "start", "id", "dir", "script", "env" | "env_add", "attempt",
                     "check"}
                    {"op": "kill", "pid", "sig"}
  server -> runner  {"op": "ready"} | {"op": "preloaded", "failed": {module: why}}
                    {"op": "started", "id", "pid", "t"} | {"op": "refused", "id", "why", "vanished"}
                    {"op": "exit", "pid", "status"}
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
from typing import Any

PROCESS_LOG = "process.log"

#: Runs a script as ``python script.py`` would, and returns its exit code rather than
#: exiting. One source, used by the fork server's children and, through ``python -c``, by
#: spawned Python jobs (whose interpreter may not have meow_async installed).
RUN_SCRIPT = r"""
def _meow_run_script(path):
    import sys
    main = type(sys)("__main__")  # a fresh __main__, as the interpreter makes for a script
    main.__file__ = path
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    try:
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

#: ``python -c SPAWN_BOOT script.py``: a spawned Python job that records its own exit (in
#: the file named by $MEOW_PROCESS_LOG, set by the conductor) once it has ended as the
#: interpreter would end it.
SPAWN_BOOT = (
    RUN_SCRIPT
    + r"""
import os as _os, sys as _sys, time as _time
_path = _os.path.abspath(_sys.argv[1])
_sys.argv = _sys.argv[1:]
_sys.path[0] = _os.path.dirname(_path)
_code = _meow_run_script(_path)
_meow_finish()
try:
    _fd = _os.open(_os.environ["MEOW_PROCESS_LOG"], _os.O_WRONLY | _os.O_APPEND | _os.O_CLOEXEC)
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
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.children: set[int] = set()
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

    def send(self, msg: dict[str, Any]) -> None:
        self.sock.sendall((json.dumps(msg) + "\n").encode())

    def serve(self) -> None:
        # Objects that exist now are never collected in a child: a collection there would
        # touch (and so copy) every page they live on. About 1 ms less CPU per job.
        gc.freeze()
        self.send({"op": "ready", "pid": os.getpid()})
        while True:
            for key, _ in self.selector.select():
                if key.data == "child":
                    self.reap()
                elif not self.read():
                    return  # the runner closed its end

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

    def reap(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.send({"op": "exit", "pid": pid, "status": status})

    def op_preload(self, msg: dict[str, Any]) -> None:
        failed = {}
        for name in msg["modules"]:
            try:
                __import__(name)
            except BaseException as e:
                failed[name] = f"{type(e).__name__}: {e}"
        gc.freeze()  # see serve()
        self.send({"op": "preloaded", "failed": failed})

    def op_kill(self, msg: dict[str, Any]) -> None:
        if msg["pid"] in self.children:  # not reaped yet, so the number is still the job's
            with contextlib.suppress(ProcessLookupError):
                os.killpg(msg["pid"], msg["sig"])

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
            log_line(fd, "start", msg["attempt"], f"{now:.6f}", "fork")
            for f in (sys.stdout, sys.stderr):
                f.flush()
            pid = os.fork()
            if pid == 0:
                self.child(fd, msg)  # never returns
            self.children.add(pid)
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
            log_line(fd, "pid", pid, start_time_of(pid), f"{time.time():.6f}")
            try:
                code = self.run_job(msg)
            except BaseException as e:
                with contextlib.suppress(OSError):
                    os.write(2, f"meow_async: could not start the job: {e!r}\n".encode())
            with contextlib.suppress(OSError):
                log_line(fd, "exit", code & 0xFF, f"{time.time():.6f}")
        finally:
            os._exit(code & 0xFF)

    def run_job(self, msg: dict[str, Any]) -> int:
        """In the child: become the job's process, run its script, return its exit code."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self.selector.close()
        self.sock.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        job_dir, script = msg["dir"], msg["script"]
        os.chdir(job_dir)
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open("stdout.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        err = os.open("stderr.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        for src, dst in ((null, 0), (out, 1), (err, 2)):
            os.dup2(src, dst)
            os.close(src)
        if "env" in msg:
            _set_environ(msg["env"])  # the runner's environment changed since we started
        else:
            os.environ.update(msg["env_add"])
        sys.argv = [script]
        sys.path.insert(0, job_dir)  # as `python script.py` puts its folder first
        _reseed()
        code: int = _namespace["_meow_run_script"](script)
        _namespace["_meow_finish"]()
        return code


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
    die_with(parent)()
    del sys.path[0]  # our own folder: its module names must not shadow the jobs'
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    Server(sock).serve()


if __name__ == "__main__":
    main()
