"""The public fakes in `streamer.testing` keep the ports' conditional semantics."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from streamer import transitions
from streamer.errors import ConnectionGone, ItemTooLarge, StoreUnavailable
from streamer.models import (
    AsyncRequest,
    ConnectionId,
    ProgressSnapshot,
    RequestError,
    RequestId,
    RequestStatus,
    TenantId,
    UserId,
    request_key,
)
from streamer.protocol import Response
from streamer.testing import (
    DEFAULT_START,
    InMemoryRequestStore,
    ManualClock,
    RecordingNotifier,
)

NOW = DEFAULT_START


def make_request(request_id: str = "r1", **changes: object) -> AsyncRequest:
    fields: dict[str, object] = {
        "key": request_key("t1", "u1", request_id),
        "request_id": RequestId(request_id),
        "connection_id": ConnectionId("c1"),
        "user_id": UserId("u1"),
        "tenant_id": TenantId("t1"),
        "action": "work",
        "payload": {"n": 1},
        "status": RequestStatus.PENDING,
        "created_at": NOW,
        "updated_at": NOW,
    }
    fields.update(changes)
    return AsyncRequest(**fields)  # type: ignore[arg-type]


async def test_enqueue_is_idempotent_by_key() -> None:
    store = InMemoryRequestStore()
    first = await store.enqueue(make_request())
    second = await store.enqueue(make_request(payload={"n": 2}))
    assert first.created
    assert not second.created
    assert second.request.payload == {"n": 1}


async def test_stored_payload_cannot_be_mutated_by_the_caller() -> None:
    store = InMemoryRequestStore()
    request = make_request(payload={"items": [1]})
    await store.enqueue(request)
    request.payload["items"].append(2)
    fetched = await store.get(request.key)
    assert fetched is not None
    fetched.payload["items"].append(3)
    again = await store.get(request.key)
    assert again is not None
    assert again.payload == {"items": [1]}


async def test_claim_wins_once_and_counts_attempts() -> None:
    store = InMemoryRequestStore()
    request = make_request()
    await store.enqueue(request)
    lease = NOW + timedelta(seconds=60)
    claimed = await store.apply(request.key, transitions.claim(now=NOW, lease_until=lease))
    assert claimed is not None
    assert (claimed.status, claimed.attempt, claimed.lease_until) == (
        RequestStatus.PROCESSING,
        1,
        lease,
    )
    assert await store.apply(request.key, transitions.claim(now=NOW, lease_until=lease)) is None


async def test_writes_under_a_stale_attempt_are_refused() -> None:
    store = InMemoryRequestStore()
    request = make_request()
    await store.enqueue(request)
    await store.apply(request.key, transitions.claim(now=NOW, lease_until=NOW))
    assert not await store.apply(
        request.key, transitions.complete(attempt=2, result=1, now=NOW, expires_at=0)
    )
    assert not await store.apply(
        request.key,
        transitions.record_progress(attempt=2, progress=ProgressSnapshot(5), now=NOW),
    )
    assert await store.apply(
        request.key, transitions.complete(attempt=1, result=1, now=NOW, expires_at=0)
    )
    assert not await store.apply(
        request.key,
        transitions.fail(attempt=1, error=RequestError("X", "x"), now=NOW, expires_at=0),
    )


async def test_cancel_only_moves_live_requests() -> None:
    store = InMemoryRequestStore()
    request = make_request()
    await store.enqueue(request)
    cancelled = await store.apply(request.key, transitions.cancel(now=NOW, expires_at=1))
    assert cancelled is not None
    assert cancelled.status is RequestStatus.CANCELLED
    assert await store.apply(request.key, transitions.cancel(now=NOW, expires_at=1)) is None
    assert (
        await store.apply(
            request_key("t1", "u1", "missing"), transitions.cancel(now=NOW, expires_at=1)
        )
        is None
    )


async def test_expired_leases_are_listed_and_requeued_only_when_expired() -> None:
    store = InMemoryRequestStore()
    request = make_request()
    await store.enqueue(request)
    await store.apply(
        request.key, transitions.claim(now=NOW, lease_until=NOW + timedelta(seconds=10))
    )
    assert await store.list_expired_leases(now=NOW, limit=10) == []
    assert not await store.apply(request.key, transitions.requeue_expired(attempt=1, now=NOW))
    later = NOW + timedelta(seconds=11)
    assert [r.key for r in await store.list_expired_leases(now=later, limit=10)] == [request.key]
    assert await store.apply(request.key, transitions.requeue_expired(attempt=1, now=later))
    stored = await store.get(request.key)
    assert stored is not None
    assert stored.status is RequestStatus.PENDING


async def test_a_result_over_the_item_limit_raises_and_writes_nothing() -> None:
    store = InMemoryRequestStore()
    request = make_request()
    await store.enqueue(request)
    await store.apply(request.key, transitions.claim(now=NOW, lease_until=NOW))
    with pytest.raises(ItemTooLarge):
        await store.apply(
            request.key,
            transitions.complete(attempt=1, result="x" * (400 * 1024), now=NOW, expires_at=0),
        )
    stored = await store.get(request.key)
    assert stored is not None
    assert (stored.status, stored.result) == (RequestStatus.PROCESSING, None)


async def test_injected_failures_raise_then_stop() -> None:
    store = InMemoryRequestStore()
    store.inject_failure("get", StoreUnavailable(), times=1)
    with pytest.raises(StoreUnavailable):
        await store.get(request_key("t", "u", "r"))
    assert await store.get(request_key("t", "u", "r")) is None


async def test_notifier_records_marks_gone_and_wakes_waiters() -> None:
    notifier = RecordingNotifier()
    cid = ConnectionId("c1")
    message = Response(timestamp=NOW, request_id="r1", data=1)
    waiter = asyncio.create_task(notifier.wait_for(lambda n: len(n.messages(cid)) == 1))
    await notifier.send(cid, message)
    await waiter
    notifier.mark_gone(cid)
    with pytest.raises(ConnectionGone):
        await notifier.send(cid, message)
    assert notifier.types(cid) == ["response"]


async def test_wait_for_times_out_with_a_clear_error() -> None:
    notifier = RecordingNotifier()
    with pytest.raises(TimeoutError, match="condition not met"):
        await notifier.wait_for(lambda n: bool(n.sent), 0)


async def test_manual_clock_sleep_advances_time_and_records_the_wait() -> None:
    clock = ManualClock()
    await clock.sleep(2.5)
    assert clock.now() == NOW + timedelta(seconds=2.5)
    assert clock.monotonic() == 2.5
    assert clock.sleeps == [2.5]
