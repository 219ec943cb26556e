"""In-memory fakes of every port, for testing actions and services without AWS.

They follow the conditional semantics documented in `streamer.ports` exactly
(the same contract tests run against them and against DynamoDB), store copies
(payloads and results round-trip through JSON, as a real store would), and let
a test inject failures. `ManualClock` makes time explicit: `sleep` advances it
instead of waiting.

Example::

    clock = ManualClock()
    notifier = RecordingNotifier()
    requests = InMemoryRequestStore()
    ...
    await notifier.wait_for(lambda n: any(m.type == "complete" for m in n.messages(cid)))
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from streamer import transitions
from streamer.errors import ConnectionGone, ItemTooLarge, UnstorableValue
from streamer.models import (
    AsyncRequest,
    Connection,
    ConnectionId,
    RequestKey,
    RequestStatus,
    Subscription,
    TenantId,
    UserId,
)
from streamer.ports import DEFAULT_PAGE_SIZE, EnqueueResult
from streamer.protocol import ServerMessage
from streamer.transitions import Transition

__all__ = [
    "DEFAULT_START",
    "MAX_ITEM_BYTES",
    "InMemoryConnectionStore",
    "InMemoryRequestStore",
    "InMemorySubscriptionStore",
    "ManualClock",
    "RecordingNotifier",
]

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
"""Where a `ManualClock` starts unless told otherwise."""
MAX_ITEM_BYTES = 400 * 1024
"""DynamoDB's item size limit; the fake request store measures items as JSON."""


class _FailureInjection:
    """Lets a test make the next call(s) of a named method raise."""

    def __init__(self) -> None:
        self._failures: dict[str, list[BaseException]] = defaultdict(list)

    def inject_failure(self, method: str, error: BaseException, *, times: int = 1) -> None:
        """Make the next `times` calls of `method` raise `error` (before doing anything).

        `method` is a method's name or, for a request store, a transition's name
        (`"claim"`, `"complete"`, …: the next `apply` of one of those).
        """
        if not callable(getattr(self, method, None)) and method not in transitions.NAMES:
            raise ValueError(f"{type(self).__name__} has no method {method!r}")
        self._failures[method].extend([error] * times)

    def clear_failures(self) -> None:
        """Forget every injected failure not yet raised."""
        self._failures.clear()

    def _maybe_fail(self, method: str) -> None:
        pending = self._failures.get(method)
        if pending:
            raise pending.pop(0)


def _json_copy(value: Any) -> Any:
    """A deep copy through JSON: what a real store gives back.

    Raises:
        UnstorableValue: what DynamoDB refuses too: NaN, infinity, numbers beyond
            38 significant digits or its exponent range, non-JSON types.
    """
    try:
        text = json.dumps(value, allow_nan=False)
    except ValueError as exc:
        raise UnstorableValue("NaN and infinity are not numbers DynamoDB can store") from exc
    except TypeError as exc:
        raise UnstorableValue("a value of an unsupported type") from exc
    copied = json.loads(text)
    _check_numbers(copied)
    return copied


def _check_numbers(value: Any) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        number = Decimal(str(value))
        # Digits as written, like boto3's context: 10**40 is 41 digits, refused.
        digits = len(number.as_tuple().digits)
        if digits > 38 or (number and not -130 <= number.adjusted() <= 125):
            raise UnstorableValue("numbers are limited to 38 significant digits")
    elif isinstance(value, dict):
        for item in value.values():
            _check_numbers(item)
    elif isinstance(value, list):
        for item in value:
            _check_numbers(item)


class InMemoryConnectionStore(_FailureInjection):
    """`ConnectionStore` in a dict. Records are frozen, so they are stored as given.

    TTL is not enforced (DynamoDB deletes expired items lazily, up to days later).
    """

    def __init__(self) -> None:
        super().__init__()
        self._records: dict[ConnectionId, Connection] = {}
        self.pages_served = 0
        """How many pages `pages_by_user` / `pages_by_tenant` have handed out."""

    async def put(self, connection: Connection) -> None:
        self._maybe_fail("put")
        self._records[connection.connection_id] = connection

    async def get(self, connection_id: ConnectionId) -> Connection | None:
        self._maybe_fail("get")
        return self._records.get(connection_id)

    async def delete(self, connection_id: ConnectionId) -> Connection | None:
        self._maybe_fail("delete")
        return self._records.pop(connection_id, None)

    async def touch(self, connection_id: ConnectionId, at: datetime) -> bool:
        self._maybe_fail("touch")
        record = self._records.get(connection_id)
        if record is None:
            return False
        self._records[connection_id] = replace(record, last_ping=at)
        return True

    async def list_by_user(self, user_id: UserId) -> list[Connection]:
        self._maybe_fail("list_by_user")
        return [c for c in self._records.values() if c.user_id == user_id]

    async def list_by_tenant(self, tenant_id: TenantId) -> list[Connection]:
        self._maybe_fail("list_by_tenant")
        return [c for c in self._records.values() if c.tenant_id == tenant_id]

    async def pages_by_user(
        self, user_id: UserId, *, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncIterator[list[Connection]]:
        async for page in self._pages(lambda c: c.user_id == user_id, page_size, "pages_by_user"):
            yield page

    async def pages_by_tenant(
        self, tenant_id: TenantId, *, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncIterator[list[Connection]]:
        async for page in self._pages(
            lambda c: c.tenant_id == tenant_id, page_size, "pages_by_tenant"
        ):
            yield page

    async def _pages(
        self, matches: Callable[[Connection], bool], page_size: int, method: str
    ) -> AsyncIterator[list[Connection]]:
        """Pages in id order, each read when asked for (as DynamoDB's
        `LastEvaluatedKey` walks an index): records put or deleted meanwhile show
        or vanish as they would there. `pages_served` counts every page."""
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        after: ConnectionId | None = None
        while True:
            self._maybe_fail(method)
            ids = sorted(
                cid
                for cid, c in self._records.items()
                if matches(c) and (after is None or cid > after)
            )
            page = [self._records[cid] for cid in ids[:page_size]]
            self.pages_served += 1
            if page:
                yield page
            if len(ids) <= page_size:
                return
            after = page[-1].connection_id

    @property
    def records(self) -> dict[ConnectionId, Connection]:
        """A snapshot of every stored record, by id (for assertions)."""
        return dict(self._records)


class InMemoryRequestStore(_FailureInjection):
    """`RequestStore` in a dict, with DynamoDB's conditional semantics.

    Every write that would make an item larger than `max_item_bytes` (measured
    as JSON) raises `ItemTooLarge` and writes nothing, as DynamoDB does.

    Args:
        max_item_bytes: the item size limit (default 400 KB, DynamoDB's).
    """

    def __init__(self, *, max_item_bytes: int = MAX_ITEM_BYTES) -> None:
        super().__init__()
        self.max_item_bytes = max_item_bytes
        self._items: dict[RequestKey, AsyncRequest] = {}

    # -- helpers ---------------------------------------------------------------

    def _store(self, request: AsyncRequest) -> AsyncRequest:
        stored = _copy_request(request)
        size = _item_size(stored)
        if size > self.max_item_bytes:
            raise ItemTooLarge(
                f"item is {size} bytes; the storage limit is {self.max_item_bytes} bytes"
            )
        self._items[stored.key] = stored
        return _copy_request(stored)

    # -- the port --------------------------------------------------------------

    async def enqueue(self, request: AsyncRequest) -> EnqueueResult:
        self._maybe_fail("enqueue")
        existing = self._items.get(request.key)
        if existing is not None:
            return EnqueueResult(created=False, request=_copy_request(existing))
        return EnqueueResult(created=True, request=self._store(request))

    async def get(self, key: RequestKey) -> AsyncRequest | None:
        self._maybe_fail("get")
        item = self._items.get(key)
        return None if item is None else _copy_request(item)

    async def apply(self, key: RequestKey, transition: Transition) -> AsyncRequest | None:
        """`transitions.apply` on the stored item; failures injected for "apply" or
        for the transition's name (`"claim"`, `"complete"`, …) are raised first."""
        self._maybe_fail("apply")
        self._maybe_fail(transition.name)
        changed = transitions.apply(self._items.get(key), transition)
        return None if changed is None else self._store(changed)

    async def list_expired_leases(self, *, now: datetime, limit: int) -> list[AsyncRequest]:
        self._maybe_fail("list_expired_leases")
        expired = [
            item
            for item in self._oldest_first()
            if item.status is RequestStatus.PROCESSING
            and item.lease_until is not None
            and item.lease_until < now
        ]
        return [_copy_request(item) for item in expired[:limit]]

    async def list_stale_pending(self, *, older_than: datetime, limit: int) -> list[AsyncRequest]:
        self._maybe_fail("list_stale_pending")
        stale = [
            item
            for item in self._oldest_first()
            if item.status is RequestStatus.PENDING and item.updated_at < older_than
        ]
        return [_copy_request(item) for item in stale[:limit]]

    async def list_by_connection(self, connection_id: ConnectionId) -> list[AsyncRequest]:
        self._maybe_fail("list_by_connection")
        return [
            _copy_request(item)
            for item in self._oldest_first()
            if item.connection_id == connection_id
        ]

    # -- for assertions ----------------------------------------------------------

    @property
    def items(self) -> dict[RequestKey, AsyncRequest]:
        """A snapshot of every stored request, by key (for assertions)."""
        return {key: _copy_request(item) for key, item in self._items.items()}

    def _oldest_first(self) -> list[AsyncRequest]:
        # sorted() is stable: equal CreatedAt keeps insertion order.
        return sorted(self._items.values(), key=lambda item: item.created_at)


def _copy_request(request: AsyncRequest) -> AsyncRequest:
    error = request.error
    if error is not None and error.details is not None:
        error = replace(error, details=_json_copy(error.details))
    return replace(
        request,
        payload=_json_copy(request.payload),
        metadata=_json_copy(request.metadata),
        progress_details=_json_copy(request.progress_details),
        result=_json_copy(request.result),
        error=error,
    )


def _item_size(request: AsyncRequest) -> int:
    body = asdict(request)
    return len(json.dumps(body, default=str, separators=(",", ":")).encode("utf-8"))


class InMemorySubscriptionStore(_FailureInjection):
    """`SubscriptionStore` in a dict keyed by (request key, connection id)."""

    def __init__(self) -> None:
        super().__init__()
        self._subscriptions: dict[tuple[RequestKey, ConnectionId], Subscription] = {}

    async def add(self, subscription: Subscription) -> None:
        self._maybe_fail("add")
        self._subscriptions[(subscription.key, subscription.connection_id)] = subscription

    async def remove(self, key: RequestKey, connection_id: ConnectionId) -> None:
        self._maybe_fail("remove")
        self._subscriptions.pop((key, connection_id), None)

    async def list_for_request(self, key: RequestKey) -> list[Subscription]:
        self._maybe_fail("list_for_request")
        return [s for (k, _), s in self._subscriptions.items() if k == key]

    async def list_for_connection(self, connection_id: ConnectionId) -> list[Subscription]:
        self._maybe_fail("list_for_connection")
        return [s for (_, c), s in self._subscriptions.items() if c == connection_id]

    async def remove_for_connection(self, connection_id: ConnectionId) -> int:
        self._maybe_fail("remove_for_connection")
        doomed = [pair for pair in self._subscriptions if pair[1] == connection_id]
        for pair in doomed:
            del self._subscriptions[pair]
        return len(doomed)

    @property
    def subscriptions(self) -> list[Subscription]:
        """Every stored subscription (for assertions)."""
        return list(self._subscriptions.values())


class RecordingNotifier:
    """`Notifier` that records every message it is asked to send.

    `mark_gone(cid)` makes sends to that connection raise `ConnectionGone`
    (as API Gateway's 410 does); `fail_sends(exc)` makes sends raise `exc`.
    Tests wait for messages with `wait_for`, never by sleeping.
    """

    def __init__(self) -> None:
        self.sent: list[tuple[ConnectionId, ServerMessage]] = []
        """Every delivered message, in order, with its connection."""
        self.gone: set[ConnectionId] = set()
        self.attempts: list[ConnectionId] = []
        """Every send attempted, delivered or not."""
        self._failures: dict[ConnectionId | None, BaseException] = {}
        self._condition: asyncio.Condition | None = None
        self._condition_loop: asyncio.AbstractEventLoop | None = None

    async def send(self, connection_id: ConnectionId, message: ServerMessage) -> None:
        self.attempts.append(connection_id)
        if connection_id in self.gone:
            raise ConnectionGone(connection_id)
        failure = self._failures.get(connection_id) or self._failures.get(None)
        if failure is not None:
            raise failure
        self.sent.append((connection_id, message))
        condition = self._get_condition()
        async with condition:
            condition.notify_all()

    def mark_gone(self, connection_id: ConnectionId) -> None:
        """From now on, sends to `connection_id` raise `ConnectionGone`."""
        self.gone.add(connection_id)

    def fail_sends(
        self, error: BaseException, *, connection_id: ConnectionId | None = None
    ) -> None:
        """Make sends (to one connection, or to all when None) raise `error`."""
        self._failures[connection_id] = error

    def clear_failures(self) -> None:
        """Undo `fail_sends`."""
        self._failures.clear()

    def messages(self, connection_id: ConnectionId) -> list[ServerMessage]:
        """What one connection received, in order."""
        return [message for cid, message in self.sent if cid == connection_id]

    def types(self, connection_id: ConnectionId) -> list[str]:
        """The `type` of each message one connection received, in order."""
        return [message.type for message in self.messages(connection_id)]

    async def wait_for(
        self, predicate: Callable[[RecordingNotifier], bool], timeout_s: float = 5.0
    ) -> None:
        """Wait until `predicate(self)` holds (checked now and after every send).

        Raises:
            TimeoutError: it did not hold within `timeout_s` seconds.
        """
        condition = self._get_condition()
        try:
            async with asyncio.timeout(timeout_s), condition:
                await condition.wait_for(lambda: predicate(self))
        except TimeoutError:
            raise TimeoutError(
                f"condition not met within {timeout_s}s; {len(self.sent)} message(s) sent"
            ) from None

    def _get_condition(self) -> asyncio.Condition:
        # One condition per event loop: pytest gives each test its own loop.
        loop = asyncio.get_running_loop()
        if self._condition is None or self._condition_loop is not loop:
            self._condition = asyncio.Condition()
            self._condition_loop = loop
        return self._condition


class ManualClock:
    """`Clock` that moves only when told: `advance`, `set`, or `sleep`.

    Args:
        start: the initial UTC time (default `DEFAULT_START`).
        monotonic_start: the initial monotonic reading.
    """

    def __init__(self, start: datetime = DEFAULT_START, *, monotonic_start: float = 0.0) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start time")
        self._now = start.astimezone(UTC)
        self._monotonic = monotonic_start
        self.sleeps: list[float] = []
        """Every `sleep` duration asked for, in order (to check backoff)."""

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        """Move wall and monotonic time forward by `seconds`."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds

    def set(self, at: datetime) -> None:
        """Set the wall time (the monotonic time moves forward by the same amount,
        never back)."""
        if at.tzinfo is None:
            raise ValueError("ManualClock needs timezone-aware times")
        delta = (at - self._now).total_seconds()
        self._now = at.astimezone(UTC)
        self._monotonic += max(delta, 0.0)

    async def sleep(self, seconds: float) -> None:
        """Advance by `seconds` (negative counts as 0), then yield to the loop once."""
        self.sleeps.append(seconds)
        self.advance(max(seconds, 0.0))
        await asyncio.sleep(0)
