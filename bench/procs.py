"""The processes under test: start, wait until ready, measure memory, stop.

Every server runs in its own process (the bench driver is only a client), with
its output in a log file under `bench/.cache/logs/` so a full pipe never
blocks it.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "CACHE_DIR",
    "REPO",
    "ServerProcess",
    "free_port",
    "python_env",
    "raise_fd_limit",
    "start_echo_server",
    "start_emulator",
    "start_moto",
]

REPO = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO / "bench" / ".cache"
LOG_DIR = CACHE_DIR / "logs"
HOST = "127.0.0.1"


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    """A loopback TCP port free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child Python: the repo importable, dummy AWS credentials."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("AWS_ACCESS_KEY_ID", "testing")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    env.setdefault("AWS_REGION", env["AWS_DEFAULT_REGION"])
    env.pop("AWS_PROFILE", None)
    env.update(extra or {})
    return env


@dataclass
class ServerProcess:
    """A server under test running in its own process.

    Args:
        name: a label for logs and errors.
        popen: the child.
        ws_url: its WebSocket URL.
        http_url: its HTTP side, when it has one.
        log_path: where its output goes.
    """

    name: str
    popen: subprocess.Popen[bytes]
    ws_url: str
    log_path: Path
    http_url: str | None = None
    stop_timeout_s: float = 20.0
    """How long `stop` waits for a clean exit before SIGKILL."""
    _process: psutil.Process | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss_bytes(self) -> int:
        """Resident memory of the server and any children it started."""
        total = self._psutil().memory_info().rss
        for child in self._psutil().children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU time so far: (the main thread, the whole process with its children).

        The main thread runs the event loop; the rest is other threads (an
        embedded moto server, worker threads) and child processes.
        """
        process = self._psutil()
        main = next(
            (t.user_time + t.system_time for t in process.threads() if t.id == self.pid),
            0.0,
        )
        times = process.cpu_times()
        return main, times.user + times.system + self.children_cpu_seconds()

    def children_cpu_seconds(self) -> float:
        """CPU time so far of the child processes alone (the emulator's embedded moto),
        the ones that exited included."""
        times = self._psutil().cpu_times()
        total = times.children_user + times.children_system
        for child in self._psutil().children(recursive=True):
            try:
                child_times = child.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += child_times.user + child_times.system
        return total

    def _psutil(self) -> psutil.Process:
        if self._process is None:
            self._process = psutil.Process(self.popen.pid)
        return self._process

    async def quiet(
        self, *, window_s: float = 0.05, below_s: float = 0.002, timeout_s: float = 10.0
    ) -> None:
        """Return once the process, children included, used under `below_s` of CPU in
        a `window_s` window: what a round left behind (closing sockets, deleting
        their records) is done before the next round is timed. Raises TimeoutError
        after `timeout_s`."""
        async with asyncio.timeout(timeout_s):
            before = self.cpu_seconds()[1]
            while True:
                await asyncio.sleep(window_s)
                now = self.cpu_seconds()[1]
                if now - before < below_s:
                    return
                before = now

    def health(self) -> dict[str, Any]:
        """The emulator's `GET /health` body."""
        if self.http_url is None:
            raise RuntimeError(f"{self.name} has no HTTP side")
        with urllib.request.urlopen(f"{self.http_url}/health", timeout=10) as reply:
            body: dict[str, Any] = json.loads(reply.read())
            return body

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGINT (a clean shutdown, which lets a profiler write), then SIGKILL."""
        if self.popen.poll() is not None:
            return
        started = time.monotonic()
        self.popen.send_signal(signal.SIGINT)
        try:
            self.popen.wait(self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
        print(f"    {self.name} stopped in {time.monotonic() - started:.1f} s", flush=True)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spawn(name: str, argv: Sequence[str], env: Mapping[str, str]) -> tuple[Any, Path]:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{name}.log"
    log = log_path.open("wb")
    popen = subprocess.Popen(
        list(argv),
        cwd=REPO,
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    return popen, log_path


def _wait_until(ready: Any, proc: ServerProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(
                f"{proc.name} exited with {proc.popen.returncode} before it was ready:\n"
                f"{proc.log_tail()}"
            )
        if ready():
            return
        time.sleep(0.05)
    proc.stop()
    raise RuntimeError(f"{proc.name} not ready after {timeout_s:.0f} s:\n{proc.log_tail()}")


def _accepts_tcp(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _health_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_echo_server(*, timeout_s: float = 20.0) -> ServerProcess:
    """The baseline: a bare websockets echo server in its own process."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.echo_server", "--port", str(port)]
    popen, log_path = _spawn("raw-echo", argv, python_env())
    proc = ServerProcess("raw-echo", popen, f"ws://{HOST}:{port}/", log_path)
    _wait_until(lambda: _accepts_tcp(port), proc, timeout_s)
    return proc


def start_moto(*, timeout_s: float = 30.0) -> ServerProcess:
    """A standalone moto server: the one the emulator embeds (`adapters.moto_server`:
    one call at a time, keep-alive, indexed queries), in a process of its own."""
    port = free_port()
    argv = [sys.executable, "-m", "adapters.moto_server", "--host", HOST, "--port", str(port)]
    popen, log_path = _spawn("moto", argv, python_env())
    proc = ServerProcess("moto", popen, "", log_path, http_url=f"http://{HOST}:{port}")
    _wait_until(lambda: _accepts_tcp(port), proc, timeout_s)
    return proc


def start_emulator(
    *,
    app: str,
    env: Mapping[str, str],
    name: str = "emulator",
    extra_args: Sequence[str] = (),
    profile_to: Path | None = None,
    timeout_s: float = 60.0,
) -> ServerProcess:
    """The emulator (`python -m emulator`) in its own process, ready when `/health` is 200.

    With `profile_to`, it runs under pyinstrument, which writes a text profile
    there when the emulator exits (on `stop`).
    """
    ws_port, http_port = free_port(), free_port()
    args = [
        "--host", HOST, "--port", str(ws_port), "--http-port", str(http_port), "--app", app,
        *extra_args,
    ]  # fmt: skip
    if profile_to is not None:
        profile_to.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable, "-m", "pyinstrument", "--renderer", "text", "--show-all",
            "--outfile", str(profile_to), "-m", "emulator", *args,
        ]  # fmt: skip
    else:
        argv = [sys.executable, "-m", "emulator", *args]
    popen, log_path = _spawn(name, argv, python_env(env))
    http_url = f"http://{HOST}:{http_port}"
    proc = ServerProcess(name, popen, f"ws://{HOST}:{ws_port}/", log_path, http_url=http_url)
    started = time.monotonic()
    _wait_until(lambda: _health_ok(http_url), proc, timeout_s)
    print(f"    {name} ready in {time.monotonic() - started:.1f} s", flush=True)
    return proc
