"""The core services wired on the in-memory fakes, for the `test_core_*` tests."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from streamer.app import Streamer
from streamer.delivery import Delivery
from streamer.models import (
    AsyncRequest,
    Connection,
    ConnectionId,
    ConnectionMetadata,
    RequestKey,
    RequestStatus,
    TenantId,
    UserId,
    request_key,
)
from streamer.processor import Outcome, Processor
from streamer.protocol import ServerMessage, encode
from streamer.ratelimit import RateLimiter
from streamer.router import Router
from streamer.settings import Settings
from streamer.sweeper import Sweeper
from streamer.testing import (
    InMemoryConnectionStore,
    InMemoryRequestStore,
    InMemorySubscriptionStore,
    ManualClock,
    RecordingNotifier,
)
from streamer.transitions import Transition


@dataclass
class Core:
    """Every core service over one set of fakes."""

    app: Streamer
    settings: Settings
    clock: ManualClock = field(default_factory=ManualClock)
    connections: InMemoryConnectionStore = field(default_factory=InMemoryConnectionStore)
    requests: InMemoryRequestStore = field(default_factory=InMemoryRequestStore)
    subscriptions: InMemorySubscriptionStore = field(default_factory=InMemorySubscriptionStore)
    notifier: RecordingNotifier = field(default_factory=RecordingNotifier)

    def __post_init__(self) -> None:
        self.delivery = Delivery(
            notifier=self.notifier,
            connections=self.connections,
            subscriptions=self.subscriptions,
            clock=self.clock,
            subscriber_cache_s=self.settings.progress_persist_interval_s,
        )
        self.limiter = RateLimiter(per_minute=self.settings.rate_limit_per_minute, clock=self.clock)
        self.router = Router(
            app=self.app,
            requests=self.requests,
            subscriptions=self.subscriptions,
            delivery=self.delivery,
            limiter=self.limiter,
            clock=self.clock,
            settings=self.settings,
        )
        self.processor = self.new_processor()
        self.sweeper = Sweeper(
            requests=self.requests, delivery=self.delivery, clock=self.clock, settings=self.settings
        )

    def new_processor(self) -> Processor:
        return Processor(
            app=self.app,
            requests=self.requests,
            delivery=self.delivery,
            clock=self.clock,
            settings=self.settings,
            rng=random.Random(7),
        )

    async def connect(
        self,
        connection_id: str = "c1",
        *,
        user: str = "u1",
        tenant: str = "t1",
        permissions: tuple[str, ...] = (),
    ) -> Connection:
        now = self.clock.now()
        connection = Connection(
            connection_id=ConnectionId(connection_id),
            user_id=UserId(user),
            tenant_id=TenantId(tenant),
            endpoint="http://localhost:3002",
            connected_at=now,
            last_ping=now,
            expires_at=int((now + timedelta(hours=24)).timestamp()),
            metadata=ConnectionMetadata(permissions=permissions),
        )
        await self.connections.put(connection)
        return connection

    async def send(
        self,
        connection: Connection,
        action: str,
        payload: dict[str, Any] | None = None,
        *,
        id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Route one frame; the reply as the client would see it (encoded JSON)."""
        frame: dict[str, Any] = {"action": action}
        if id is not None:
            frame["id"] = id
        if payload is not None:
            frame["payload"] = payload
        if metadata is not None:
            frame["metadata"] = metadata
        reply = await self.router.route(connection, json.dumps(frame))
        return wire(reply)

    def key(self, request_id: str, *, user: str = "u1", tenant: str = "t1") -> RequestKey:
        return request_key(tenant, user, request_id)

    async def stored(
        self, request_id: str, *, user: str = "u1", tenant: str = "t1"
    ) -> AsyncRequest:
        request = await self.requests.get(self.key(request_id, user=user, tenant=tenant))
        assert request is not None, f"no stored request {request_id!r}"
        return request

    async def process(self, request_id: str, *, user: str = "u1", tenant: str = "t1") -> Outcome:
        return await self.processor.run(self.key(request_id, user=user, tenant=tenant))

    def received(self, connection_id: str = "c1") -> list[dict[str, Any]]:
        return [wire(m) for m in self.notifier.messages(ConnectionId(connection_id))]


class HeldWrites(InMemoryRequestStore):
    """Snapshot writes wait on `hold` (when set) before landing; counts them."""

    def __init__(self) -> None:
        super().__init__()
        self.hold: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.writes: list[tuple[float, str]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def apply(self, key: RequestKey, transition: Transition) -> AsyncRequest | None:
        if transition.name != "record_progress":
            return await super().apply(key, transition)
        self.writes.append((transition.sets["progress"], transition.sets["progress_message"]))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            self.started.set()
            if self.hold is not None:
                await self.hold.wait()
            return await super().apply(key, transition)
        finally:
            self.in_flight -= 1


def make_core(app: Streamer, **settings: Any) -> Core:
    return Core(app=app, settings=replace(Settings(), **settings))


def wire(message: ServerMessage) -> dict[str, Any]:
    """A server message as the JSON object the client receives."""
    decoded: dict[str, Any] = json.loads(encode(message))
    return decoded


def without_timestamp(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "timestamp"}


__all__ = ["Core", "HeldWrites", "RequestStatus", "make_core", "wire", "without_timestamp"]
