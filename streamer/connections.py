"""`$connect` and `$disconnect`: who may connect, and cleaning up after."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from streamer.auth import TokenVerifier
from streamer.models import Connection, ConnectionId
from streamer.ports import Clock, ConnectionStore, RequestStore, SubscriptionStore
from streamer.settings import Settings

__all__ = ["ConnectionService", "Handshake"]


@dataclass(frozen=True, slots=True)
class Handshake:
    """What a `$connect` knows: the new id and the upgrade request."""

    connection_id: ConnectionId
    endpoint: str
    """Where the management API reaches this connection (stored as `Endpoint`)."""
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    source_ip: str = ""
    user_agent: str = ""


class ConnectionService:
    """Connects and disconnects clients.

    Args:
        connections, requests, subscriptions: the stores.
        verifier: checks the token.
        clock: time source for ConnectedAt and TTL.
        settings: TTL hours, max connections per user, allowed tenants,
            cancel-on-disconnect.
    """

    def __init__(
        self,
        *,
        connections: ConnectionStore,
        requests: RequestStore,
        subscriptions: SubscriptionStore,
        verifier: TokenVerifier,
        clock: Clock,
        settings: Settings,
    ) -> None:
        raise NotImplementedError

    async def connect(self, handshake: Handshake) -> Connection:
        """Authenticate and store the connection record.

        Raises:
            ConnectRefused: 401 bad/missing token, 403 tenant not allowed,
                429 over MAX_CONNECTIONS_PER_USER; nothing is stored.
        """
        raise NotImplementedError

    async def disconnect(self, connection_id: ConnectionId, *, reason: str = "") -> None:
        """Delete the record and its subscriptions; cancel its running requests
        when CANCEL_ON_DISCONNECT is set. Idempotent."""
        raise NotImplementedError
