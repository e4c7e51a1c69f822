"""A notebook job's process: ``python notebook_job.py NOTEBOOK [--kernel NAME]`` in the job folder.

Runs as a plain script (not ``-m``), so a spawned job records its own exit like any Python
job; it imports papermill, not meow_async. The executed notebook is saved to ``output.ipynb``
after every cell, so a job stopped half-way keeps what it did. A failing cell is reported as
the last line of stderr (which becomes the job's ``error``) and in ``notebook-error.json``.
"""

import sys

del sys.path[0]  # meow_async's own folder: its module names must not shadow anything

import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

OUTPUT = "output.ipynb"
ERROR_FILE = "notebook-error.json"
#: The kernel's Unix sockets' folder, removed however the job ends.
_SOCKETS: list[str] = []


def _kernels() -> list[int]:
    """Our child processes: the kernel runs in its own session, so a stop of the job's process
    group does not reach it; we stop it ourselves."""
    me, found = os.getpid(), []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                found.append(int(entry.name))
    return found


def _on_term(signum: int, frame: Any) -> None:
    for pid in _kernels():
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    for folder in _SOCKETS:
        shutil.rmtree(folder, ignore_errors=True)
    os._exit(128 + signum)


def _kernel_and_language(notebook: str, kernel: str | None) -> tuple[str, str | None]:
    """The kernel to run it with: the one given, else the notebook's own, else python3; and for
    a notebook that names no language, the kernel's (papermill needs one for the parameters)."""
    with open(notebook, encoding="utf-8") as f:
        meta = _dict(json.load(f).get("metadata"))
    spec, info = _dict(meta.get("kernelspec")), _dict(meta.get("language_info"))
    kernel = kernel or spec.get("name") or "python3"
    if spec.get("language") or info.get("name"):
        return kernel, None  # papermill reads it from the notebook
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        return kernel, KernelSpecManager().get_kernel_spec(kernel).language
    except NoSuchKernel:
        return kernel, None  # papermill names the missing kernel


def _ipc_manager(kernel: str, folder: str) -> type | None:
    """A kernel manager that talks to an ipykernel over Unix sockets in ``folder`` (a short
    path: a socket's path is limited to about 100 bytes), not TCP on localhost. The kernel is
    always on this machine, so nothing is lost, and ipykernel's warning that TCP without
    encryption can be eavesdropped on, printed into every job's stderr, does not apply. None
    for a kernel that is no ipykernel (it may not speak IPC): it keeps TCP."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    from jupyter_client.manager import AsyncKernelManager

    try:
        argv = KernelSpecManager().get_kernel_spec(kernel).argv
    except NoSuchKernel:
        return None
    if not any("ipykernel" in part for part in argv):
        return None

    class IpcKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.transport = "ipc"
            self.ip = os.path.join(folder, "k")

    return IpcKernelManager


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


_OUTPUT_SCHEME = "meow-output:"


def _output_handler() -> Any:
    from papermill.iorw import LocalHandler  # type: ignore[import-untyped]

    class Output(LocalHandler):  # type: ignore[misc]
        """Writes ``output.ipynb`` with any lone surrogate (a file name that is not UTF-8, in
        the parameters papermill records) as JSON's own ``\\udcXX`` escape: valid UTF-8 that
        reads back as the same string, where papermill's writer fails."""

        def write(self, buf: str, path: str) -> None:
            with open(path.removeprefix(_OUTPUT_SCHEME), "wb") as f:
                f.write(buf.encode("utf-8", "backslashreplace"))

    return Output()


def main() -> int:
    args = sys.argv[1:]
    notebook = args[0]
    kernel = args[args.index("--kernel") + 1] if "--kernel" in args else None
    kernel, language = _kernel_and_language(notebook, kernel)
    signal.signal(signal.SIGTERM, _on_term)
    with open(os.environ.get("MEOW_PARAMS", "params.json"), encoding="utf-8") as f:
        parameters = json.load(f)
    import papermill  # type: ignore[import-untyped]
    from papermill.iorw import papermill_io

    papermill_io.register(_OUTPUT_SCHEME, _output_handler())
    sockets = tempfile.mkdtemp(prefix="meow-kernel-")
    _SOCKETS.append(sockets)
    manager = _ipc_manager(kernel, sockets)
    extra = {"kernel_manager_class": manager} if manager is not None else {}
    try:
        papermill.execute_notebook(
            notebook,
            _OUTPUT_SCHEME + OUTPUT,
            parameters=parameters,
            kernel_name=kernel,
            language=language,
            cwd=".",
            progress_bar=False,
            log_output=True,
            stdout_file=sys.stdout,
            stderr_file=sys.stderr,
            request_save_on_cell_execute=True,
            **extra,
        )
    except papermill.PapermillExecutionError as e:
        cell = {"cell": e.exec_count, "index": e.cell_index, "ename": e.ename, "evalue": e.evalue}
        Path(ERROR_FILE).write_text(json.dumps(cell) + "\n", encoding="utf-8")
        print(f"{e.ename}: {e.evalue} (cell {e.exec_count})", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
