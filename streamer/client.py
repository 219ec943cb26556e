"""An asyncio client for Streamer's WebSocket API: requests, progress, and resume after drops.

One socket carries any number of requests at once: each frame gets a client id
and one reader task hands every server message to the request it belongs to.
When the socket drops, the client reconnects with exponential backoff and full
jitter, then asks for every acknowledged async request again with `subscribe`,
so a completion that happened while it was away is not lost.

Example:
    >>> async with StreamerClient("ws://localhost:3001", token=token) as client:
    ...     report = await client.request(
    ...         "generate_report",
    ...         {"start_date": "2026-01-01", "end_date": "2026-03-31"},
    ...         on_progress=lambda update: print(f"{update.percentage:.0f}% {update.message}"),
    ...     )
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from streamer.errors import ErrorCode, StreamerError
from streamer.frames import MESSAGE_LIMIT_BYTES, split_into_frames
from streamer.protocol import (
    Acknowledgment,
    Complete,
    ErrorMessage,
    Notification,
    ProgressUpdate,
    Response,
    ServerMessage,
    decode_server_message,
)

__all__ = [
    "ConnectionState",
    "MessageTap",
    "NotificationCallback",
    "ProgressCallback",
    "RequestSnapshot",
    "RequestTimeout",
    "StreamerClient",
    "StreamerConnectionError",
    "TokenSource",
]

logger = logging.getLogger("streamer.client")

ProgressCallback = Callable[[ProgressUpdate], Awaitable[None] | None]
"""Called with each `ProgressUpdate` of a request, in order; may be sync or async."""
NotificationCallback = Callable[[Notification], Awaitable[None] | None]
"""Called with each `Notification` (server push), in arrival order; an async one
is run as a task."""
MessageTap = Callable[[ServerMessage], None]
"""Called by the reader with every server message, before it is dispatched."""
TokenSource = str | Callable[[], str | Awaitable[str]]
"""A JWT, or a function returning a fresh one (called on every (re)connect)."""

DEFAULT_HEARTBEAT_INTERVAL_S = 300.0
"""Half of API Gateway's 10-minute idle timeout."""
_TERMINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


class ConnectionState(StrEnum):
    """Where the client's socket is in its life."""

    IDLE = "idle"
    CONNECTING = "connecting"
    OPEN = "open"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


class StreamerConnectionError(StreamerError):
    """The socket could not be opened, was refused, or was lost for good.

    Args:
        message: what happened, for people.
        status_code: the HTTP status of a refused handshake (401, 403, 429), else None.
    """

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        code = {
            401: ErrorCode.UNAUTHORIZED,
            403: ErrorCode.UNAUTHORIZED,
            429: ErrorCode.RATE_LIMITED,
        }.get(status_code or 0, ErrorCode.INTERNAL_ERROR)
        super().__init__(code, message, {"status_code": status_code} if status_code else None)
        self.status_code = status_code


class RequestTimeout(StreamerError):
    """No final answer arrived within the client-side timeout (the request may still run).

    Args:
        request_id: the request's id, to ask for it later with `status`.
        timeout_s: the timeout that ran out.
    """

    def __init__(self, request_id: str, timeout_s: float) -> None:
        super().__init__(
            ErrorCode.TIMEOUT,
            f"no answer to request {request_id!r} within {timeout_s:g} s",
            {"request_id": request_id, "timeout_s": timeout_s},
        )
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class RequestSnapshot:
    """The stored state of an async request, as `status` and `subscribe` answer it.

    Args:
        request_id: the request's id.
        status: PENDING, PROCESSING, COMPLETED, FAILED or CANCELLED.
        progress: the last percentage saved (0 to 100).
        message: the last progress message.
        result: the result once COMPLETED.
        error: `{code, message, details}` once FAILED or CANCELLED.
        raw: the whole `data` object of the response.
    """

    request_id: str
    status: str
    progress: float = 0.0
    message: str = ""
    result: Any = None
    error: Mapping[str, Any] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_terminal(self) -> bool:
        """True once nothing more will happen to the request."""
        return self.status in _TERMINAL_STATUSES

    @classmethod
    def from_data(cls, data: Any, *, request_id: str = "") -> RequestSnapshot:
        """Read a snapshot from a `response`'s `data`, tolerating absent fields."""
        if not isinstance(data, Mapping):
            raise StreamerError(ErrorCode.INTERNAL_ERROR, "the server sent a malformed snapshot")
        request = data.get("request")
        body: Mapping[str, Any] = request if isinstance(request, Mapping) else data
        error = body.get("error")
        progress = body.get("progress", body.get("percentage", 0.0))
        return cls(
            request_id=str(body.get("request_id") or request_id),
            status=str(body.get("status", "")).upper(),
            progress=float(progress) if isinstance(progress, int | float) else 0.0,
            message=str(body.get("message") or body.get("progress_message") or ""),
            result=body.get("result"),
            error=error if isinstance(error, Mapping) else None,
            raw=data,
        )

    def to_error(self) -> StreamerError:
        """The `StreamerError` a FAILED or CANCELLED request ended with."""
        error = self.error or {}
        code = str(error.get("code") or "")
        if code not in ErrorCode.__members__:
            code = (
                ErrorCode.CANCELLED if self.status == "CANCELLED" else ErrorCode.PROCESSING_FAILED
            )
        details = error.get("details")
        return StreamerError(
            code,
            str(error.get("message") or f"request {self.status.lower()}"),
            details if isinstance(details, dict | list) else None,
        )


@dataclass(frozen=True, slots=True)
class _Reconnected:
    """A new socket is up; exchanges sent on an older one decide what to resend."""

    generation: int


@dataclass(frozen=True, slots=True)
class _Lost:
    """The client is closed or gave up reconnecting."""

    error: StreamerError


_Signal = ServerMessage | _Reconnected | _Lost


@dataclass(eq=False, slots=True)
class _Link:
    ws: ClientConnection
    generation: int
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class StreamerClient:
    """An async client of one Streamer WebSocket API, reconnecting as needed.

    Use it as an async context manager (or call `connect` and `close`). Many
    `request` calls may run at once on the one socket.

    What happens to a request in flight when the socket drops:

    * an async request already acknowledged is resumed with `subscribe` on the
      new socket; if it finished meanwhile, the snapshot resolves it;
    * a request the server had not answered yet is sent again with the same id
      (`resend_unanswered=True`, the default). That is idempotent for async
      actions (the server keeps one request per id); a sync action may run a
      second time. With `resend_unanswered=False` it fails with
      `StreamerConnectionError` instead.

    Args:
        url: the WebSocket API, e.g. `ws://localhost:3001` or `wss://…/prod`.
        token: a JWT, or a (sync or async) function returning one, called on
            every connect so a long-lived client can refresh it.
        token_in: "query" sends `?Authorization=<JWT>` (what browsers and wscat
            can do); "header" sends `Authorization: Bearer <JWT>`.
        heartbeat_interval_s: seconds between `ping` actions, keeping API
            Gateway's 10-minute idle timer from closing the socket; None turns
            the heartbeat off. Default 300.
        heartbeat_timeout_s: a `ping` unanswered this long closes the socket,
            which triggers a reconnect. Default 30.
        reconnect: reconnect after a drop. Default True.
        max_reconnect_attempts: attempts per drop before giving up. Default 10.
        backoff_initial_s: the first backoff ceiling; it doubles per attempt. Default 0.5.
        backoff_max_s: the largest backoff ceiling. Default 30.
        resend_unanswered: see above. Default True.
        open_timeout_s: how long one handshake may take. Default 10.
        on_message: called by the reader with every server message (logging, `--json`).
        on_notification: called with every `notification` the server pushes
            (sync or async); `notifications()` is the iterator form.
        user_agent: the `User-Agent` header.

    Example:
        >>> async with StreamerClient("ws://localhost:3001", token=token) as client:
        ...     echoed = await client.request("echo", {"hello": "world"})
        ...     result = await client.request("delay", {"seconds": 2}, on_progress=print)
    """

    def __init__(
        self,
        url: str,
        *,
        token: TokenSource | None = None,
        token_in: Literal["query", "header"] = "query",
        heartbeat_interval_s: float | None = DEFAULT_HEARTBEAT_INTERVAL_S,
        heartbeat_timeout_s: float = 30.0,
        reconnect: bool = True,
        max_reconnect_attempts: int = 10,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        resend_unanswered: bool = True,
        open_timeout_s: float = 10.0,
        on_message: MessageTap | None = None,
        on_notification: NotificationCallback | None = None,
        user_agent: str = "streamer-client",
    ) -> None:
        if token_in not in ("query", "header"):
            raise ValueError("token_in must be 'query' or 'header'")
        self.url = url
        self._token = token
        self._token_in = token_in
        self._heartbeat_interval_s = heartbeat_interval_s
        self._heartbeat_timeout_s = heartbeat_timeout_s
        self._reconnect = reconnect
        self._max_reconnect_attempts = max_reconnect_attempts
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._resend_unanswered = resend_unanswered
        self._open_timeout_s = open_timeout_s
        self._on_message = on_message
        self._on_notification = on_notification
        self._user_agent = user_agent

        self._state = ConnectionState.IDLE
        self._link: _Link | None = None
        self._ready = asyncio.Event()
        self._failure: StreamerError | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._routes: dict[str, asyncio.Queue[_Signal]] = {}
        self._connection_id: str | None = None
        self._reconnects = 0
        self._listeners: set[asyncio.Queue[Notification | _Lost]] = set()
        self._callbacks: set[asyncio.Task[None]] = set()
        self._closed_by_caller = False

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The socket's state."""
        return self._state

    @property
    def connection_id(self) -> str | None:
        """This socket's connection id as the last `ping` reported it, else None."""
        return self._connection_id

    @property
    def reconnects(self) -> int:
        """How many times the client has reconnected after a drop."""
        return self._reconnects

    async def connect(self) -> None:
        """Open the socket (one attempt) and start the reader.

        Raises:
            StreamerConnectionError: the server is unreachable or refused the
                token (`status_code` 401/403) or the user has too many
                connections (429).
        """
        if self._state is not ConnectionState.IDLE:
            raise RuntimeError(f"connect() on a client that is {self._state.value}")
        self._state = ConnectionState.CONNECTING
        try:
            link = await self._open(generation=0)
        except BaseException:
            self._state = ConnectionState.CLOSED
            raise
        self._use(link)
        self._supervisor = asyncio.create_task(self._supervise(link), name="streamer-client")

    async def close(self) -> None:
        """Close the socket; requests still waiting fail with `StreamerConnectionError`."""
        if self._state is ConnectionState.CLOSED:
            return
        self._state = ConnectionState.CLOSED
        self._closed_by_caller = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._link is not None:
            await self._link.ws.close()
        self._fail(StreamerConnectionError("the client is closed"))

    async def __aenter__(self) -> StreamerClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the API -----------------------------------------------------------------------------

    async def request(
        self,
        action: str,
        payload: Mapping[str, Any] | BaseModel | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a RequestTimeout names the request
        request_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:
        """Run an action and return its answer: a sync action's `data` or an async one's `result`.

        Args:
            action: the action's name.
            payload: the payload object (a mapping, or a pydantic model, dumped as JSON).
            on_progress: called with each `ProgressUpdate`, percentages never
                decreasing (a sync or async callable; an exception it raises
                propagates out of `request`).
            timeout: seconds to wait for the final answer; None waits as long as it takes.
            request_id: the client id to use (at most 128 printable characters);
                repeating one makes an async request idempotent. Default: a random id.
            metadata: the frame's `metadata` object.

        Raises:
            StreamerError: the server's `error` (its code, message and details).
            RequestTimeout: `timeout` ran out (the request may still be running).
            StreamerConnectionError: the socket was lost for good.

        Example:
            >>> data = await client.request("echo", {"hello": "world"})
            >>> data["echo"]
            {'hello': 'world'}
        """
        request_id = request_id or _new_id()
        frame = _frame(request_id, action, payload, metadata)
        return await self._run(
            request_id, frame, timeout, on_progress, acknowledged=False, frame_id=request_id
        )

    async def follow(
        self,
        request_id: str,
        *,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a RequestTimeout names the request
    ) -> Any:
        """Subscribe to an async request made earlier (maybe by another connection) and
        return its result, reporting its progress on the way.

        Raises:
            StreamerError: NOT_FOUND for an unknown id (or another user's); the
                request's own error when it FAILED or was CANCELLED.

        Example:
            >>> result = await client.follow("report-2026-q1", on_progress=print)
        """
        subscribe_id = _new_id()
        frame = _frame(subscribe_id, "subscribe", {"request_id": request_id}, None)
        return await self._run(
            request_id, frame, timeout, on_progress, acknowledged=True, frame_id=subscribe_id
        )

    async def status(
        self,
        request_id: str,
        *,
        timeout: float | None = 30.0,  # noqa: ASYNC109 - see request()
    ) -> RequestSnapshot:
        """The stored state of an async request.

        Raises:
            StreamerError: NOT_FOUND for an unknown id (or another user's).

        Example:
            >>> snapshot = await client.status("report-2026-q1")
            >>> snapshot.status, snapshot.progress
            ('PROCESSING', 45.0)
        """
        data = await self._call("status", {"request_id": request_id}, timeout)
        return RequestSnapshot.from_data(data, request_id=request_id)

    async def cancel(
        self,
        request_id: str,
        *,
        timeout: float | None = 30.0,  # noqa: ASYNC109 - see request()
    ) -> RequestSnapshot:
        """Cancel an async request; the running action stops at its next progress report.

        Returns the server's answer read as a snapshot.

        Raises:
            StreamerError: NOT_FOUND for an unknown id (or another user's).
        """
        data = await self._call("cancel", {"request_id": request_id}, timeout)
        return RequestSnapshot.from_data(data, request_id=request_id)

    async def ping(self, *, timeout: float | None = 30.0) -> str:  # noqa: ASYNC109
        """Send the `ping` action; returns this socket's connection id."""
        data = await self._call("ping", {}, timeout)
        connection_id = data.get("connection_id") if isinstance(data, Mapping) else None
        self._connection_id = str(connection_id) if connection_id else None
        return self._connection_id or ""

    # -- exchanges ---------------------------------------------------------------------------

    def notifications(self, *, topic: str | None = None) -> AsyncIterator[Notification]:
        """The notifications the server pushes from now on (all, or one `topic`).

        Every iterator gets every notification, in arrival order. Iteration ends
        when the client is closed, and raises `StreamerConnectionError` when the
        connection is lost for good. A notification pushed while the client is
        reconnecting is not replayed: push is best effort.

        Example:
            >>> async for note in client.notifications(topic="news"):
            ...     print(note.data)
        """
        inbox: asyncio.Queue[Notification | _Lost] = asyncio.Queue()
        if self._failure is not None:
            inbox.put_nowait(_Lost(self._failure))
        self._listeners.add(inbox)
        return self._drain(inbox, topic)

    async def _drain(
        self, inbox: asyncio.Queue[Notification | _Lost], topic: str | None
    ) -> AsyncIterator[Notification]:
        try:
            while True:
                item = await inbox.get()
                if isinstance(item, _Lost):
                    if self._closed_by_caller:
                        return
                    raise item.error
                if topic is None or item.topic == topic:
                    yield item
        finally:
            self._listeners.discard(inbox)

    async def _run(
        self,
        request_id: str,
        frame: str,
        timeout_s: float | None,
        on_progress: ProgressCallback | None,
        *,
        acknowledged: bool,
        frame_id: str,
    ) -> Any:
        inbox = self._open_route(request_id)
        aliases: list[str] = []
        if frame_id != request_id:
            aliases.append(frame_id)
            self._routes[frame_id] = inbox
        try:
            async with self._deadline(request_id, timeout_s):
                return await self._exchange(
                    request_id, frame, inbox, on_progress, aliases, acknowledged=acknowledged
                )
        finally:
            for key in (request_id, *aliases):
                self._routes.pop(key, None)

    async def _exchange(
        self,
        request_id: str,
        frame: str,
        inbox: asyncio.Queue[_Signal],
        on_progress: ProgressCallback | None,
        aliases: list[str],
        *,
        acknowledged: bool,
    ) -> Any:
        last_percentage = -1.0

        async def report(update: ProgressUpdate) -> None:
            nonlocal last_percentage
            if on_progress is None or update.percentage < last_percentage:
                return
            last_percentage = update.percentage
            outcome = on_progress(update)
            if inspect.isawaitable(outcome):
                await outcome

        async def subscribe() -> int:
            # A fresh frame id, routed to this exchange too: the snapshot comes
            # back as a `response` whichever id the server answers it with.
            subscribe_id = _new_id()
            aliases.append(subscribe_id)
            self._routes[subscribe_id] = inbox
            return await self._send(
                _frame(subscribe_id, "subscribe", {"request_id": request_id}, None)
            )

        sent_on = await self._send(frame)
        first_sent_on = sent_on
        while True:
            signal = await inbox.get()
            match signal:
                case _Lost(error=error):
                    raise error
                case _Reconnected(generation=generation) if generation > sent_on:
                    if acknowledged:
                        sent_on = await subscribe()
                    elif self._resend_unanswered:
                        sent_on = await self._send(frame)
                    else:
                        raise StreamerConnectionError(
                            f"the connection dropped before request {request_id!r} was "
                            "answered; it may or may not have run"
                        )
                case Response(data=data) if not acknowledged:
                    return data
                case Response(data=data):
                    snapshot = RequestSnapshot.from_data(data, request_id=request_id)
                    if snapshot.status == "COMPLETED":
                        return snapshot.result
                    if snapshot.is_terminal:
                        raise snapshot.to_error()
                    if snapshot.progress > last_percentage and snapshot.progress > 0:
                        await report(_progress_of(request_id, snapshot))
                case Acknowledgment(status=status):
                    acknowledged = True
                    # A repeated id answers with the stored status; whatever
                    # happened before is learned (and followed) by subscribing.
                    if sent_on != first_sent_on or status.lower() != "queued":
                        sent_on = await subscribe()
                case ProgressUpdate():
                    await report(signal)
                case Complete(result=result):
                    return result
                case ErrorMessage(error=body):
                    raise StreamerError(body.code, body.message, body.details)

    async def _call(self, action: str, payload: Mapping[str, Any], timeout_s: float | None) -> Any:
        """A built-in action answered by one `response`; resent after a reconnect."""
        call_id = _new_id()
        frame = _frame(call_id, action, payload, None)
        inbox = self._open_route(call_id)
        try:
            async with self._deadline(call_id, timeout_s):
                sent_on = await self._send(frame)
                while True:
                    signal = await inbox.get()
                    match signal:
                        case _Lost(error=error):
                            raise error
                        case _Reconnected(generation=generation) if generation > sent_on:
                            sent_on = await self._send(frame)
                        case Response(data=data):
                            return data
                        case ErrorMessage(error=body):
                            raise StreamerError(body.code, body.message, body.details)
        finally:
            self._routes.pop(call_id, None)

    def _open_route(self, request_id: str) -> asyncio.Queue[_Signal]:
        if self._failure is not None:
            raise self._failure
        if self._state is ConnectionState.IDLE:
            raise RuntimeError("the client is not connected: use `async with` or connect()")
        if request_id in self._routes:
            raise ValueError(f"request {request_id!r} is already in flight on this client")
        inbox: asyncio.Queue[_Signal] = asyncio.Queue()
        self._routes[request_id] = inbox
        return inbox

    @contextlib.asynccontextmanager
    async def _deadline(self, request_id: str, timeout_s: float | None) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(timeout_s) as scope:
                yield
        except TimeoutError:
            if timeout_s is not None and scope.expired():
                raise RequestTimeout(request_id, timeout_s) from None
            raise

    # -- the socket --------------------------------------------------------------------------

    async def _send(self, frame: str) -> int:
        """Send on the live socket, waiting for one if needed; returns its generation."""
        while True:
            link = await self._live_link()
            # Over 32 KB, a message must be fragmented: API Gateway closes the
            # socket for a bigger single frame.
            pieces = split_into_frames(frame)
            try:
                await link.ws.send(frame if len(pieces) == 1 else pieces)
            except ConnectionClosed:
                await link.closed.wait()
                continue
            return link.generation

    async def _live_link(self) -> _Link:
        while True:
            if self._failure is not None:
                raise self._failure
            link = self._link
            if link is not None and not link.closed.is_set():
                return link
            self._ready.clear()
            await self._ready.wait()

    def _use(self, link: _Link) -> None:
        self._link = link
        self._state = ConnectionState.OPEN
        self._ready.set()

    def _fail(self, error: StreamerError) -> None:
        self._failure = error
        self._ready.set()
        for inbox in {id(q): q for q in self._routes.values()}.values():
            inbox.put_nowait(_Lost(error))
        for listener in self._listeners:
            listener.put_nowait(_Lost(error))

    async def _open(self, *, generation: int) -> _Link:
        token = await self._token_value()
        url, headers = _target(self.url, token, self._token_in)
        try:
            ws = await connect(
                url,
                additional_headers=headers,
                user_agent_header=self._user_agent,
                open_timeout=self._open_timeout_s,
                max_size=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise StreamerConnectionError(
                f"{_safe_url(self.url)} refused the connection: HTTP {status}", status_code=status
            ) from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            reason = str(exc) or type(exc).__name__
            raise StreamerConnectionError(
                f"cannot connect to {_safe_url(self.url)}: {reason}"
            ) from None
        return _Link(ws=ws, generation=generation)

    async def _token_value(self) -> str | None:
        """The token to connect with; a failing token function is a connection error."""
        if self._token is None or isinstance(self._token, str):
            return self._token
        try:
            token = self._token()
            if inspect.isawaitable(token):
                token = await token
        except Exception as exc:
            # The type only: the exception's text might quote a credential.
            raise StreamerConnectionError(
                f"the token function raised {type(exc).__name__}"
            ) from exc
        return token

    async def _supervise(self, link: _Link) -> None:
        """Keep the socket up; whatever stops it for good closes the client and
        fails every waiting exchange, so none waits forever."""
        try:
            await self._keep_connected(link)
        except StreamerConnectionError as exc:
            self._state = ConnectionState.CLOSED
            self._fail(exc)
        except Exception as exc:
            logger.exception("the connection supervisor failed; closing the client")
            self._state = ConnectionState.CLOSED
            error = StreamerConnectionError(f"the connection failed: {type(exc).__name__}")
            error.__cause__ = exc
            self._fail(error)
            if self._link is not None:
                with contextlib.suppress(Exception):
                    await self._link.ws.close()

    async def _keep_connected(self, link: _Link) -> None:
        """Read the socket; after a drop, reconnect and tell every exchange.

        Raises:
            StreamerConnectionError: reconnecting failed for good.
        """
        while True:
            await self._serve(link)
            if self._state is ConnectionState.CLOSED:
                return
            if not self._reconnect:
                self._state = ConnectionState.CLOSED
                self._fail(StreamerConnectionError("the connection was closed by the server"))
                return
            self._state = ConnectionState.RECONNECTING
            link = await self._reopen(link.generation + 1)
            self._reconnects += 1
            self._use(link)
            logger.info("reconnected (generation %d)", link.generation)
            for inbox in {id(q): q for q in self._routes.values()}.values():
                inbox.put_nowait(_Reconnected(link.generation))

    async def _serve(self, link: _Link) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(link), name="streamer-client-heartbeat")
        try:
            async for frame in link.ws:
                self._dispatch(frame)
        except ConnectionClosed:
            pass
        finally:
            link.closed.set()
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        if self._state is not ConnectionState.CLOSED:
            logger.warning("connection dropped (close code %s)", link.ws.close_code)

    async def _reopen(self, generation: int) -> _Link:
        """Reconnect with exponential backoff and full jitter."""
        last: StreamerConnectionError | None = None
        for attempt in range(self._max_reconnect_attempts):
            ceiling = min(self._backoff_max_s, self._backoff_initial_s * 2**attempt)
            await asyncio.sleep(random.uniform(0, ceiling))
            try:
                return await self._open(generation=generation)
            except StreamerConnectionError as exc:
                if exc.status_code in (401, 403):
                    raise
                last = exc
                logger.info("reconnect attempt %d failed: %s", attempt + 1, exc.message)
        reason = last.message if last is not None else "no attempts allowed"
        raise StreamerConnectionError(
            f"gave up after {self._max_reconnect_attempts} reconnect attempts: {reason}"
        ) from last

    async def _heartbeat(self, link: _Link) -> None:
        if self._heartbeat_interval_s is None:
            return
        while True:
            await asyncio.sleep(self._heartbeat_interval_s)
            try:
                await self.ping(timeout=self._heartbeat_timeout_s)
            except StreamerError as exc:
                logger.warning("heartbeat failed (%s); dropping the connection", exc.code.value)
                await link.ws.close(1001, "heartbeat failed")
                return

    def _dispatch(self, frame: str | bytes) -> None:
        try:
            message = decode_server_message(frame)
        except StreamerError:
            logger.warning("ignored a frame that is not a server message")
            return
        if self._on_message is not None:
            try:
                self._on_message(message)
            except Exception:
                logger.exception("on_message raised; the message is still delivered")
        if isinstance(message, Notification):
            self._notify(message)
            return
        request_id = message.request_id
        inbox = self._routes.get(request_id) if request_id else None
        if inbox is not None:
            inbox.put_nowait(message)
        elif isinstance(message, ErrorMessage) and request_id is None:
            logger.warning("server error without a request id: %s", message.error.code.value)

    def _notify(self, note: Notification) -> None:
        for listener in self._listeners:
            listener.put_nowait(note)
        if self._on_notification is None:
            return
        try:
            outcome = self._on_notification(note)
        except Exception:
            logger.exception("on_notification raised")
            return
        if inspect.isawaitable(outcome):
            task = asyncio.ensure_future(_guarded(outcome))
            self._callbacks.add(task)
            task.add_done_callback(self._callbacks.discard)


async def _guarded(outcome: Awaitable[None]) -> None:
    try:
        await outcome
    except Exception:
        logger.exception("on_notification raised")


def _new_id() -> str:
    return uuid.uuid4().hex


def _frame(
    request_id: str,
    action: str,
    payload: Mapping[str, Any] | BaseModel | None,
    metadata: Mapping[str, Any] | None,
) -> str:
    """The JSON text frame; refuses locally what API Gateway would close the socket for."""
    body: Any = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
    message: dict[str, Any] = {
        "id": request_id,
        "action": action,
        "payload": to_jsonable_python(dict(body or {})),
    }
    if metadata:
        message["metadata"] = to_jsonable_python(dict(metadata))
    frame = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    size = len(frame.encode("utf-8"))
    if size > MESSAGE_LIMIT_BYTES:
        raise StreamerError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"message is {size} bytes; the limit is {MESSAGE_LIMIT_BYTES}",
            {"size": size, "limit": MESSAGE_LIMIT_BYTES},
        )
    return frame


def _progress_of(request_id: str, snapshot: RequestSnapshot) -> ProgressUpdate:
    details = snapshot.raw.get("details")
    return ProgressUpdate(
        timestamp=datetime.now(UTC),
        request_id=request_id,
        percentage=snapshot.progress,
        message=snapshot.message,
        metadata=dict(details) if isinstance(details, Mapping) else {},
    )


def _target(url: str, token: str | None, token_in: str) -> tuple[str, dict[str, str]]:
    """The URL and headers that carry the token."""
    if token is None:
        return url, {}
    if token_in == "header":
        return url, {"Authorization": f"Bearer {token}"}
    parts = urlsplit(url)
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "Authorization"
    ]
    query.append(("Authorization", token))
    return urlunsplit(parts._replace(query=urlencode(query))), {}


def _safe_url(url: str) -> str:
    """The URL without its query, so a token in it never reaches a message or a log."""
    return urlunsplit(urlsplit(url)._replace(query="", fragment=""))
