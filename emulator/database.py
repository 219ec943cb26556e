"""The embedded DynamoDB: the local moto server (`adapters.moto_server`) in a child
process, so its CPU is not the emulator's event loop's (they shared one GIL).

The child runs in a session of its own, so the Ctrl-C meant for the emulator does
not stop the database that its graceful shutdown still saves through; it exits
when its standard input closes: at `stop`, or when the emulator dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

__all__ = ["EmbeddedDynamoDB"]

_BANNER = "DynamoDB "
_STOP_TIMEOUT_S = 5.0


class EmbeddedDynamoDB:
    """A running child moto server; `endpoint` is its URL."""

    def __init__(self, process: asyncio.subprocess.Process, endpoint: str) -> None:
        self._process = process
        self.endpoint = endpoint

    @classmethod
    async def start(cls, *, host: str = "127.0.0.1", timeout_s: float = 60.0) -> EmbeddedDynamoDB:
        """Start the child on a free port and wait for its banner.

        Raises:
            RuntimeError: it exited or printed no endpoint within `timeout_s`.
        """
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "adapters.moto_server",
            "--host",
            host,
            "--port",
            "0",
            "--until-stdin-closes",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert process.stdout is not None
        try:
            async with asyncio.timeout(timeout_s):
                line = (await process.stdout.readline()).decode(errors="replace").strip()
        except TimeoutError:
            line = ""
        if not line.startswith(_BANNER):
            await _finish(process)
            why = line or (
                f"it exited with code {process.returncode}"
                if process.returncode
                else f"no endpoint within {timeout_s:.0f} s"
            )
            raise RuntimeError(
                f"no DynamoDB endpoint given and the embedded moto server did not start ({why}): "
                "set DYNAMODB_ENDPOINT_URL (--dynamodb-endpoint) or install 'moto[server]' "
                "(pip install '.[local]')"
            )
        return cls(process, line.removeprefix(_BANNER))

    async def stop(self) -> None:
        """Close its standard input and wait for it to exit (idempotent)."""
        await _finish(self._process)


async def _finish(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    if process.stdin is not None:
        process.stdin.close()
    try:
        async with asyncio.timeout(_STOP_TIMEOUT_S):
            await process.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
