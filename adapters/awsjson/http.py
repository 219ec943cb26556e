"""A bounded pool of keep-alive HTTP/1.1 connections to one plain-HTTP endpoint, each an
`asyncio.Protocol`, raising botocore's connection errors.

A connection goes back to the pool after a complete response that did not ask
to close; one the server closed while it sat idle is noticed when it is taken
and dropped. A request sent on a reused connection that the server closed
before answering (its keep-alive ended at that moment) is sent once more on a
new connection, as urllib3 and aiohttp do. A protocol, not asyncio streams:
one future per exchange and the response parsed where its bytes arrive cost
the loop about a third less.

When every connection is busy, a request waits for one in turn, except that the
requests of work already under way (`UNDER_WAY`: in the emulator, the stream
processor's and the sweeper's) go before new work (the router's enqueues). In
production those calls come from other Lambda invocations and never queue behind
the router's; a shared pool served first come, first served made a burst's
claims and completions wait for all of its enqueues.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque
from dataclasses import dataclass
from typing import Final

from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

__all__ = ["UNDER_WAY", "ConnectionPool", "HttpResponse", "under_way_context"]

UNDER_WAY: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "streamer_awsjson_under_way", default=False
)
"""True in the tasks whose calls are work already under way: when the pool is full they
are given a connection before the others waiting."""


def under_way_context(under_way: bool = True) -> contextvars.Context:
    """A copy of the current context with `UNDER_WAY` set, for `create_task(context=...)`."""
    context = contextvars.copy_context()
    context.run(UNDER_WAY.set, under_way)
    return context


_HEAD_LIMIT: Final = 64 * 1024
"""Longest response head accepted; a DynamoDB head is a few hundred bytes."""
_UNTIL_CLOSE: Final = -1
"""Body length of a response without one: the body ends when the server closes."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """One HTTP response, read whole.

    Args:
        status_code: e.g. 200.
        headers: names lower-cased; a repeated header's values joined by ", ".
        content: the body.
    """

    status_code: int
    headers: dict[str, str]
    content: bytes


class _Closed(Exception):
    """The connection ended before its response was complete.

    Args:
        is_answered: some of the response had arrived.
    """

    def __init__(self, *, is_answered: bool, cause: BaseException | None = None) -> None:
        super().__init__("connection closed")
        self.is_answered = is_answered
        self.cause = cause


class _Timeout(Exception):
    """No complete response within the read timeout."""


class _HttpConnection(asyncio.Protocol):
    """One socket carrying one exchange at a time; the response is parsed as it arrives."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[HttpResponse, bool]] | None = None
        self._head: tuple[int, dict[str, str], bool] | None = None
        """Status, headers and keep-alive of the response being read."""
        self._body_start = 0
        self._body_length = 0
        self._is_chunked = False
        self.is_closed = False

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Bytes nobody asked for: the connection is out of step; never reuse it.
            self.close()
            return
        self._buffer += data
        try:
            self._advance()
        except (ValueError, IndexError) as exc:
            self._fail(_Closed(is_answered=True, cause=exc))
            self.close()

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_closed = True
        if self._waiter is None or self._waiter.done():
            return
        head = self._head
        if head is not None and self._body_length == _UNTIL_CLOSE and not self._is_chunked:
            status, headers, _ = head
            content = bytes(self._buffer[self._body_start :])
            self._finish(HttpResponse(status, headers, content), is_kept=False)
            return
        self._fail(_Closed(is_answered=bool(self._buffer) or head is not None, cause=exc))

    # -- exchanges -----------------------------------------------------------------

    @property
    def is_usable(self) -> bool:
        transport = self._transport
        return not self.is_closed and transport is not None and not transport.is_closing()

    async def exchange(self, data: bytes, timeout_s: float) -> tuple[HttpResponse, bool]:
        """Send `data`; the response and whether the connection may be reused.

        Raises:
            _Closed: the connection ended first.
            _Timeout: no complete response within `timeout_s`.
        """
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[tuple[HttpResponse, bool]] = loop.create_future()
        self._waiter = waiter
        self._buffer.clear()
        self._head = None
        timer = loop.call_later(timeout_s, self._time_out, waiter)
        try:
            self._transport.write(data)
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def close(self) -> None:
        self.is_closed = True
        if self._transport is not None:
            self._transport.abort()

    def _time_out(self, waiter: asyncio.Future[tuple[HttpResponse, bool]]) -> None:
        if not waiter.done():
            waiter.set_exception(_Timeout())
        self.close()

    def _fail(self, error: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def _finish(self, response: HttpResponse, *, is_kept: bool) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result((response, is_kept))

    def _advance(self) -> None:
        """Complete the response if the buffer now holds all of it."""
        buffer = self._buffer
        if self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _HEAD_LIMIT:
                    raise ValueError("response head too long")
                return
            self._read_head(bytes(buffer[:end]))
            self._body_start = end + 4
        assert self._head is not None
        status, headers, is_kept = self._head
        start = self._body_start
        if self._is_chunked:
            content = _dechunk(buffer, start)
            if content is not None:
                self._finish(HttpResponse(status, headers, content), is_kept=is_kept)
        elif self._body_length != _UNTIL_CLOSE and len(buffer) - start >= self._body_length:
            content = bytes(buffer[start : start + self._body_length])
            self._finish(HttpResponse(status, headers, content), is_kept=is_kept)

    def _read_head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError(f"not an HTTP/1 response: {lines[0][:40]!r}")
        status = int(rest[:3])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        connection = headers.get("connection", "").lower()
        is_kept = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        self._is_chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if status in (204, 304) or 100 <= status < 200:
            self._body_length = 0
        elif "content-length" in headers:
            self._body_length = int(headers["content-length"])
        else:
            self._body_length = _UNTIL_CLOSE
            is_kept = is_kept and self._is_chunked
        self._head = (status, headers, is_kept)


def _dechunk(buffer: bytearray, start: int) -> bytes | None:
    """The body of a chunked response starting at `start`, or None while incomplete."""
    chunks: list[bytes] = []
    at = start
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None
        size = int(bytes(buffer[at:line_end]).split(b";", 1)[0].strip(), 16)
        at = line_end + 2
        if size == 0:
            # Trailers (none expected) end with an empty line.
            while True:
                line_end = buffer.find(b"\r\n", at)
                if line_end < 0:
                    return None
                if line_end == at:
                    return b"".join(chunks)
                at = line_end + 2
        if len(buffer) < at + size + 2:
            return None
        chunks.append(bytes(buffer[at : at + size]))
        at += size + 2


_UNDER_WAY_STREAK: Final = 4
"""Turns given to waiters under way in a row while others wait, before one of those:
work under way can delay new work, never starve it (a thousand running requests'
progress writes would otherwise hold every connection)."""


class _Slots:
    """`count` connections' worth of turns. A request waiting for one is served in the
    order it came, those under way (`UNDER_WAY`) before the others, but for one other
    after every `_UNDER_WAY_STREAK` of them."""

    def __init__(self, count: int) -> None:
        self._free = count
        self._waiting: tuple[deque[asyncio.Future[None]], ...] = (deque(), deque())
        """Waiters under way, then the others."""
        self._streak = 0
        """Turns given in a row to waiters under way while others waited."""

    async def acquire(self) -> None:
        """Take a turn, waiting for one when none is free."""
        under_way, others = self._waiting
        if self._free > 0 and not under_way and not others:
            self._free -= 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = under_way if UNDER_WAY.get() else others
        queue.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # given a turn as it was cancelled: hand it on
            else:
                with contextlib.suppress(ValueError):
                    queue.remove(turn)
            raise

    @property
    def waiting(self) -> int:
        """Waiters not yet given a turn."""
        return sum(not turn.done() for queue in self._waiting for turn in queue)

    def release(self) -> None:
        """Give the turn back: to the first waiter under way, else the first other (and
        to the first other after a streak of `_UNDER_WAY_STREAK` under way)."""
        under_way, others = self._waiting
        for queue in (others, under_way) if self._streak >= _UNDER_WAY_STREAK else self._waiting:
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)
                    self._streak = self._streak + 1 if queue is under_way and others else 0
                    return
        self._streak = 0
        self._free += 1


class ConnectionPool:
    """At most `max_connections` connections to `host:port`, each reused.

    Args:
        host: the endpoint's host.
        port: its port.
        endpoint_url: named in the errors raised.
        max_connections: sockets open at once; more requests wait for one.
        connect_timeout_s: how long a TCP connect may take.
        read_timeout_s: how long a response may take once the request is sent.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        endpoint_url: str,
        max_connections: int,
        connect_timeout_s: float,
        read_timeout_s: float,
    ) -> None:
        self._host = host
        self._port = port
        self._endpoint_url = endpoint_url
        self._slots = _Slots(max_connections)
        self._idle: list[_HttpConnection] = []
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._is_closed = False
        self.connections_made = 0
        """Sockets opened so far (tests: reuse keeps this small)."""

    @property
    def idle_connections(self) -> int:
        """Connections open and waiting for a request."""
        return len(self._idle)

    @property
    def waiting(self) -> int:
        """Requests waiting for a connection (every one busy)."""
        return self._slots.waiting

    async def request(self, data: bytes) -> HttpResponse:
        """Send one whole request (head and body) and read its response.

        Raises:
            EndpointConnectionError: the connection was refused or failed.
            ConnectTimeoutError: connecting took longer than `connect_timeout_s`.
            ReadTimeoutError: the response took longer than `read_timeout_s`.
            ConnectionClosedError: the server closed the connection mid-answer.
        """
        if self._is_closed:
            raise EndpointConnectionError(endpoint_url=self._endpoint_url, error="pool closed")
        await self._slots.acquire()
        try:
            connection = self._take_idle()
            if connection is not None:
                try:
                    return await self._exchange(connection, data)
                except _Closed as closed:
                    if closed.is_answered:
                        raise self._closed_error(closed) from closed.cause
            connection = await self._connect()
            try:
                return await self._exchange(connection, data)
            except _Closed as closed:
                raise self._closed_error(closed) from closed.cause
        finally:
            self._slots.release()

    def close(self) -> None:
        """Close every idle connection; one under way closes when its exchange ends."""
        self._is_closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _closed_error(self, closed: _Closed) -> ConnectionClosedError:
        return ConnectionClosedError(endpoint_url=self._endpoint_url, error=closed.cause)

    def _take_idle(self) -> _HttpConnection | None:
        idle = self._idle
        while idle:
            connection = idle.pop()
            if connection.is_usable:
                return connection
            connection.close()
        return None

    async def _connect(self) -> _HttpConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, connection = await loop.create_connection(
                    _HttpConnection, self._host, self._port
                )
        except TimeoutError as exc:
            raise ConnectTimeoutError(endpoint_url=self._endpoint_url, error=exc) from exc
        except OSError as exc:
            raise EndpointConnectionError(endpoint_url=self._endpoint_url, error=exc) from exc
        self.connections_made += 1
        return connection

    async def _exchange(self, connection: _HttpConnection, data: bytes) -> HttpResponse:
        is_kept = False
        try:
            response, is_kept = await connection.exchange(data, self._read_timeout_s)
        except _Timeout as exc:
            raise ReadTimeoutError(endpoint_url=self._endpoint_url, error=exc) from None
        finally:
            if is_kept and not self._is_closed and connection.is_usable:
                self._idle.append(connection)
            else:
                connection.close()
        return response
