"""Slow and stalled clients are dropped, over real sockets: HTTP sockets that idle or
trickle their headers are closed after the timeout, a thousand idle HTTP sockets
leave the WebSocket port serving, and a WebSocket client that stops reading is
closed with 1001 once a send has waited past the write timeout, and disconnected."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from conftest import EmulatorStarter

from emulator.testing import request

IDLE_SOCKETS = 1000
_ACCEPT_BATCH = 128
"""asyncio accepts up to the listen backlog in one go before any of them is dropped."""

_HOLDER = """
import selectors, socket, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
sys.stdin.readline()  # go
held = []
# In batches under the listen backlog, each connected before the next starts.
while len(held) < count:
    batch = []
    for _ in range(min(100, count - len(held))):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        batch.append(s)
    selector = selectors.DefaultSelector()
    for s in batch:
        selector.register(s, selectors.EVENT_WRITE)
    pending, deadline = len(batch), time.monotonic() + 20
    while pending and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            selector.unregister(key.fileobj)
            pending -= 1
    selector.close()
    held += batch
print(len(held), flush=True)
sys.stdin.read()
"""


async def _closed_by_server(reader: asyncio.StreamReader, timeout_s: float) -> bool:
    """True when the server ends the connection (EOF or reset) within `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


async def test_http_sockets_that_idle_or_trickle_their_headers_are_closed(
    start_emulator: EmulatorStarter,
) -> None:
    async with start_emulator(http_idle_timeout_s=0.5) as harness:
        port = harness.emulator.http.port  # type: ignore[union-attr]
        silent = await asyncio.open_connection("127.0.0.1", port)
        trickling = await asyncio.open_connection("127.0.0.1", port)
        answered = await asyncio.open_connection("127.0.0.1", port)
        answered[1].write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await answered[1].drain()
        status_line = await asyncio.wait_for(answered[0].readline(), 10)

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for byte in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 500:
                    trickling[1].write(bytes([byte]))
                    await trickling[1].drain()
                    await asyncio.sleep(0.05)  # the pace of a slow-loris client

        trickler = asyncio.create_task(trickle())
        try:
            closed = {
                "silent": await _closed_by_server(silent[0], 10),
                "trickling headers": await _closed_by_server(trickling[0], 10),
                "idle after an answer": await _closed_by_server(answered[0], 10),
            }
        finally:
            trickler.cancel()
            for _, writer in (silent, trickling, answered):
                writer.close()
    assert status_line.startswith(b"HTTP/1.1 200")
    assert closed == {"silent": True, "trickling headers": True, "idle after an answer": True}


@contextlib.contextmanager
def _open_file_limit(soft: int) -> Iterator[None]:
    saved = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, saved[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, saved)


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
async def test_a_thousand_idle_http_sockets_leave_the_websocket_port_serving(
    start_emulator: EmulatorStarter,
) -> None:
    """The emulator's process gets files for its open sockets plus the HTTP cap and
    some room, fewer than one per idle socket: without the cap, the HTTP side would
    take every file and the WebSocket port could accept nothing."""
    async with start_emulator(http_idle_timeout_s=120) as harness:
        cap = harness.emulator.http.cap  # type: ignore[union-attr]
        port = harness.emulator.http.port  # type: ignore[union-attr]
        # Started before the limit is lowered: the holder's own files are not ours.
        holder = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _HOLDER,
            str(port),
            str(IDLE_SOCKETS),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        # Room for the cap, one accept batch (the listen backlog) and the process's
        # own clients: well under one file per idle socket.
        with _open_file_limit(_open_files() + cap.limit + 2 * _ACCEPT_BATCH + 100):
            try:
                assert holder.stdin is not None
                assert holder.stdout is not None
                holder.stdin.write(b"go\n")
                await holder.stdin.drain()
                held = int(await asyncio.wait_for(holder.stdout.readline(), 120))
                await asyncio.wait_for(cap.wait_accepted(IDLE_SOCKETS), 60)
                async with harness.connect("still-served") as ws:
                    pong = await request(ws, {"action": "ping"})
                peak = cap.peak
            finally:
                holder.kill()
                await asyncio.wait_for(holder.wait(), 10)
    assert held == IDLE_SOCKETS
    assert pong["data"]["pong"] is True
    assert peak <= cap.limit


async def _stalled_websocket(port: int, token: str) -> tuple[Any, asyncio.StreamWriter]:
    """A WebSocket client that completes the handshake, then never reads again (a
    small receive buffer, so the server's buffers fill quickly)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write(
        (
            f"GET /?Authorization={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def test_a_websocket_client_that_stops_reading_is_closed_with_1001_and_disconnected(
    start_emulator: EmulatorStarter,
) -> None:
    async with start_emulator(write_timeout_s=0.5) as harness, aiohttp.ClientSession() as http:
        gateway = harness.emulator.gateway
        stores = harness.emulator.stores
        assert gateway is not None
        assert stores is not None
        _, writer = await _stalled_websocket(gateway.port, harness.mint_token("stalled"))
        [live] = [s for s in harness.emulator.registry if s.connection.user_id == "stalled"]
        connection_id = live.connection_id
        url = f"{harness.http_url}/@connections/{quote(connection_id, safe='')}"
        chunk = "x" * (100 * 1024)
        statuses: list[int] = []
        for _ in range(400):  # 40 MB: far more than every buffer on the way
            signed = harness.signed_headers("POST", url, chunk)
            async with http.post(url, data=chunk, headers=signed) as resp:
                statuses.append(resp.status)
            if resp.status != 200:
                break
        await asyncio.wait_for(gateway.wait_disconnected(connection_id), 30)
        record = await stores.connections.get(connection_id)
        writer.close()
    close_sent = live.websocket.protocol.close_sent
    assert statuses[-1] == 410, f"the stalled client was never dropped: {statuses[-5:]}"
    assert set(statuses[:-1]) <= {200}
    assert close_sent is not None
    assert close_sent.code == 1001
    assert live.close_reason == "write timeout"
    assert record is None
