"""The load generator's client side: round-trip loops and pipelined async requests.

The same code talks to the raw echo server and to the emulator, so the only
difference between the two measurements is the server.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

__all__ = [
    "Pipeline",
    "Track",
    "gc_paused",
    "open_ws",
    "rtt_round_us",
]

_RUN = uuid.uuid4().hex[:8]
_COUNTER = itertools.count(1)


def with_token(url: str, token: str | None) -> str:
    """`url` with the token in the `Authorization` query parameter."""
    if token is None:
        return url
    return f"{url}?Authorization={quote(token, safe='')}"


@asynccontextmanager
async def open_ws(url: str, token: str | None = None) -> AsyncIterator[ClientConnection]:
    """A client connection with keepalive pings off (they would add traffic to measure)."""
    async with connect(
        with_token(url, token), ping_interval=None, max_size=None, open_timeout=60
    ) as ws:
        yield ws


@contextmanager
def gc_paused() -> Iterator[None]:
    """Keep the client's collector out of a timed window."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def rtt_round_us(ws: ClientConnection, frame: str, count: int, warmup: int) -> list[float]:
    """Send `frame` and wait for the reply, `count` times in a row; each round trip in µs."""
    for _ in range(warmup):
        await ws.send(frame)
        await ws.recv()
    samples: list[float] = []
    with gc_paused():
        for _ in range(count):
            started = time.perf_counter_ns()
            await ws.send(frame)
            await ws.recv()
            samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


def new_request_id() -> str:
    """A client request id unique across runs."""
    return f"bench-{_RUN}-{next(_COUNTER)}"


@dataclass
class Track:
    """What one request saw, with monotonic nanosecond stamps.

    Args:
        request_id: the client id it was sent with.
        sent_ns: when the frame was handed to the socket.
    """

    request_id: str
    sent_ns: int
    ack_ns: int | None = None
    done_ns: int | None = None
    progress_seqs: list[int] = field(default_factory=list)
    error: dict[str, Any] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def ack_ms(self) -> float | None:
        return None if self.ack_ns is None else (self.ack_ns - self.sent_ns) / 1e6

    @property
    def complete_ms(self) -> float | None:
        if self.done_ns is None or self.error is not None:
            return None
        return (self.done_ns - self.sent_ns) / 1e6


class Pipeline:
    """A connection that may have many async requests in flight; a reader task
    files every server message under the request it belongs to.

    Args:
        ws: an open client connection.
    """

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.tracks: dict[str, Track] = {}
        self.unmatched: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def submit(self, action: str, payload: dict[str, Any]) -> Track:
        """Send one request; its `Track` fills in as the replies arrive."""
        request_id = new_request_id()
        frame = json.dumps({"id": request_id, "action": action, "payload": payload})
        track = Track(request_id, time.perf_counter_ns())
        self.tracks[request_id] = track
        await self.ws.send(frame)
        return track

    async def close(self) -> None:
        self._reader.cancel()
        # The reader ends with ConnectionClosed when the server went first.
        with suppress(asyncio.CancelledError, ConnectionClosed):
            await self._reader

    def _track_for(self, request_id: object) -> Track | None:
        if not isinstance(request_id, str):
            return None
        track = self.tracks.get(request_id)
        if track is None:
            # The server may answer with the owner-scoped key `<tenant>#<user>#<id>`.
            track = self.tracks.get(request_id.rsplit("#", 1)[-1])
        return track

    async def _read(self) -> None:
        async for raw in self.ws:
            now = time.perf_counter_ns()
            message = json.loads(raw)
            track = self._track_for(message.get("request_id"))
            kind = message.get("type")
            if track is None:
                self.unmatched.append(message)
                continue
            if kind == "acknowledgment":
                track.ack_ns = now
            elif kind == "progress":
                seq = (message.get("metadata") or {}).get("seq")
                track.progress_seqs.append(int(seq) if seq is not None else -1)
            elif kind == "complete":
                track.done_ns = now
                track.done.set()
            elif kind == "error":
                track.error = message.get("error") or {}
                track.done_ns = now
                track.done.set()
            else:
                self.unmatched.append(message)
