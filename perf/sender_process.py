"""The parent's end of a separate sender process (``python -m perf.sender``)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Self

from .procs import ROOT, perf_argv, perf_env
from .sender import Plan, Sent, send_all


class SenderProcess:
    """One sender process, reused for every round; ``round`` sends one plan and waits."""

    name = "process"

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc

    @classmethod
    async def start(cls, loop: str = "uvloop") -> Self:
        proc = await asyncio.create_subprocess_exec(
            *perf_argv("sender", loop),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=perf_env(),
            cwd=ROOT,
            limit=1 << 26,  # the answer lists a time per message
        )
        return cls(proc)

    async def round(self, plan: Plan) -> Sent:
        stdin, stdout = self._proc.stdin, self._proc.stdout
        assert stdin is not None
        assert stdout is not None
        stdin.write((json.dumps(asdict(plan)) + "\n").encode())
        await stdin.drain()
        if (await stdout.readline()).strip() != b"ready":
            raise RuntimeError("the sender process did not get ready")
        stdin.write(b"go\n")
        await stdin.drain()
        line = await stdout.readline()
        if not line:
            raise RuntimeError("the sender process exited mid-round")
        return Sent.from_json(json.loads(line))

    async def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            async with asyncio.timeout(5):
                await self._proc.wait()
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()


class InProcessSender:
    """The report's variant: the senders are tasks on the measuring process's own loop."""

    name = "in-process"

    async def round(self, plan: Plan) -> Sent:
        return await send_all(plan)

    async def close(self) -> None:
        pass
