"""The WebSocket side of the emulator: API Gateway's `$connect`, `$default` and
`$disconnect` over a real websockets server (DESIGN §4, §10).

The handshake runs `ConnectionService.connect` before the upgrade, so a refused
token answers HTTP 401/403/429 and stores nothing. Each text frame goes to the
`Router` and its one reply is sent back; frames are handled concurrently, as API
Gateway invokes one integration per message. Every way a socket ends (client
close, network drop, idle timeout, maximum lifetime, management-API DELETE,
shutdown) runs `$disconnect` exactly once.

Frames are judged by the core (`streamer.frames`), as each one arrives: a
binary frame closes the socket with 1003, a single frame over 32 KB or a
message over 128 KB with 1009, as API Gateway does; every reply is the text
the router's verdict carries. Idle timeout, maximum lifetime and shutdown close
with 1001 "Going away"; a management-API DELETE closes with 1000. websockets'
keepalive pings detect dead peers but do not count as traffic for the idle
timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import http
import json
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Event

from streamer.connections import ConnectionService, Handshake
from streamer.eager import Eager, LazyTimeout
from streamer.errors import ConnectRefused, ErrorCode, StreamerError
from streamer.frames import Close, FrameKind, FrameMeter, FramePolicy, Verdict
from streamer.ids import new_connection_id
from streamer.models import Connection, ConnectionId, UserId
from streamer.ports import Clock
from streamer.protocol import error_message
from streamer.router import Router

__all__ = [
    "GOING_AWAY_REASON",
    "Gateway",
    "LiveSocket",
    "SocketRegistry",
    "WireRedactor",
    "wire_logger",
]

log = logging.getLogger("emulator.gateway")

GOING_AWAY_REASON = "Going away"
"""The close reason API Gateway gives with 1001 (idle, lifetime, shutdown)."""

_FRAME_KINDS = {Opcode.TEXT: FrameKind.TEXT, Opcode.BINARY: FrameKind.BINARY, Opcode.CONT: None}


class MeteredConnection(ServerConnection):
    """A websockets server connection whose data frames are shown to the core's
    `FrameMeter` one by one, before they are assembled into a message: a frame
    it refuses fails the connection with the verdict's close code."""

    frame_policy: FramePolicy = FramePolicy()
    """Set per gateway, on a subclass (websockets builds connections itself)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frame_meter = FrameMeter(self.frame_policy)

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame) and event.opcode in _FRAME_KINDS:
            closing = self.frame_meter.receive(
                _FRAME_KINDS[event.opcode], len(event.data), is_final=event.fin
            )
            if closing is not None:
                self.protocol.fail(closing.code, closing.reason)
                self.send_data()
                return
        super().process_event(event)


@dataclass(eq=False, slots=True)
class LiveSocket:
    """One open WebSocket and the connection record it was admitted with.

    Args:
        connection: the record `$connect` stored (kept in memory for the router).
        websocket: the server-side websockets connection.
        opened_at: loop time when the handshake was accepted.
        last_active_at: wall time of the last frame either way (GET @connections).
    """

    connection: Connection
    websocket: ServerConnection
    opened_at: float
    last_active_at: datetime
    last_active: float = 0.0
    """Loop time of the last frame either way; the idle timeout counts from it."""
    user_agent: str = ""
    close_reason: str = ""
    """Why the server closed it (idle timeout, lifetime, deleted, shutdown)."""
    is_open: bool = False
    """True from the handler's start until the socket is done."""
    is_disconnected: bool = False
    """True once `$disconnect` has been started for it."""
    clock: Clock | None = field(default=None, repr=False)
    """Where `last_active_at` comes from (None leaves it unchanged)."""
    write_timeout_s: float = 10.0
    """How long one send may wait for a client that does not read (its buffers
    full) before the socket is closed with 1001."""
    _stalled_close: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def connection_id(self) -> ConnectionId:
        """The API Gateway-style id of this socket."""
        return self.connection.connection_id

    def mark_active(self) -> None:
        """Traffic happened: the idle timer starts again."""
        self.last_active = asyncio.get_running_loop().time()
        if self.clock is not None:
            self.last_active_at = self.clock.now()

    async def send(self, data: str | bytes) -> None:
        """Send one frame (text for `str`, binary for `bytes`).

        A send still waiting after `write_timeout_s` (the client stopped reading)
        closes the socket with 1001, which runs `$disconnect`: a stalled client
        never holds its buffers, or the actions that report to it, for long.

        Raises:
            websockets.exceptions.ConnectionClosed: the socket is closed, or was
                closed because this send timed out.
        """
        try:
            # Armed only when the send waits (the client's buffers are full).
            await LazyTimeout(self.write_timeout_s).run(self.websocket.send(data))
        except TimeoutError:
            self._close_stalled()
            raise ConnectionClosedError(None, None) from None
        self.mark_active()

    def _close_stalled(self) -> None:
        if self._stalled_close is not None:
            return
        self.close_reason = self.close_reason or "write timeout"
        self._stalled_close = asyncio.ensure_future(self._close_going_away())

    async def _close_going_away(self) -> None:
        """Queue the 1001 close frame; a client that reads nothing never answers it,
        so the connection is dropped after one more write timeout."""
        try:
            async with asyncio.timeout(self.write_timeout_s):
                await self.websocket.close(CloseCode.GOING_AWAY, GOING_AWAY_REASON)
        except TimeoutError:
            self.websocket.transport.abort()


class SocketRegistry:
    """The open sockets, by connection id: shared by the gateway (which fills it),
    the local notifier and the management API (which read it)."""

    def __init__(self) -> None:
        self._sockets: dict[ConnectionId, LiveSocket] = {}
        self._by_user: dict[UserId, dict[ConnectionId, LiveSocket]] = {}

    def get(self, connection_id: str) -> LiveSocket | None:
        """The open socket with this id, or None."""
        return self._sockets.get(ConnectionId(connection_id))

    def of_user(self, user_id: UserId) -> list[LiveSocket]:
        """The open sockets of one user (any tenant)."""
        return list(self._by_user.get(user_id, {}).values())

    def add(self, socket: LiveSocket) -> None:
        """Register an open socket."""
        self._sockets[socket.connection_id] = socket
        self._by_user.setdefault(socket.connection.user_id, {})[socket.connection_id] = socket

    def discard(self, socket: LiveSocket) -> None:
        """Forget a socket (no error when absent)."""
        cid = socket.connection_id
        if self._sockets.get(cid) is socket:
            del self._sockets[cid]
            user_id = socket.connection.user_id
            of_user = self._by_user.get(user_id, {})
            of_user.pop(cid, None)
            if not of_user:
                self._by_user.pop(user_id, None)

    def __iter__(self) -> Iterator[LiveSocket]:
        return iter(list(self._sockets.values()))

    def __len__(self) -> int:
        return len(self._sockets)


@dataclass(eq=False, slots=True)
class _FrameWork:
    """One socket's frame handling: the tasks reading or finishing frames (one
    reads at a time), the slots that bound frames in flight, and whether
    reading has ended (the socket closed).

    Args:
        slots: frames of this socket handled at once; reading pauses beyond it.
    """

    slots: asyncio.Semaphore
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    read_done: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    def start(self, reading: Coroutine[Any, Any, None]) -> None:
        """Hand reading to a new task."""
        task = asyncio.create_task(reading)
        self._reader = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def stop_reading(self) -> None:
        """Cancel the task reading, if reading has not ended (the handler was cancelled)."""
        if not self.read_done.is_set() and self._reader is not None:
            self._reader.cancel()


class Gateway:
    """API Gateway's WebSocket side on a local websockets server.

    Args:
        connections: `$connect` / `$disconnect`.
        router: `$default`: one frame in, one reply out.
        registry: where open sockets are kept for the notifier and the HTTP side.
        clock: wall time for `lastActiveAt`.
        endpoint: the management-API base URL stored as each connection's
            `Endpoint` (the stage path of the handshake is appended).
        health: builds the `/health` body (answered on this port too).
        idle_timeout_s: close with 1001 after this long without a frame either way
            (API Gateway: 600).
        max_lifetime_s: close with 1001 this long after connecting (API Gateway: 7200).
        frame_policy: the frame and message limits (API Gateway's by default).
        max_frames_in_flight: frames of one connection handled at once; reading
            pauses beyond it.
        frame_drain_s: after a socket closes, how long its frames still being
            handled may take before they are cancelled.
        write_timeout_s: a send waiting longer for a client that does not read
            closes its socket with 1001.
    """

    def __init__(
        self,
        *,
        connections: ConnectionService,
        router: Router,
        registry: SocketRegistry,
        clock: Clock,
        endpoint: str,
        health: Callable[[], Mapping[str, Any]],
        idle_timeout_s: float = 600.0,
        max_lifetime_s: float = 7200.0,
        frame_policy: FramePolicy | None = None,
        max_frames_in_flight: int = 32,
        frame_drain_s: float = 30.0,
        write_timeout_s: float = 10.0,
    ) -> None:
        self._write_timeout_s = write_timeout_s
        self._connections = connections
        self._router = router
        self._registry = registry
        self._clock = clock
        self._endpoint = endpoint.rstrip("/")
        self._health = health
        self.idle_timeout_s = idle_timeout_s
        self.max_lifetime_s = max_lifetime_s
        self._frame_policy = frame_policy or FramePolicy()
        self._max_frames_in_flight = max_frames_in_flight
        self._frame_drain_s = frame_drain_s
        self._admitted: dict[ServerConnection, LiveSocket] = {}
        self._cleanups: set[asyncio.Task[None]] = set()
        self._server: Server | None = None
        self._port: int | None = None
        self._is_closing = False
        self.disconnects = 0
        """How many `$disconnect`s ran (for tests and /health)."""
        self._recently_disconnected: deque[ConnectionId] = deque(maxlen=10_000)
        self._disconnect_waiters: dict[ConnectionId, asyncio.Future[None]] = {}

    def set_endpoint(self, endpoint: str) -> None:
        """The management-API base URL stored with new connections."""
        self._endpoint = endpoint.rstrip("/")

    @property
    def port(self) -> int:
        """The port the server listens on (the actual one after binding port 0)."""
        if self._port is None:
            raise RuntimeError("the gateway is not started")
        return self._port

    async def start(self, host: str, port: int) -> None:
        """Listen on `host:port` (0 picks a free port).

        Raises:
            OSError: the address cannot be bound (port in use, bad host).
        """
        policy = self._frame_policy

        class GatewayConnection(MeteredConnection):
            frame_policy = policy

        self._server = await serve(
            self._handle,
            host,
            port,
            create_connection=GatewayConnection,
            process_request=self._process_request,
            # The meter closes with 1009 first; this only bounds what websockets
            # buffers, one byte above so the meter sees an oversized frame.
            max_size=self._frame_policy.message_bytes + 1,
            compression=None,
            server_header="streamer-emulator",
            logger=wire_logger(),
        )
        self._port = int(next(iter(self._server.sockets)).getsockname()[1])

    async def close(self, *, frame_drain_s: float | None = None) -> None:
        """Stop accepting, close every socket with 1001 and wait until each one's
        `$disconnect` has run (which then never cancels running requests, even
        with CANCEL_ON_DISCONNECT: shutdown hands them back instead).

        Args:
            frame_drain_s: how long frames still being handled (a sync action)
                may take now; the constructor's value when None.
        """
        if self._server is None:
            return
        if frame_drain_s is not None:
            self._frame_drain_s = frame_drain_s
        # The sockets go because the server does, not the clients: their running
        # requests are handed back by the poller's drain, never cancelled here.
        self._is_closing = True
        for socket in self._registry:
            socket.close_reason = socket.close_reason or "server shutdown"
        self._server.close(code=CloseCode.GOING_AWAY, reason=GOING_AWAY_REASON)
        await self._server.wait_closed()
        while self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)

    async def wait_disconnected(self, connection_id: str) -> None:
        """Return once `$disconnect` of this connection has finished (at once if it
        finished recently)."""
        cid = ConnectionId(connection_id)
        if cid in self._recently_disconnected:
            return
        waiter = self._disconnect_waiters.get(cid)
        if waiter is None:
            waiter = asyncio.get_running_loop().create_future()
            self._disconnect_waiters[cid] = waiter
        await asyncio.shield(waiter)

    async def delete(self, connection_id: str) -> bool:
        """Close one socket (management-API DELETE); False when it is not open."""
        socket = self._registry.get(connection_id)
        if socket is None:
            return False
        socket.close_reason = socket.close_reason or "deleted through the management API"
        # The close handshake is awaited elsewhere: the caller answers at once, as
        # API Gateway does, and `$disconnect` follows from the handler.
        self._spawn(socket.websocket.close(CloseCode.NORMAL_CLOSURE, "Connection deleted"))
        return True

    # -- handshake ($connect) ---------------------------------------------------

    async def _process_request(
        self, websocket: ServerConnection, request: Request
    ) -> Response | None:
        url = urlsplit(request.path)
        if url.path.rstrip("/").endswith("/health") or url.path == "/health":
            return self._json_response(websocket, http.HTTPStatus.OK, dict(self._health()))
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            return websocket.respond(http.HTTPStatus.UPGRADE_REQUIRED, "Upgrade Required\n")

        stage = url.path.rstrip("/")
        user_agent = request.headers.get("User-Agent", "")
        handshake = Handshake(
            connection_id=new_connection_id(),
            endpoint=f"{self._endpoint}{stage}",
            query=_every_value(parse_qsl(url.query, keep_blank_values=True)),
            headers=_every_value(request.headers.raw_items()),
            source_ip=_source_ip(websocket),
            user_agent=user_agent,
        )
        try:
            connection = await self._connections.connect(handshake)
        except ConnectRefused as refused:
            log.info(
                "connect refused",
                extra={"connection_id": handshake.connection_id, "status": refused.status_code},
            )
            return websocket.respond(refused.status_code, f"{refused.message}\n")
        except Exception:
            log.exception("connect failed", extra={"connection_id": handshake.connection_id})
            return websocket.respond(
                http.HTTPStatus.INTERNAL_SERVER_ERROR, "Internal server error\n"
            )

        loop = asyncio.get_running_loop()
        socket = LiveSocket(
            connection=connection,
            websocket=websocket,
            opened_at=loop.time(),
            last_active=loop.time(),
            last_active_at=self._clock.now(),
            user_agent=user_agent,
            clock=self._clock,
            write_timeout_s=self._write_timeout_s,
        )
        self._admitted[websocket] = socket
        # The upgrade may still fail (client gone, server closing); then the
        # handler never runs and this is what disconnects the stored record.
        websocket.connection_lost_waiter.add_done_callback(
            lambda _: self._on_lost_before_open(websocket)
        )
        return None

    def _on_lost_before_open(self, websocket: ServerConnection) -> None:
        socket = self._admitted.pop(websocket, None)
        if socket is not None and not socket.is_open:
            socket.close_reason = socket.close_reason or "handshake did not complete"
            self._spawn(self._disconnect(socket))

    # -- frames ($default) and close ($disconnect) -----------------------------

    async def _handle(self, websocket: ServerConnection) -> None:
        socket = self._admitted.pop(websocket, None)
        if socket is None:  # admitted sockets only ever reach here; be safe anyway
            await websocket.close(CloseCode.INTERNAL_ERROR, "not admitted")
            return
        socket.is_open = True
        self._registry.add(socket)
        log.debug("socket open", extra={"connection_id": socket.connection_id})
        watchdog = asyncio.create_task(self._watch(socket))
        frames = _FrameWork(asyncio.Semaphore(self._max_frames_in_flight))
        frames.start(self._read(socket, frames))
        try:
            await frames.read_done.wait()
        finally:
            watchdog.cancel()
            self._registry.discard(socket)
            frames.stop_reading()
            if frames.tasks:
                _, late = await asyncio.wait(frames.tasks, timeout=self._frame_drain_s)
                for task in late:
                    task.cancel()
            await self._disconnect(socket)

    async def _read(self, socket: LiveSocket, frames: _FrameWork) -> None:
        """Read frames and answer each one as far as it goes without waiting (a
        sync echo all the way: no task, no timer, no extra loop turn per frame).
        The first frame that waits is finished in this task, so whatever it bound
        to the task still holds, and reading goes on in a new one: frames are
        still handled concurrently, as API Gateway invokes one integration per
        message. Each frame runs in its own copy of the context."""
        websocket = socket.websocket
        meter = _meter_of(websocket)
        waiting: Eager[None] | None = None
        try:
            while waiting is None:
                frame = await websocket.recv()
                socket.mark_active()
                await frames.slots.acquire()
                answer = self._answer(socket, frame, meter.next_is_fragmented())
                try:
                    started = Eager(answer, contextvars.copy_context())
                except (Exception, asyncio.CancelledError):
                    frames.slots.release()
                    log.exception("frame failed", extra={"connection_id": socket.connection_id})
                    continue
                if started.is_done:
                    frames.slots.release()
                else:
                    waiting = started
                    frames.start(self._read(socket, frames))
        except ConnectionClosed:
            pass
        finally:
            if waiting is None:
                frames.read_done.set()
        if waiting is None:
            return
        try:
            await waiting
        except Exception:
            log.exception("frame failed", extra={"connection_id": socket.connection_id})
        finally:
            frames.slots.release()

    async def _answer(self, socket: LiveSocket, frame: str | bytes, is_fragmented: bool) -> None:
        verdict: Verdict
        try:
            verdict = await self._router.route(
                socket.connection, frame, is_fragmented=is_fragmented
            )
        except Exception:  # the router promises not to raise; never lose a reply
            log.exception("routing failed", extra={"connection_id": socket.connection_id})
            internal = StreamerError(ErrorCode.INTERNAL_ERROR, "internal error")
            verdict = self._frame_policy.reply(error_message(internal, at=self._clock.now()))
        with contextlib.suppress(ConnectionClosed):
            if isinstance(verdict, Close):
                await socket.websocket.close(verdict.code, verdict.reason)
            else:
                await socket.send(verdict.text)

    async def _watch(self, socket: LiveSocket) -> None:
        """Close with 1001 after the idle timeout or the maximum lifetime."""
        loop = asyncio.get_running_loop()
        while True:
            idle_at = socket.last_active + self.idle_timeout_s
            end_at = socket.opened_at + self.max_lifetime_s
            wait_s = min(idle_at, end_at) - loop.time()
            if wait_s <= 0:
                socket.close_reason = "idle timeout" if idle_at <= end_at else "maximum lifetime"
                await socket.websocket.close(CloseCode.GOING_AWAY, GOING_AWAY_REASON)
                return
            await asyncio.sleep(wait_s)

    async def _disconnect(self, socket: LiveSocket) -> None:
        if socket.is_disconnected:
            return
        socket.is_disconnected = True
        websocket = socket.websocket
        reason = socket.close_reason or _close_description(websocket)
        try:
            await self._connections.disconnect(
                socket.connection_id, reason=reason, cancel_running=not self._is_closing
            )
        except Exception:
            log.exception("disconnect failed", extra={"connection_id": socket.connection_id})
        self.disconnects += 1
        self._recently_disconnected.append(socket.connection_id)
        waiter = self._disconnect_waiters.pop(socket.connection_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        log.debug("socket done", extra={"connection_id": socket.connection_id, "reason": reason})

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    @staticmethod
    def _json_response(
        websocket: ServerConnection, status: http.HTTPStatus, body: dict[str, Any]
    ) -> Response:
        response = websocket.respond(status, json.dumps(body) + "\n")
        response.headers["Content-Type"] = "application/json"
        return response


_SECRET_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "sec-websocket-protocol"})


class WireRedactor(logging.Filter):
    """Keeps tokens and payloads out of websockets' DEBUG wire trace: the request
    line loses its query (`?Authorization=<JWT>`), secret headers their values,
    and frames their data (opcode and size only)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG or not isinstance(record.args, tuple):
            return True
        args = record.args
        if record.msg == "< %s %s %s" and len(args) == 3:
            path = str(args[1])
            if "?" in path:
                path = path.split("?", 1)[0] + "?[redacted]"
            record.args = (args[0], path, args[2])
        elif record.msg in ("< %s: %s", "> %s: %s") and len(args) == 2:
            if str(args[0]).lower() in _SECRET_HEADERS:
                record.args = (args[0], "[redacted]")
        elif record.msg in ("< %s", "> %s") and len(args) == 1 and isinstance(args[0], Frame):
            frame = args[0]
            record.args = (f"{frame.opcode.name} [{len(frame.data)} bytes]",)
        return True


def wire_logger() -> logging.Logger:
    """The logger websockets writes its trace to (`emulator.websockets`), redacted."""
    logger = logging.getLogger("emulator.websockets")
    if not any(isinstance(f, WireRedactor) for f in logger.filters):
        logger.addFilter(WireRedactor())
    return logger


def _every_value(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Name → every value it was given (the core refuses two `Authorization`s)."""
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        values.setdefault(name, []).append(value)
    return values


def _meter_of(websocket: ServerConnection) -> FrameMeter:
    if isinstance(websocket, MeteredConnection):
        return websocket.frame_meter
    raise TypeError("the gateway serves MeteredConnection sockets only")


def _source_ip(websocket: ServerConnection) -> str:
    address = websocket.remote_address
    if isinstance(address, tuple) and address:
        return str(address[0])
    return ""


def _close_description(websocket: ServerConnection) -> str:
    code = websocket.close_code
    if code is None:
        return "connection lost"
    reason = websocket.close_reason or ""
    return f"closed with {code}" + (f" {reason}" if reason else "")
