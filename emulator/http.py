"""The HTTP side of the emulator (DESIGN §8): API Gateway's `@connections`
management API, `/health`, the console's JSON endpoints and the console itself.

Routes:
- `POST|GET|DELETE /@connections/{id}`, also under a stage (`/prod/@connections/{id}`);
  the id may be percent-encoded. Shapes and codes as API Gateway: POST sends the
  raw body to the socket (200; 413 over the message limit), GET answers
  `{"connectedAt", "identity": {"sourceIp", "userAgent"}, "lastActiveAt"}`,
  DELETE closes the socket (204); an unknown or closed id answers 410
  `{"message": ...}` with `x-amzn-ErrorType: GoneException`, so botocore's
  `apigatewaymanagementapi` client raises `GoneException` as against AWS.
- `GET /health`: status, open connections, DynamoDB endpoint, poller lag, URLs.
- `GET /asyncapi.json`: the app's AsyncAPI 3.0 document (`streamer.asyncapi`), its
  local server being this emulator's WebSocket URL.
- `GET /api/actions`: `{"app", "actions": [{"name", "mode", "description",
  "timeout_s", "builtin", "payload_schema"}]}`.
- `GET /api/connections`: `{"connections": [{"id", "user", "tenant",
  "connectedAt", "lastActiveAt", "sourceIp", "userAgent"}]}`.
- `GET /api/dev-token?sub=&tenant=`: `{"token", "sub", "tenant_id", "ttl_s",
  "ws_url"}` when the emulator made dev keys, else 404.
- `GET /` and other paths: the console's static files (`emulator/console/`).

Who is answered (`emulator/guard.py` decides): every request must name a served
`Host` (403 otherwise: no DNS rebinding); the management API must be signed with
SigV4 by the dev credentials (403 with API Gateway's error types otherwise) unless
the check is turned off; `/api/*` answers trusted callers (loopback by default)
from no or an own `Origin` only. A socket idle or still sending its headers after
`idle_timeout_s` is closed, a body that takes longer is 408, and sockets past
`max_connections` are dropped on accept.
"""

from __future__ import annotations

import asyncio
import json
import socket as socketlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from aiohttp import web
from websockets.protocol import State

from adapters.sigv4 import DevCredentials, verify_signature
from emulator.gateway import Gateway, LiveSocket, SocketRegistry
from emulator.guard import AccessPolicy, ConnectionCap
from emulator.notifier import LocalNotifier
from streamer.app import RESERVED_ACTIONS, Streamer
from streamer.asyncapi import asyncapi_document
from streamer.clock import SystemClock
from streamer.errors import ConnectionGone, StreamerError
from streamer.frames import MESSAGE_LIMIT_BYTES
from streamer.ports import Clock
from streamer.protocol import format_timestamp

__all__ = ["CONSOLE_DIR", "DevTokenMinter", "HttpSide"]

CONSOLE_DIR = Path(__file__).parent / "console"
_CONNECTIONS_MARK = "/@connections/"

DevTokenMinter = Callable[[str, str], str]
"""`(sub, tenant_id) -> token`, present when the emulator made dev keys."""

_BUILTIN_DESCRIPTIONS = {
    "ping": "Heartbeat: answers pong with this connection's id.",
    "status": "The stored state of one of your requests.",
    "subscribe": "The state of one of your requests, then its further progress here.",
    "cancel": "Cancel one of your pending or running requests.",
}

_FALLBACK_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Streamer emulator</title></head>
<body><h1>Streamer emulator</h1>
<p>The console files are not installed. The management API is at
<code>/@connections/{id}</code>, health at <a href="/health">/health</a>,
actions at <a href="/api/actions">/api/actions</a>.</p></body></html>
"""


@dataclass(frozen=True, slots=True)
class _Config:
    registry: SocketRegistry
    notifier: LocalNotifier
    gateway: Gateway
    app: Streamer
    async_threshold_s: float
    health: Callable[[], Mapping[str, Any]]
    dev_token: DevTokenMinter | None
    dev_token_ttl_s: float
    ws_url: Callable[[], str]
    max_message_bytes: int
    console_dir: Path
    policy: AccessPolicy
    credentials: DevCredentials | None
    clock: Clock
    idle_timeout_s: float


class HttpSide:
    """The emulator's HTTP server (aiohttp).

    Args:
        registry: the open sockets.
        notifier: sends management-API POST bodies.
        gateway: closes sockets for DELETE.
        app: the user's actions, listed for the console.
        async_threshold_s: resolves each action's mode.
        health: builds the `/health` body.
        dev_token: mints a dev token, or None without dev keys.
        dev_token_ttl_s: lifetime of console tokens (reported only).
        ws_url: the WebSocket URL, for the console.
        max_message_bytes: management-API POST bodies above it answer 413.
        console_dir: the console's static files.
        policy: which hosts, origins and callers are answered, and whether the
            management API must be signed.
        credentials: the management API's accepted SigV4 credentials (required
            while `policy.verify_signatures`).
        clock: the time signatures are checked against.
        max_connections: sockets held at most; more are dropped on accept.
        idle_timeout_s: a socket without a complete request this long after it
            opened or answered is closed; a body must arrive within it (408).

    Raises:
        ValueError: signatures are verified but no credentials are given.
    """

    def __init__(
        self,
        *,
        registry: SocketRegistry,
        notifier: LocalNotifier,
        gateway: Gateway,
        app: Streamer,
        async_threshold_s: float,
        health: Callable[[], Mapping[str, Any]],
        dev_token: DevTokenMinter | None,
        dev_token_ttl_s: float,
        ws_url: Callable[[], str],
        max_message_bytes: int = MESSAGE_LIMIT_BYTES,
        console_dir: Path = CONSOLE_DIR,
        policy: AccessPolicy | None = None,
        credentials: DevCredentials | None = None,
        clock: Clock | None = None,
        max_connections: int = 256,
        idle_timeout_s: float = 15.0,
    ) -> None:
        policy = policy if policy is not None else AccessPolicy()
        if policy.verify_signatures and credentials is None:
            raise ValueError("verifying management-API signatures needs credentials")
        self._config = _Config(
            registry=registry,
            notifier=notifier,
            gateway=gateway,
            app=app,
            async_threshold_s=async_threshold_s,
            health=health,
            dev_token=dev_token,
            dev_token_ttl_s=dev_token_ttl_s,
            ws_url=ws_url,
            max_message_bytes=max_message_bytes,
            console_dir=console_dir,
            policy=policy,
            credentials=credentials,
            clock=clock if clock is not None else SystemClock(),
            idle_timeout_s=idle_timeout_s,
        )
        self.cap = ConnectionCap(max_connections)
        """The socket cap (and how many are held, at peak, refused)."""
        self._runner: web.AppRunner | None = None
        self._asyncapi_document: dict[str, Any] | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        """Listen on `host:port` (0 picks a free port).

        Raises:
            OSError: the address cannot be bound.
        """
        listener = _bind(host, port)
        self.port = int(listener.getsockname()[1])
        application = web.Application(
            client_max_size=max(1024 * 1024, 2 * self._config.max_message_bytes),
            middlewares=[self._guard],
        )
        application.router.add_get("/health", self._health)
        application.router.add_get("/asyncapi.json", self._asyncapi)
        application.router.add_get("/api/actions", self._actions)
        application.router.add_get("/api/connections", self._connections)
        application.router.add_get("/api/dev-token", self._dev_token)
        application.router.add_route("*", "/{tail:.*}", self._other)
        # aiohttp's keep-alive timer runs from accept and is not reset by bytes that
        # make no request, so it is both the idle and the header timeout.
        self._runner = web.AppRunner(
            application,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self._config.idle_timeout_s,
        )
        await self._runner.setup()
        try:
            await _CappedSite(self._runner, listener, self.cap).start()
        except BaseException:
            await self._runner.cleanup()
            listener.close()
            raise

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- who is answered -----------------------------------------------------------

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        policy = self._config.policy
        hosts = request.headers.getall("Host", [])
        if len(hosts) > 1 or not policy.is_served_host(hosts[0] if hosts else None):
            return _error(403, "ForbiddenException", "this server does not serve that Host")
        if request.path.startswith("/api/") and not (
            policy.is_trusted_caller(request.remote)
            and policy.is_own_origin(request.headers.get("Origin"), self.port)
        ):
            return _error(
                403, "ForbiddenException", "the console's API answers this machine's callers only"
            )
        return await handler(request)

    # -- /health and the console's JSON ------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response(dict(self._config.health()))

    async def _asyncapi(self, request: web.Request) -> web.Response:
        config = self._config
        if self._asyncapi_document is None:
            # Made once (the app does not change), off the loop: pydantic's schema
            # generation is CPU work.
            self._asyncapi_document = await asyncio.to_thread(
                asyncapi_document,
                config.app,
                async_threshold_s=config.async_threshold_s,
                server_url=config.ws_url(),
            )
        return web.json_response(self._asyncapi_document)

    async def _actions(self, request: web.Request) -> web.Response:
        config = self._config
        actions: list[dict[str, Any]] = []
        for name, spec in sorted(config.app.actions.items()):
            actions.append(
                {
                    "name": name,
                    "mode": spec.resolved_mode(config.async_threshold_s),
                    "description": spec.description,
                    "timeout_s": spec.effective_timeout_s(config.async_threshold_s),
                    "builtin": False,
                    "payload_schema": spec.payload_schema(),
                }
            )
        for name in sorted(RESERVED_ACTIONS):
            schema: dict[str, Any] = {"type": "object"}
            if name != "ping":
                schema = {
                    "type": "object",
                    "properties": {"request_id": {"type": "string"}},
                    "required": ["request_id"],
                }
            actions.append(
                {
                    "name": name,
                    "mode": "sync",
                    "description": _BUILTIN_DESCRIPTIONS.get(name, ""),
                    "timeout_s": None,
                    "builtin": True,
                    "payload_schema": schema,
                }
            )
        return web.json_response({"app": config.app.name, "actions": actions})

    async def _connections(self, request: web.Request) -> web.Response:
        listed = [
            {
                "id": socket.connection_id,
                "user": socket.connection.user_id,
                "tenant": socket.connection.tenant_id,
                "connectedAt": format_timestamp(socket.connection.connected_at),
                "lastActiveAt": format_timestamp(socket.last_active_at),
                "sourceIp": socket.connection.metadata.ip_address,
                "userAgent": socket.user_agent,
            }
            for socket in self._config.registry
        ]
        return web.json_response({"connections": listed})

    async def _dev_token(self, request: web.Request) -> web.Response:
        config = self._config
        if config.dev_token is None:
            return _error(404, "NotFoundException", "no dev keys: JWT_PUBLIC_KEY is set")
        sub = request.query.get("sub") or "dev-user"
        tenant = request.query.get("tenant") or "dev-tenant"
        return web.json_response(
            {
                "token": config.dev_token(sub, tenant),
                "sub": sub,
                "tenant_id": tenant,
                "ttl_s": config.dev_token_ttl_s,
                "ws_url": config.ws_url(),
            }
        )

    # -- @connections and static files ------------------------------------------

    async def _other(self, request: web.Request) -> web.StreamResponse:
        path = urlsplit(request.raw_path).path
        mark = path.find(_CONNECTIONS_MARK)
        if mark >= 0:
            connection_id = unquote(path[mark + len(_CONNECTIONS_MARK) :])
            return await self._management(request, connection_id)
        if request.method not in ("GET", "HEAD"):
            return _error(405, "MethodNotAllowedException", "method not allowed")
        return self._static(request.path)

    async def _management(self, request: web.Request, connection_id: str) -> web.StreamResponse:
        config = self._config
        if config.policy.verify_signatures and "Authorization" not in request.headers:
            return _error(
                403, "MissingAuthenticationTokenException", "Missing Authentication Token"
            )
        try:
            async with asyncio.timeout(config.idle_timeout_s):
                body = await request.read()
        except TimeoutError:
            return _error(408, "RequestTimeoutException", "the body did not arrive in time")
        if config.policy.verify_signatures:
            assert config.credentials is not None
            refused = verify_signature(
                method=request.method,
                raw_path=request.raw_path,
                headers=request.headers.items(),
                body=body,
                accepted=config.credentials,
                now=config.clock.now(),
            )
            if refused is not None:
                return _error(403, refused.error_type, refused.message)
        if request.method == "POST":
            if len(body) > config.max_message_bytes:
                return _error(
                    413,
                    "PayloadTooLargeException",
                    f"Message is {len(body)} bytes; the limit is {config.max_message_bytes}",
                )
            data: str | bytes
            try:
                data = body.decode("utf-8")
            except UnicodeDecodeError:
                data = body
            try:
                await config.notifier.send_raw(connection_id, data)
            except ConnectionGone:
                return _gone()
            except StreamerError as exc:
                return _error(500, "InternalServerErrorException", exc.message)
            return web.Response(status=200)
        if request.method == "GET":
            socket = config.registry.get(connection_id)
            if socket is None or _is_closing(socket):
                return _gone()
            return web.json_response(
                {
                    "connectedAt": format_timestamp(socket.connection.connected_at),
                    "identity": {
                        "sourceIp": socket.connection.metadata.ip_address,
                        "userAgent": socket.user_agent,
                    },
                    "lastActiveAt": format_timestamp(socket.last_active_at),
                }
            )
        if request.method == "DELETE":
            socket = config.registry.get(connection_id)
            if socket is None or _is_closing(socket):
                return _gone()
            if not await config.gateway.delete(connection_id):
                return _gone()
            return web.Response(status=204)
        return _error(405, "MethodNotAllowedException", "method not allowed")

    def _static(self, path: str) -> web.StreamResponse:
        root = self._config.console_dir.resolve()
        relative = path.lstrip("/") or "index.html"
        try:
            target = (root / relative).resolve()
        except ValueError:  # an embedded NUL (`/%00`) is no file name
            return _error(404, "NotFoundException", "not found")
        if not target.is_relative_to(root):
            return _error(404, "NotFoundException", "not found")
        if target.is_dir():
            target = target / "index.html"
        if target.is_file():
            return web.FileResponse(target)
        if relative == "index.html":
            return web.Response(text=_FALLBACK_PAGE, content_type="text/html")
        return _error(404, "NotFoundException", "not found")


def _is_closing(socket: LiveSocket) -> bool:
    # A socket being closed (DELETE, idle, shutdown) stays registered until its
    # `$disconnect` has run; API Gateway answers Gone for it at once, and POST
    # already does (the send fails).
    return socket.websocket.state is not State.OPEN


def _gone() -> web.Response:
    return _error(410, "GoneException", "Connection is gone or was never open")


def _error(status: int, error_type: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"message": message}),
        content_type="application/json",
        headers={"x-amzn-ErrorType": error_type},
    )


class _CappedSite(web.BaseSite):
    """aiohttp's `SockSite`, with the socket cap around its protocol factory."""

    __slots__ = ("_cap", "_name", "_sock")

    def __init__(self, runner: web.BaseRunner, sock: socketlib.socket, cap: ConnectionCap) -> None:
        super().__init__(runner)
        self._sock = sock
        self._cap = cap
        host, port = sock.getsockname()[:2]
        self._name = f"http://{host}:{port}"

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._cap.wrap(server), sock=self._sock, backlog=self._backlog
        )


def _bind(host: str, port: int) -> socketlib.socket:
    family = socketlib.AF_INET6 if ":" in host else socketlib.AF_INET
    listener = socketlib.socket(family, socketlib.SOCK_STREAM)
    try:
        listener.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
        listener.setblocking(False)
    except OSError as exc:
        listener.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    except BaseException:
        listener.close()
        raise
    return listener
