"""The core services wired on the in-memory fakes by `build_services`, as each
runtime wires them: the one harness of the unit and reliability suites."""

from __future__ import annotations

import asyncio
import functools
import json
import random
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from streamer import transitions
from streamer.app import Streamer
from streamer.auth import TokenVerifier
from streamer.frames import Close, Send, Verdict
from streamer.models import (
    AsyncRequest,
    Connection,
    ConnectionId,
    ConnectionMetadata,
    RequestKey,
    RequestStatus,
    Subscription,
    TenantId,
    UserId,
    request_key,
)
from streamer.ports import Clock, RequestStore
from streamer.processor import Outcome, Processor
from streamer.protocol import ServerMessage, encode
from streamer.services import Services, build_services
from streamer.settings import Settings
from streamer.testing import (
    InMemoryConnectionStore,
    InMemoryRequestStore,
    InMemorySubscriptionStore,
    ManualClock,
    RecordingNotifier,
)
from streamer.tokens import generate_rsa_key_pair
from streamer.transitions import Transition

JITTER_SEED = 7
"""Every processor's backoff jitter is seeded, so a run is repeatable."""


@functools.cache
def key_pair() -> tuple[str, str]:
    """The harness's (private, public) PEM pair: one per test process (generating
    RSA keys is slow); mint tokens with the private one."""
    return generate_rsa_key_pair()


def verifier(clock: Clock) -> TokenVerifier:
    """A token verifier on the harness's key, reading `clock`."""
    return TokenVerifier(key_pair()[1], clock=clock)


@dataclass
class Core:
    """Every core service over one set of fakes, built by `build_services`.

    After replacing a port (`core.requests = HeldWrites()`), call
    `core.__post_init__()` to build the services on it again.

    Args:
        app: the actions.
        settings: the core's settings (`make_core` takes overrides).
        clock: the injected clock (manual: tests move it).
        connections, subscriptions: the fake stores.
        store: the fake request store.
        notifier: what delivery sends through (a `RecordingNotifier` or a fault
            wrapper; `received` needs one that records).
        requests: the request store the services see; defaults to `store` (pass a
            fault-injecting wrapper around it).
    """

    app: Streamer
    settings: Settings = field(default_factory=Settings)
    clock: ManualClock = field(default_factory=ManualClock)
    connections: InMemoryConnectionStore = field(default_factory=InMemoryConnectionStore)
    store: InMemoryRequestStore = field(default_factory=InMemoryRequestStore)
    subscriptions: InMemorySubscriptionStore = field(default_factory=InMemorySubscriptionStore)
    notifier: Any = field(default_factory=RecordingNotifier)
    requests: RequestStore | None = None

    def __post_init__(self) -> None:
        if self.requests is None:
            self.requests = self.store
        self.services = self.build()
        self.delivery = self.services.delivery
        self.router = self.services.router
        self.processor = self.services.processor
        self.sweeper = self.services.sweeper
        self.connection_service = self.services.connections
        self.pusher = self.services.push

    def build(self) -> Services:
        """A new set of services on the same ports (a new container, say)."""
        return build_services(
            app=self.app,
            settings=self.settings,
            connections=self.connections,
            requests=self.requests,
            subscriptions=self.subscriptions,
            notifier=self.notifier,
            clock=self.clock,
            verifier=verifier(self.clock),
            rng=random.Random(JITTER_SEED),
        )

    def new_processor(self) -> Processor:
        """A fresh processor on the same ports (another Lambda container)."""
        return self.build().processor

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
            endpoint="http://127.0.0.1:3002",
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

    def spy_transitions(self, name: str, field: str) -> tuple[list[Any], asyncio.Event]:
        """What each `name` transition applied from now on sets `field` to, and an
        event set at each (the requests store's `apply` is wrapped)."""
        seen: list[Any] = []
        applied = asyncio.Event()
        original = self.requests.apply

        async def spy(key: RequestKey, transition: Transition) -> AsyncRequest | None:
            if transition.name == name:
                seen.append(transition.sets[field])
                applied.set()
            return await original(key, transition)

        self.requests.apply = spy  # type: ignore[method-assign]
        return seen, applied

    async def follow_elsewhere(self, key: RequestKey, *connection_ids: str) -> AsyncRequest:
        """What another process's `subscribe` leaves in the stores: each
        subscription, then the request's mark. Returns the request as marked."""
        for cid in connection_ids:
            await self.subscriptions.add(
                Subscription(
                    key=key,
                    connection_id=ConnectionId(cid),
                    created_at=self.clock.now(),
                    expires_at=0,
                )
            )
        marked = await self.requests.apply(key, transitions.follow())
        assert marked is not None, f"no stored request {key!r} to mark"
        return marked


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


def wire(reply: ServerMessage | Verdict) -> dict[str, Any]:
    """A server message (or the router's `Send` verdict) as the JSON object the
    client receives (it must be sendable as UTF-8: a frame that cannot be sent
    is as bad as no reply)."""
    if isinstance(reply, Close):
        raise AssertionError(f"the router closed the socket: {reply}")
    text = reply.text if isinstance(reply, Send) else encode(reply)
    text.encode("utf-8")
    decoded: dict[str, Any] = json.loads(text)
    return decoded


def without_timestamp(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "timestamp"}


__all__ = [
    "Core",
    "HeldWrites",
    "RequestStatus",
    "key_pair",
    "make_core",
    "verifier",
    "wire",
    "without_timestamp",
]
