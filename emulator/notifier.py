"""The emulator's `Notifier`s: to the sockets the gateway holds, and, for emulators
sharing one table, to the emulator holding each socket (the `Endpoint` on its record)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed

from adapters.apigateway import ApiGatewayNotifier, open_management_client
from adapters.sigv4 import DevCredentials
from emulator.gateway import SocketRegistry
from streamer.errors import ConnectionGone, ErrorCode, StreamerError
from streamer.frames import FramePolicy
from streamer.models import ConnectionId
from streamer.ports import ConnectionStore
from streamer.protocol import ServerMessage
from streamer.settings import Settings

__all__ = ["LocalNotifier", "RemoteEndpoints", "RoutingNotifier"]


class LocalNotifier:
    """`Notifier` over the emulator's own open sockets. A client that does not read
    is closed by its socket's write timeout (1001), and the send counts as gone.

    Args:
        registry: the gateway's open sockets.
        frame_policy: the message limit (API Gateway's by default).
    """

    def __init__(
        self, registry: SocketRegistry, *, frame_policy: FramePolicy | None = None
    ) -> None:
        self._registry = registry
        self._frame_policy = frame_policy or FramePolicy()
        # A push hands the same (frozen) message to every target: encoded once.
        self._last: tuple[ServerMessage, str] | None = None

    def holds(self, connection_id: str) -> bool:
        """True when this emulator has an open socket with this id."""
        return self._registry.get(connection_id) is not None

    async def send(self, connection_id: ConnectionId, message: ServerMessage) -> None:
        """Send one message as a JSON text frame.

        Raises:
            ConnectionGone: no open socket has this id (never connected, closed,
                or closing), like API Gateway's 410 GoneException.
            StreamerError: PAYLOAD_TOO_LARGE over the message limit.
        """
        last = self._last
        if last is not None and last[0] is message:
            text = last[1]
        else:
            text = self._frame_policy.outbound(message)
            self._last = (message, text)
        await self.send_raw(connection_id, text)

    async def send_raw(self, connection_id: str, data: str | bytes) -> None:
        """Send one frame as-is (the management API's POST).

        Raises:
            ConnectionGone: no open socket has this id, or it was closed because
                the client did not take the frame within the write timeout.
            StreamerError: PAYLOAD_TOO_LARGE over API Gateway's 128 KB message limit.
        """
        # API Gateway refuses these (413); refusing them here too keeps the
        # emulator from hiding a result that could never reach a real client.
        self._frame_policy.check_outbound(data)
        socket = self._registry.get(connection_id)
        if socket is None:
            raise ConnectionGone(connection_id)
        try:
            await socket.send(data)
        except ConnectionClosed as exc:
            raise ConnectionGone(connection_id) from exc


class RemoteEndpoints:
    """Open management-API clients to other emulators, one per `Endpoint`, made on
    first use and closed with `aclose`; each signs with the shared dev credentials.

    Args:
        settings: region and client settings.
        credentials: what the other emulators accept.
        session: the aioboto3 session.
    """

    def __init__(
        self, settings: Settings, credentials: DevCredentials, *, session: Any | None = None
    ) -> None:
        self._settings = settings
        self._credentials = credentials
        self._session = session
        self._notifiers: dict[str, ApiGatewayNotifier] = {}
        self._lock = asyncio.Lock()
        self._stack = contextlib.AsyncExitStack()

    async def notifier(self, endpoint: str) -> ApiGatewayNotifier:
        """The production notifier on `endpoint` (another emulator's management API)."""
        found = self._notifiers.get(endpoint)
        if found is not None:
            return found
        async with self._lock:
            found = self._notifiers.get(endpoint)
            if found is None:
                client = await self._stack.enter_async_context(
                    open_management_client(
                        self._settings,
                        session=self._session,
                        endpoint=endpoint,
                        credentials=self._credentials,
                    )
                )
                found = self._notifiers[endpoint] = ApiGatewayNotifier(client)
        return found

    async def aclose(self) -> None:
        """Close every client."""
        self._notifiers.clear()
        await self._stack.aclose()


class RoutingNotifier:
    """`Notifier` for emulators that share one table, as one API Gateway stage
    reaches every socket: a socket this emulator holds is sent to directly; any
    other goes to the `Endpoint` on its connection record (another emulator's
    management API, signed). A connection is gone only when no record names it,
    its record names this emulator (which does not hold it), or its emulator
    answers 410; an unreachable emulator is a failed send, never a gone connection.

    Args:
        local: this emulator's own sockets.
        connections: the shared connections table.
        own_endpoint: this emulator's management-API URL (`http://HOST:PORT`).
        remote: clients to the other emulators.
        endpoints_cached: how many connection ids' endpoints are remembered (an
            endpoint never changes for a connection).
    """

    def __init__(
        self,
        *,
        local: LocalNotifier,
        connections: ConnectionStore,
        own_endpoint: Callable[[], str],
        remote: RemoteEndpoints,
        endpoints_cached: int = 10_000,
    ) -> None:
        self._local = local
        self._connections = connections
        self._own_endpoint = own_endpoint
        self._remote = remote
        self._cache: OrderedDict[ConnectionId, str] = OrderedDict()
        self._cache_size = endpoints_cached

    async def send(self, connection_id: ConnectionId, message: ServerMessage) -> None:
        """Send one message wherever its socket is.

        Raises:
            ConnectionGone: the connection is gone (see the class).
            StreamerError: PAYLOAD_TOO_LARGE, or INTERNAL_ERROR when the socket's
                emulator cannot be reached or the client does not read.
        """
        if self._local.holds(connection_id):
            await self._local.send(connection_id, message)
            return
        own = self._own_endpoint()
        if not own:  # not serving yet: whether a record is ours cannot be told
            raise StreamerError(ErrorCode.INTERNAL_ERROR, "the emulator is starting")
        endpoint = await self._endpoint_of(connection_id)
        if endpoint is None or _same_server(endpoint, own):
            raise ConnectionGone(connection_id)
        notifier = await self._remote.notifier(endpoint)
        await notifier.send(connection_id, message)

    async def _endpoint_of(self, connection_id: ConnectionId) -> str | None:
        cached = self._cache.get(connection_id)
        if cached is not None:
            return cached
        record = await self._connections.get(connection_id)
        if record is None or not record.endpoint:
            return None
        self._cache[connection_id] = record.endpoint
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return record.endpoint


def _same_server(endpoint: str, own: str) -> bool:
    """True when both URLs reach the same host and port (stages aside)."""
    a, b = urlsplit(endpoint), urlsplit(own)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)
