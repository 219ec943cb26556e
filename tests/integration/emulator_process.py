"""`streamer-emulator` as a real subprocess for tests: start it, read its banner,
send it signals, and keep every line it prints (for the no-warnings checks)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.client import connect

__all__ = ["BAD_OUTPUT", "EmulatorProcess", "bad_lines", "run_emulator"]

START_TIMEOUT_S = 60.0
"""The machine may be loaded: a start takes a few seconds there."""

BAD_OUTPUT = re.compile(
    r"Traceback|Task was destroyed|Unclosed|didn't stop after athrow|"
    r"was never awaited|Exception ignored|RuntimeWarning|ResourceWarning|"
    r"Event loop is closed|coroutine .* was never|KeyboardInterrupt"
)
"""What no shutdown path may print."""


def bad_lines(lines: list[str]) -> list[str]:
    """The lines that should never appear in the emulator's output."""
    return [line for line in lines if BAD_OUTPUT.search(line)]


@dataclass
class EmulatorProcess:
    """A running `python -m emulator`, its URLs and dev token (from the banner)."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    ws_url: str = ""
    http_url: str = ""
    token: str = ""
    _banner_done: asyncio.Event = field(default_factory=asyncio.Event)
    _new_line: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    def connect(self) -> connect:
        """A WebSocket to the emulator with the banner's dev token."""
        return connect(f"{self.ws_url}?Authorization={self.token}", open_timeout=30)

    def signal(self, signum: int = signal.SIGINT) -> None:
        """Send a signal to the process."""
        self.process.send_signal(signum)

    async def wait_line(self, pattern: str, timeout_s: float = START_TIMEOUT_S) -> str:
        """The first printed line (so far or to come) matching `pattern`."""
        compiled = re.compile(pattern)
        async with asyncio.timeout(timeout_s):
            while True:
                self._new_line.clear()
                for line in self.lines:
                    if compiled.search(line):
                        return line
                if self._reader is None or self._reader.done():
                    raise AssertionError(f"the emulator ended without printing {pattern!r}")
                await self._new_line.wait()

    async def wait_exit(self, timeout_s: float) -> int:
        """The exit status, once the process has ended and its output is read."""
        try:
            async with asyncio.timeout(timeout_s):
                status = await self.process.wait()
                if self._reader is not None:
                    await self._reader
        except TimeoutError:
            shown = "\n".join(self.lines[-30:])
            message = f"still running after {timeout_s} s; it printed:\n{shown}"
            raise AssertionError(message) from None
        return status

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            self._new_line.set()
            if not self.ws_url and (found := re.search(r"WebSocket API\s+(ws://\S+)", line)):
                self.ws_url = found.group(1)
            if not self.http_url and (found := re.search(r"HTTP\s+(http://\S+)", line)):
                self.http_url = found.group(1)
            if not self.token and (found := re.search(r"Authorization=([\w.-]+)\"", line)):
                self.token = found.group(1)
            if "Ctrl-C stops" in line:
                self._banner_done.set()
        self._new_line.set()


@contextlib.asynccontextmanager
async def run_emulator(
    state_dir: Path, *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> AsyncIterator[EmulatorProcess]:
    """Start the emulator on free ports with this state folder; yields once its
    banner is printed; kills it at the end if it is still running."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("JWT_PUBLIC_KEY", "JWT_JWKS_URL", "DYNAMODB_ENDPOINT_URL", "STREAMER_APP")
    }
    environment |= {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PYTHONUNBUFFERED": "1",
    } | dict(env or {})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "emulator",
        "--port",
        "0",
        "--http-port",
        "0",
        "--state-dir",
        str(state_dir),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=environment,
        cwd=cwd,
    )
    running = EmulatorProcess(process=process)
    running._reader = asyncio.create_task(running._read())
    try:
        banner = asyncio.ensure_future(running._banner_done.wait())
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await asyncio.wait([banner, running._reader], return_when=asyncio.FIRST_COMPLETED)
        finally:
            banner.cancel()
        if not running._banner_done.is_set():
            raise AssertionError("the emulator did not start:\n" + "\n".join(running.lines))
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        with contextlib.suppress(Exception):
            await running._reader
