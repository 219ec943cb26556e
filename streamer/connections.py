"""`$connect` and `$disconnect`: who may connect, and cleaning up after."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from streamer import transitions
from streamer.auth import AuthError, HandshakeValues, TokenVerifier, token_from_request
from streamer.delivery import Delivery
from streamer.errors import ConnectRefused, ErrorCode
from streamer.models import Connection, ConnectionId, ConnectionMetadata, Identity
from streamer.ports import Clock, ConnectionStore, RequestStore, SubscriptionStore
from streamer.protocol import ErrorBody, ErrorMessage
from streamer.ratelimit import RateLimiter
from streamer.settings import Settings

__all__ = ["ConnectionService", "Handshake"]

logger = logging.getLogger(__name__)

MAX_USER_AGENT_CHARS = 512


@dataclass(frozen=True, slots=True)
class Handshake:
    """What a `$connect` knows: the new id and the upgrade request."""

    connection_id: ConnectionId
    endpoint: str
    """Where the management API reaches this connection (stored as `Endpoint`)."""
    query: HandshakeValues = field(default_factory=dict)
    """Query parameters: every value of each name, so two `Authorization`s are seen."""
    headers: HandshakeValues = field(default_factory=dict)
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
        delivery: tells the followers of requests cancelled on disconnect
            (optional; without it the cancellation is only stored).
        limiter: the router's rate limiter, whose bucket is dropped on disconnect.
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
        delivery: Delivery | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._connections = connections
        self._requests = requests
        self._subscriptions = subscriptions
        self._verifier = verifier
        self._clock = clock
        self._settings = settings
        self._delivery = delivery
        self._limiter = limiter

    async def connect(self, handshake: Handshake) -> Connection:
        """Authenticate and store the connection record.

        The per-user limit counts the user's unexpired records in the same
        tenant (DynamoDB deletes TTL'd items late, so expired ones are skipped).
        Check and put are not atomic: concurrent connects may overshoot by a few.

        Raises:
            ConnectRefused: 401 bad/missing token, 403 tenant not allowed,
                429 over MAX_CONNECTIONS_PER_USER; nothing is stored.
        """
        cid = handshake.connection_id
        identity = await self._identify(handshake)
        allowed = self._settings.allowed_tenants
        if allowed is not None and identity.tenant_id not in allowed:
            raise _refuse(403, "tenant not allowed", cid, identity)
        now = self._clock.now()
        now_epoch = int(now.timestamp())
        open_connections = [
            c
            for c in await self._connections.list_by_user(identity.user_id)
            if c.tenant_id == identity.tenant_id
            and c.expires_at > now_epoch
            and c.connection_id != cid
        ]
        if len(open_connections) >= self._settings.max_connections_per_user:
            raise _refuse(429, "too many connections for user", cid, identity)
        connection = Connection(
            connection_id=cid,
            user_id=identity.user_id,
            tenant_id=identity.tenant_id,
            endpoint=handshake.endpoint,
            connected_at=now,
            last_ping=now,
            expires_at=now_epoch + int(self._settings.connection_ttl_hours * 3600),
            metadata=ConnectionMetadata(
                user_agent=(handshake.user_agent or _header(handshake.headers, "user-agent"))[
                    :MAX_USER_AGENT_CHARS
                ],
                ip_address=handshake.source_ip,
                permissions=identity.permissions,
            ),
        )
        await self._connections.put(connection)
        logger.info(
            "connected",
            extra={
                "connection_id": cid,
                "user_id": identity.user_id,
                "tenant_id": identity.tenant_id,
                "outcome": "connected",
                "count": len(open_connections) + 1,
            },
        )
        return connection

    async def _identify(self, handshake: Handshake) -> Identity:
        try:
            token = token_from_request(handshake.query, handshake.headers)
        except AuthError as exc:
            raise _refuse(401, exc.reason, handshake.connection_id) from None
        if token is None:
            raise _refuse(401, "missing token", handshake.connection_id)
        try:
            return await self._verifier.authenticate(token)
        except AuthError as exc:
            raise _refuse(401, exc.reason, handshake.connection_id) from None

    async def disconnect(
        self, connection_id: ConnectionId, *, reason: str = "", cancel_running: bool = True
    ) -> None:
        """Delete the record and its subscriptions; cancel its running requests
        when CANCEL_ON_DISCONNECT is set and `cancel_running` (False when the
        server itself is shutting down: its work is handed back, not cancelled).
        Idempotent."""
        removed = await self._connections.delete(connection_id)
        if self._limiter is not None:
            self._limiter.forget(connection_id)
        unsubscribed = await self._subscriptions.remove_for_connection(connection_id)
        cancelled = 0
        if self._settings.cancel_on_disconnect and cancel_running:
            cancelled = await self._cancel_requests_of(connection_id)
        logger.info(
            "disconnected",
            extra={
                "connection_id": connection_id,
                "user_id": removed.user_id if removed else None,
                "tenant_id": removed.tenant_id if removed else None,
                "outcome": "disconnected" if removed else "already_gone",
                "reason": reason or None,
                "count": unsubscribed + cancelled,
            },
        )

    async def _cancel_requests_of(self, connection_id: ConnectionId) -> int:
        now = self._clock.now()
        expires_at = int(now.timestamp() + self._settings.request_ttl_days * 86400)
        cancel = transitions.cancel(now=now, expires_at=expires_at)
        cancelled = 0
        for request in await self._requests.list_by_connection(connection_id):
            if request.status.is_terminal:
                continue
            updated = await self._requests.apply(request.key, cancel)
            if updated is not None:
                cancelled += 1
                if self._delivery is not None:
                    notice = ErrorMessage(
                        timestamp=now,
                        request_id=updated.request_id,
                        error=ErrorBody(code=ErrorCode.CANCELLED, message="request was cancelled"),
                    )
                    await self._delivery.to_request(updated, notice)
                logger.info(
                    "request cancelled on disconnect",
                    extra={
                        "connection_id": connection_id,
                        "request_id": request.request_id,
                        "action": request.action,
                        "outcome": "cancelled",
                    },
                )
        return cancelled


def _refuse(
    status_code: int, reason: str, connection_id: ConnectionId, identity: Identity | None = None
) -> ConnectRefused:
    logger.warning(
        "connection refused",
        extra={
            "connection_id": connection_id,
            "user_id": identity.user_id if identity else None,
            "tenant_id": identity.tenant_id if identity else None,
            "status": status_code,
            "reason": reason,
            "outcome": "refused",
        },
    )
    return ConnectRefused(status_code, reason)


def _header(headers: HandshakeValues, name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value if isinstance(value, str) else next(iter(value), "")
    return ""
