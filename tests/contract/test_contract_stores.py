"""The store contract of `streamer.ports`, run against the in-memory fakes and DynamoDB.

One suite, two backends: whatever the fakes let a service test rely on, the
DynamoDB adapters on a moto server do too.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dynamodb_sessions import SESSION_KINDS

from streamer import transitions
from streamer.errors import ItemTooLarge
from streamer.models import (
    AsyncRequest,
    Connection,
    ConnectionId,
    ConnectionMetadata,
    ProgressSnapshot,
    RequestError,
    RequestId,
    RequestKey,
    RequestStatus,
    Subscription,
    TenantId,
    UserId,
    request_key,
)
from streamer.ports import ConnectionStore, RequestStore, SubscriptionStore
from streamer.testing import (
    InMemoryConnectionStore,
    InMemoryRequestStore,
    InMemorySubscriptionStore,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
EXPIRES = int((T0 + timedelta(days=7)).timestamp())
OVER_400_KB = "x" * (410 * 1024)


@dataclass(frozen=True, slots=True)
class Stores:
    """The three stores of one backend."""

    connections: ConnectionStore
    requests: RequestStore
    subscriptions: SubscriptionStore


@pytest.fixture(params=["memory", *(f"dynamodb-{kind}" for kind in SESSION_KINDS)])
def stores(request: pytest.FixtureRequest) -> Stores:
    """The stores of each backend in turn: the fakes, then DynamoDB on moto through
    each kind of session."""
    if request.param == "memory":
        return Stores(
            InMemoryConnectionStore(), InMemoryRequestStore(), InMemorySubscriptionStore()
        )
    kind = request.param.removeprefix("dynamodb-")
    dynamodb = request.getfixturevalue(f"{kind}_stores")
    return Stores(dynamodb.connections, dynamodb.requests, dynamodb.subscriptions)


def at(seconds: float) -> datetime:
    """T0 plus `seconds`."""
    return T0 + timedelta(seconds=seconds)


def a_connection(
    cid: str = "WyHPAfymhcwCENw=", user: str = "user-1", tenant: str = "tenant-1"
) -> Connection:
    return Connection(
        connection_id=ConnectionId(cid),
        user_id=UserId(user),
        tenant_id=TenantId(tenant),
        endpoint="https://abc.execute-api.us-east-1.amazonaws.com/prod",
        connected_at=T0,
        last_ping=T0,
        expires_at=EXPIRES,
        metadata=ConnectionMetadata(
            user_agent="Mozilla/5.0 ü", ip_address="203.0.113.7", permissions=("read", "write")
        ),
    )


def a_request(
    rid: str = "req-1",
    *,
    user: str = "user-1",
    tenant: str = "tenant-1",
    connection: str = "conn-1",
    created: datetime = T0,
    payload: dict[str, Any] | None = None,
) -> AsyncRequest:
    return AsyncRequest(
        key=request_key(tenant, user, rid),
        request_id=RequestId(rid),
        connection_id=ConnectionId(connection),
        user_id=UserId(user),
        tenant_id=TenantId(tenant),
        action="generate_report",
        payload={"report": "q1"} if payload is None else payload,
        status=RequestStatus.PENDING,
        created_at=created,
        updated_at=created,
        max_retries=3,
        timeout_s=300.0,
        metadata={"source": "test"},
    )


async def enqueued(stores: Stores, request: AsyncRequest | None = None) -> AsyncRequest:
    request = request or a_request()
    result = await stores.requests.enqueue(request)
    assert result.created
    return result.request


async def claimed(stores: Stores, request: AsyncRequest | None = None) -> AsyncRequest:
    request = await enqueued(stores, request)
    claim = await stores.requests.apply(
        request.key, transitions.claim(now=at(1), lease_until=at(301))
    )
    assert claim is not None
    return claim


ERROR = RequestError(code="PROCESSING_FAILED", message="upstream timed out", details={"try": 1})


# --- connections ---------------------------------------------------------------------


async def test_put_connection_then_get_returns_the_same_record(stores: Stores) -> None:
    connection = a_connection()
    await stores.connections.put(connection)

    assert await stores.connections.get(connection.connection_id) == connection


async def test_get_unknown_connection_is_none(stores: Stores) -> None:
    assert await stores.connections.get(ConnectionId("nope")) is None


async def test_delete_connection_returns_what_was_deleted(stores: Stores) -> None:
    connection = a_connection()
    await stores.connections.put(connection)

    deleted = await stores.connections.delete(connection.connection_id)

    assert deleted == connection
    assert await stores.connections.get(connection.connection_id) is None


async def test_delete_unknown_connection_is_none(stores: Stores) -> None:
    assert await stores.connections.delete(ConnectionId("nope")) is None


async def test_touch_sets_last_ping_only(stores: Stores) -> None:
    connection = a_connection()
    await stores.connections.put(connection)

    assert await stores.connections.touch(connection.connection_id, at(42)) is True

    assert await stores.connections.get(connection.connection_id) == replace(
        connection, last_ping=at(42)
    )


async def test_touch_of_unknown_connection_is_false_and_creates_nothing(stores: Stores) -> None:
    assert await stores.connections.touch(ConnectionId("ghost"), at(1)) is False
    assert await stores.connections.get(ConnectionId("ghost")) is None


async def test_connections_are_listed_by_user_and_by_tenant(stores: Stores) -> None:
    mine = [a_connection("c1", "alice", "acme"), a_connection("c2", "alice", "acme")]
    colleague = a_connection("c3", "bob", "acme")
    stranger = a_connection("c4", "carol", "globex")
    for connection in [*mine, colleague, stranger]:
        await stores.connections.put(connection)

    by_user = await stores.connections.list_by_user(UserId("alice"))
    by_tenant = await stores.connections.list_by_tenant(TenantId("acme"))

    assert sorted(by_user, key=lambda c: c.connection_id) == mine
    assert {c.connection_id for c in by_tenant} == {"c1", "c2", "c3"}
    assert await stores.connections.list_by_user(UserId("nobody")) == []


async def test_connections_are_paged_by_tenant_and_by_user(stores: Stores) -> None:
    """25 of a tenant at pages of 10: every one once, no page over 10, at least three."""
    for i in range(25):
        await stores.connections.put(a_connection(f"c{i:02d}", f"u{i % 2}", "acme"))
    await stores.connections.put(a_connection("other", "u0", "globex"))

    tenant_pages = [
        list(page)
        async for page in stores.connections.pages_by_tenant(TenantId("acme"), page_size=10)
    ]
    user_pages = [
        list(page) async for page in stores.connections.pages_by_user(UserId("u0"), page_size=4)
    ]

    assert len(tenant_pages) >= 3
    assert all(0 < len(page) <= 10 for page in tenant_pages)
    listed = sorted(c.connection_id for page in tenant_pages for c in page)
    assert listed == [f"c{i:02d}" for i in range(25)]
    assert all(0 < len(page) <= 4 for page in user_pages)
    assert sorted(c.connection_id for page in user_pages for c in page) == sorted(
        [f"c{i:02d}" for i in range(0, 25, 2)] + ["other"]
    )
    nobody = [p async for p in stores.connections.pages_by_tenant(TenantId("nobody"))]
    assert nobody == []


# --- requests: enqueue and read ------------------------------------------------------


async def test_enqueue_stores_a_pending_request(stores: Stores) -> None:
    request = a_request()

    result = await stores.requests.enqueue(request)

    assert result.created is True
    assert result.request == request
    assert await stores.requests.get(request.key) == request


async def test_enqueue_of_an_existing_key_returns_the_stored_request(stores: Stores) -> None:
    first = await enqueued(stores)
    await stores.requests.apply(first.key, transitions.claim(now=at(1), lease_until=at(60)))

    again = await stores.requests.enqueue(replace(first, payload={"report": "other"}))

    assert again.created is False
    assert again.request.payload == {"report": "q1"}
    assert again.request.status is RequestStatus.PROCESSING


async def test_same_client_id_from_another_user_is_another_request(stores: Stores) -> None:
    mine = await enqueued(stores, a_request("same", user="alice"))
    theirs = await stores.requests.enqueue(a_request("same", user="bob"))

    assert theirs.created is True
    assert theirs.request.key != mine.key


async def test_get_unknown_request_is_none(stores: Stores) -> None:
    assert await stores.requests.get(RequestKey("t#u#nope")) is None


PAYLOADS: dict[str, dict[str, Any]] = {
    "floats": {"pi": 3.14159, "tenth": 0.1, "tiny": 1e-7, "huge": 1e100, "neg": -2.5},
    "integers": {"zero": 0, "big": 2**62, "neg": -17},
    "nested": {"a": {"b": [1, {"c": [True, False, None]}, "d"]}, "list": [[], [[]]]},
    "unicode": {"text": "héllo wörld ✓ 日本語 🎉", "ключ": "значение"},
    "empty": {"map": {}, "list": [], "string": ""},
    "none": {"nothing": None},
}


@pytest.mark.parametrize("name", sorted(PAYLOADS))
async def test_payload_round_trips_exactly(stores: Stores, name: str) -> None:
    request = a_request(payload=PAYLOADS[name])
    await stores.requests.enqueue(request)

    stored = await stores.requests.get(request.key)

    assert stored is not None
    assert stored.payload == PAYLOADS[name]
    assert _types(stored.payload) == _types(PAYLOADS[name])


def _types(value: Any) -> Any:
    """The JSON kinds in a value (int and float both count as a number)."""
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


@pytest.mark.parametrize(
    "result",
    [{"rows": [1, 2.5, "three"], "summary": {}}, [1, 2, 3], "done", 42, 0.75, None, True],
    ids=["map", "list", "string", "int", "float", "none", "bool"],
)
async def test_result_round_trips_exactly(stores: Stores, result: Any) -> None:
    request = await claimed(stores)

    assert await stores.requests.apply(
        request.key, transitions.complete(attempt=1, result=result, now=at(5), expires_at=EXPIRES)
    )

    stored = await stores.requests.get(request.key)
    assert stored is not None
    assert stored.result == result


async def test_enqueue_over_400_kb_raises_item_too_large_and_stores_nothing(
    stores: Stores,
) -> None:
    request = a_request(payload={"blob": OVER_400_KB})

    with pytest.raises(ItemTooLarge):
        await stores.requests.enqueue(request)

    assert await stores.requests.get(request.key) is None


# --- requests: claim -------------------------------------------------------------------


async def test_claim_moves_pending_to_processing_with_lease_and_attempt(stores: Stores) -> None:
    request = await enqueued(stores)

    claim = await stores.requests.apply(
        request.key, transitions.claim(now=at(1), lease_until=at(301))
    )

    assert claim is not None
    assert claim.status is RequestStatus.PROCESSING
    assert claim.attempt == 1
    assert claim.lease_until == at(301)
    assert claim.processing_started == at(1)
    assert claim.updated_at == at(1)
    assert await stores.requests.get(request.key) == claim


async def test_second_claim_is_refused(stores: Stores) -> None:
    request = await claimed(stores)

    assert (
        await stores.requests.apply(request.key, transitions.claim(now=at(2), lease_until=at(302)))
        is None
    )


async def test_claim_of_unknown_request_is_none(stores: Stores) -> None:
    assert (
        await stores.requests.apply(
            RequestKey("t#u#x"), transitions.claim(now=at(1), lease_until=at(2))
        )
        is None
    )


async def test_two_concurrent_claims_of_one_request_exactly_one_wins(stores: Stores) -> None:
    request = await enqueued(stores)

    results = await asyncio.gather(
        *(
            stores.requests.apply(request.key, transitions.claim(now=at(1), lease_until=at(60)))
            for _ in range(2)
        )
    )

    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert winners[0].attempt == 1


# --- requests: progress and retry ------------------------------------------------------


async def test_record_progress_saves_the_snapshot(stores: Stores) -> None:
    request = await claimed(stores)

    saved = await stores.requests.apply(
        request.key,
        transitions.record_progress(
            attempt=1,
            progress=ProgressSnapshot(42.5, "halfway ✓", {"rows": 425, "eta_s": 1.5}),
            now=at(3),
        ),
    )

    stored = await stores.requests.get(request.key)
    assert saved is not None
    assert saved == stored
    assert stored is not None
    assert (stored.progress, stored.progress_message, stored.progress_details) == (
        42.5,
        "halfway ✓",
        {"rows": 425, "eta_s": 1.5},
    )
    assert stored.updated_at == at(3)


async def test_record_progress_with_a_stale_attempt_is_refused(stores: Stores) -> None:
    request = await claimed(stores)

    saved = await stores.requests.apply(
        request.key,
        transitions.record_progress(attempt=2, progress=ProgressSnapshot(10), now=at(3)),
    )

    assert saved is None
    assert (await stores.requests.get(request.key)) == request


async def test_record_progress_of_a_pending_request_is_refused(stores: Stores) -> None:
    request = await enqueued(stores)

    saved = await stores.requests.apply(
        request.key,
        transitions.record_progress(attempt=0, progress=ProgressSnapshot(10), now=at(3)),
    )

    assert saved is None


async def test_record_progress_over_400_kb_is_refused_and_keeps_the_item(stores: Stores) -> None:
    request = await claimed(stores)

    with pytest.raises(ItemTooLarge):
        await stores.requests.apply(
            request.key,
            transitions.record_progress(
                attempt=1, progress=ProgressSnapshot(10, "", {"blob": OVER_400_KB}), now=at(3)
            ),
        )

    assert await stores.requests.get(request.key) == request


async def test_record_retry_counts_keeps_the_error_and_extends_the_lease(stores: Stores) -> None:
    request = await claimed(stores)

    assert await stores.requests.apply(
        request.key,
        transitions.record_retry(attempt=1, error=ERROR, now=at(10), lease_until=at(400)),
    )
    assert await stores.requests.apply(
        request.key,
        transitions.record_retry(attempt=1, error=ERROR, now=at(20), lease_until=at(500)),
    )

    stored = await stores.requests.get(request.key)
    assert stored is not None
    assert stored.retry_count == 2
    assert stored.error == ERROR
    assert stored.lease_until == at(500)
    assert stored.status is RequestStatus.PROCESSING


async def test_record_retry_with_a_stale_attempt_is_refused(stores: Stores) -> None:
    request = await claimed(stores)

    refused = await stores.requests.apply(
        request.key,
        transitions.record_retry(attempt=7, error=ERROR, now=at(10), lease_until=at(400)),
    )

    assert refused is None
    assert await stores.requests.get(request.key) == request


# --- requests: complete, fail, release -------------------------------------------------


async def test_complete_stores_result_and_ttl(stores: Stores) -> None:
    request = await claimed(stores)

    done = await stores.requests.apply(
        request.key,
        transitions.complete(attempt=1, result={"url": "s3://r"}, now=at(9), expires_at=EXPIRES),
    )

    stored = await stores.requests.get(request.key)
    assert done is not None
    assert stored is not None
    assert stored.status is RequestStatus.COMPLETED
    assert stored.result == {"url": "s3://r"}
    assert stored.completed_at == at(9)
    assert stored.expires_at == EXPIRES


async def test_a_completed_request_stores_100_with_the_actions_last_message(
    stores: Stores,
) -> None:
    request = await claimed(stores)
    await stores.requests.apply(
        request.key,
        transitions.record_progress(
            attempt=1, progress=ProgressSnapshot(90, "Generating"), now=at(3)
        ),
    )
    last = ProgressSnapshot(95.0, "Uploading report", {"part": 2})

    done = await stores.requests.apply(
        request.key,
        transitions.complete(
            attempt=1, result={"url": "s3://r"}, now=at(9), expires_at=EXPIRES, progress=last
        ),
    )

    stored = await stores.requests.get(request.key)
    assert done == stored
    assert stored is not None
    assert (stored.progress, stored.progress_message, stored.progress_details) == (
        100.0,
        "Uploading report",
        {"part": 2},
    )


async def test_a_failed_or_cancelled_request_keeps_its_last_real_progress(
    stores: Stores,
) -> None:
    failing = await claimed(stores, a_request("failing"))
    cancelled = await claimed(stores, a_request("cancelled"))
    for request in (failing, cancelled):
        await stores.requests.apply(
            request.key,
            transitions.record_progress(
                attempt=1, progress=ProgressSnapshot(30, "stored"), now=at(3)
            ),
        )

    await stores.requests.apply(
        failing.key,
        transitions.fail(
            attempt=1,
            error=ERROR,
            now=at(9),
            expires_at=EXPIRES,
            progress=ProgressSnapshot(45.0, "reported since"),
        ),
    )
    await stores.requests.apply(cancelled.key, transitions.cancel(now=at(9), expires_at=EXPIRES))

    failed = await stores.requests.get(failing.key)
    kept = await stores.requests.get(cancelled.key)
    assert failed is not None
    assert kept is not None
    assert (failed.status, failed.progress, failed.progress_message) == (
        RequestStatus.FAILED,
        45.0,
        "reported since",
    )
    assert (kept.status, kept.progress, kept.progress_message) == (
        RequestStatus.CANCELLED,
        30.0,
        "stored",
    )


async def test_complete_twice_is_refused_the_second_time(stores: Stores) -> None:
    request = await claimed(stores)
    await stores.requests.apply(
        request.key, transitions.complete(attempt=1, result=1, now=at(9), expires_at=EXPIRES)
    )

    again = await stores.requests.apply(
        request.key, transitions.complete(attempt=1, result=2, now=at(10), expires_at=EXPIRES)
    )

    stored = await stores.requests.get(request.key)
    assert again is None
    assert stored is not None
    assert stored.result == 1


async def test_complete_of_a_pending_request_is_refused(stores: Stores) -> None:
    request = await enqueued(stores)

    refused = await stores.requests.apply(
        request.key, transitions.complete(attempt=0, result=1, now=at(9), expires_at=EXPIRES)
    )

    assert refused is None
    assert await stores.requests.get(request.key) == request


async def test_complete_after_cancel_is_refused(stores: Stores) -> None:
    request = await claimed(stores)
    await stores.requests.apply(request.key, transitions.cancel(now=at(5), expires_at=EXPIRES))

    refused = await stores.requests.apply(
        request.key, transitions.complete(attempt=1, result="late", now=at(9), expires_at=EXPIRES)
    )

    stored = await stores.requests.get(request.key)
    assert refused is None
    assert stored is not None
    assert stored.status is RequestStatus.CANCELLED
    assert stored.result is None


async def test_complete_with_a_stale_attempt_is_refused(stores: Stores) -> None:
    request = await claimed(stores)
    await stores.requests.apply(request.key, transitions.release(attempt=1, now=at(5)))
    await stores.requests.apply(request.key, transitions.claim(now=at(6), lease_until=at(600)))

    refused = await stores.requests.apply(
        request.key, transitions.complete(attempt=1, result="stale", now=at(9), expires_at=EXPIRES)
    )

    stored = await stores.requests.get(request.key)
    assert refused is None
    assert stored is not None
    assert (stored.status, stored.attempt, stored.result) == (RequestStatus.PROCESSING, 2, None)


async def test_complete_over_400_kb_raises_and_leaves_the_previous_item(stores: Stores) -> None:
    request = await claimed(stores)

    with pytest.raises(ItemTooLarge):
        await stores.requests.apply(
            request.key,
            transitions.complete(
                attempt=1, result={"blob": OVER_400_KB}, now=at(9), expires_at=EXPIRES
            ),
        )

    assert await stores.requests.get(request.key) == request


async def test_complete_just_under_the_limit_is_stored(stores: Stores) -> None:
    request = await claimed(stores)
    blob = "y" * (380 * 1024)

    assert await stores.requests.apply(
        request.key,
        transitions.complete(attempt=1, result={"blob": blob}, now=at(9), expires_at=EXPIRES),
    )

    stored = await stores.requests.get(request.key)
    assert stored is not None
    assert stored.result == {"blob": blob}


async def test_fail_stores_the_error_and_ttl(stores: Stores) -> None:
    request = await claimed(stores)

    failed = await stores.requests.apply(
        request.key, transitions.fail(attempt=1, error=ERROR, now=at(9), expires_at=EXPIRES)
    )

    stored = await stores.requests.get(request.key)
    assert failed is not None
    assert stored is not None
    assert stored.status is RequestStatus.FAILED
    assert stored.error == ERROR
    assert stored.completed_at == at(9)
    assert stored.expires_at == EXPIRES


async def test_fail_after_complete_is_refused(stores: Stores) -> None:
    request = await claimed(stores)
    await stores.requests.apply(
        request.key, transitions.complete(attempt=1, result=1, now=at(9), expires_at=EXPIRES)
    )

    refused = await stores.requests.apply(
        request.key, transitions.fail(attempt=1, error=ERROR, now=at(10), expires_at=EXPIRES)
    )

    stored = await stores.requests.get(request.key)
    assert refused is None
    assert stored is not None
    assert stored.status is RequestStatus.COMPLETED


async def test_error_without_details_round_trips(stores: Stores) -> None:
    request = await claimed(stores)
    error = RequestError(code="TIMEOUT", message="took too long")

    await stores.requests.apply(
        request.key, transitions.fail(attempt=1, error=error, now=at(9), expires_at=EXPIRES)
    )

    stored = await stores.requests.get(request.key)
    assert stored is not None
    assert stored.error == error


async def test_release_hands_the_request_back_for_another_claim(stores: Stores) -> None:
    request = await claimed(stores)

    released = await stores.requests.apply(request.key, transitions.release(attempt=1, now=at(5)))
    pending = await stores.requests.get(request.key)
    reclaimed = await stores.requests.apply(
        request.key, transitions.claim(now=at(6), lease_until=at(306))
    )

    assert released is not None
    assert pending is not None
    assert pending.status is RequestStatus.PENDING
    assert pending.lease_until is None
    assert reclaimed is not None
    assert reclaimed.attempt == 2


async def test_release_with_a_stale_attempt_is_refused(stores: Stores) -> None:
    request = await claimed(stores)

    assert (
        await stores.requests.apply(request.key, transitions.release(attempt=2, now=at(5))) is None
    )
    assert await stores.requests.get(request.key) == request


# --- requests: cancel ------------------------------------------------------------------


async def test_cancel_of_a_pending_request_returns_it_cancelled(stores: Stores) -> None:
    request = await enqueued(stores)

    cancelled = await stores.requests.apply(
        request.key, transitions.cancel(now=at(5), expires_at=EXPIRES)
    )

    assert cancelled is not None
    assert cancelled.status is RequestStatus.CANCELLED
    assert cancelled.completed_at == at(5)
    assert cancelled.expires_at == EXPIRES
    assert cancelled.error is not None
    assert cancelled.error.code == "CANCELLED"
    assert await stores.requests.get(request.key) == cancelled


async def test_cancel_of_a_processing_request_returns_it_cancelled(stores: Stores) -> None:
    request = await claimed(stores)

    cancelled = await stores.requests.apply(
        request.key, transitions.cancel(now=at(5), expires_at=EXPIRES)
    )

    assert cancelled is not None
    assert cancelled.status is RequestStatus.CANCELLED
    assert cancelled.attempt == 1


@pytest.mark.parametrize("finish", ["complete", "fail", "cancel"])
async def test_cancel_of_a_terminal_request_is_none(stores: Stores, finish: str) -> None:
    request = await claimed(stores)
    if finish == "complete":
        await stores.requests.apply(
            request.key, transitions.complete(attempt=1, result=1, now=at(3), expires_at=EXPIRES)
        )
    elif finish == "fail":
        await stores.requests.apply(
            request.key, transitions.fail(attempt=1, error=ERROR, now=at(3), expires_at=EXPIRES)
        )
    else:
        await stores.requests.apply(request.key, transitions.cancel(now=at(3), expires_at=EXPIRES))
    before = await stores.requests.get(request.key)

    assert (
        await stores.requests.apply(
            request.key, transitions.cancel(now=at(5), expires_at=EXPIRES + 1)
        )
        is None
    )
    assert await stores.requests.get(request.key) == before


async def test_cancel_of_an_unknown_request_is_none(stores: Stores) -> None:
    assert (
        await stores.requests.apply(
            RequestKey("t#u#x"), transitions.cancel(now=at(5), expires_at=1)
        )
        is None
    )


# --- requests: expired leases ----------------------------------------------------------


async def test_expired_leases_are_listed_oldest_first_up_to_the_limit(stores: Stores) -> None:
    # The oldest PROCESSING request still holds its lease: a filtered page skips it.
    live = await claimed(stores, a_request("live", created=at(0)))
    await stores.requests.apply(
        live.key,
        transitions.record_retry(attempt=1, error=ERROR, now=at(2), lease_until=at(10_000)),
    )
    expired = [await claimed(stores, a_request(f"old-{i}", created=at(i + 1))) for i in range(3)]
    await enqueued(stores, a_request("pending", created=at(0.5)))

    listed = await stores.requests.list_expired_leases(now=at(302), limit=2)
    everything = await stores.requests.list_expired_leases(now=at(302), limit=10)
    none_yet = await stores.requests.list_expired_leases(now=at(300), limit=10)

    assert [r.key for r in listed] == [expired[0].key, expired[1].key]
    assert [r.key for r in everything] == [r.key for r in expired]
    assert none_yet == []


async def test_requeue_before_the_lease_expires_is_refused(stores: Stores) -> None:
    request = await claimed(stores)

    refused = await stores.requests.apply(
        request.key, transitions.requeue_expired(attempt=1, now=at(300))
    )

    assert refused is None
    assert await stores.requests.get(request.key) == request


async def test_requeue_after_the_lease_expired_makes_it_pending(stores: Stores) -> None:
    request = await claimed(stores)

    requeued = await stores.requests.apply(
        request.key, transitions.requeue_expired(attempt=1, now=at(302))
    )

    stored = await stores.requests.get(request.key)
    assert requeued is not None
    assert stored is not None
    assert stored.status is RequestStatus.PENDING
    assert stored.lease_until is None
    assert stored.attempt == 1
    assert stored.updated_at == at(302)


async def test_requeue_with_a_stale_attempt_is_refused(stores: Stores) -> None:
    request = await claimed(stores)

    assert (
        await stores.requests.apply(
            request.key, transitions.requeue_expired(attempt=2, now=at(302))
        )
        is None
    )


async def test_requeue_of_a_completed_request_is_refused(stores: Stores) -> None:
    request = await claimed(stores)
    await stores.requests.apply(
        request.key, transitions.complete(attempt=1, result=1, now=at(9), expires_at=EXPIRES)
    )

    assert (
        await stores.requests.apply(
            request.key, transitions.requeue_expired(attempt=1, now=at(999))
        )
        is None
    )


async def test_fail_expired_only_after_the_lease_expired(stores: Stores) -> None:
    request = await claimed(stores)

    early = await stores.requests.apply(
        request.key,
        transitions.fail_expired(attempt=1, error=ERROR, now=at(300), expires_at=EXPIRES),
    )
    stale = await stores.requests.apply(
        request.key,
        transitions.fail_expired(attempt=2, error=ERROR, now=at(302), expires_at=EXPIRES),
    )
    late = await stores.requests.apply(
        request.key,
        transitions.fail_expired(attempt=1, error=ERROR, now=at(302), expires_at=EXPIRES),
    )

    stored = await stores.requests.get(request.key)
    assert (early, stale) == (None, None)
    assert late is not None
    assert late == stored
    assert stored is not None
    assert stored.status is RequestStatus.FAILED
    assert stored.error == ERROR
    assert stored.expires_at == EXPIRES


# --- requests: stale PENDING (a lost stream record) -------------------------------------


async def test_stale_pending_requests_are_listed_oldest_first_by_updated_at(
    stores: Stores,
) -> None:
    stale = [await enqueued(stores, a_request(f"s{i}", created=at(i))) for i in range(3)]
    await enqueued(stores, a_request("fresh", created=at(100)))
    # Old by CreatedAt, but handed back to PENDING recently: not stale.
    requeued = await claimed(stores, a_request("requeued", created=at(0.5)))
    await stores.requests.apply(requeued.key, transitions.release(attempt=1, now=at(100)))
    await claimed(stores, a_request("busy", created=at(0.2)))

    listed = await stores.requests.list_stale_pending(older_than=at(50), limit=2)
    everything = await stores.requests.list_stale_pending(older_than=at(50), limit=10)

    assert [r.key for r in listed] == [stale[0].key, stale[1].key]
    assert [r.key for r in everything] == [r.key for r in stale]
    assert await stores.requests.list_stale_pending(older_than=at(0), limit=10) == []


async def test_kick_touches_a_pending_request_and_counts_the_kick(stores: Stores) -> None:
    request = await enqueued(stores)

    kicked = await stores.requests.apply(
        request.key, transitions.kick(seen_updated_at=T0, now=at(400))
    )
    again = await stores.requests.apply(
        request.key, transitions.kick(seen_updated_at=at(400), now=at(800))
    )

    stored = await stores.requests.get(request.key)
    assert kicked == replace(request, updated_at=at(400), kicks=1)
    assert again == stored
    assert stored == replace(request, updated_at=at(800), kicks=2)


async def test_follow_marks_a_request_in_any_status_and_changes_nothing_else(
    stores: Stores,
) -> None:
    request = await enqueued(stores, replace(a_request(), followed=False))
    assert (await stores.requests.get(request.key)) == request

    marked = await stores.requests.apply(request.key, transitions.follow())
    claimed = await stores.requests.apply(
        request.key, transitions.claim(now=at(1), lease_until=at(60))
    )
    assert claimed is not None
    done = await stores.requests.apply(
        request.key, transitions.complete(attempt=1, result="ok", now=at(2), expires_at=9)
    )
    again = await stores.requests.apply(request.key, transitions.follow())

    assert marked == replace(request, followed=True)
    assert claimed.followed
    assert done is not None
    assert done.followed
    assert again == done
    assert await stores.requests.apply(RequestKey("t#u#nope"), transitions.follow()) is None


async def test_kick_with_a_stale_updated_at_is_refused(stores: Stores) -> None:
    request = await enqueued(stores)
    assert await stores.requests.apply(
        request.key, transitions.kick(seen_updated_at=T0, now=at(400))
    )

    refused = await stores.requests.apply(
        request.key, transitions.kick(seen_updated_at=T0, now=at(800))
    )

    stored = await stores.requests.get(request.key)
    assert refused is None
    assert stored is not None
    assert (stored.updated_at, stored.kicks) == (at(400), 1)


async def test_kick_of_a_claimed_request_is_refused(stores: Stores) -> None:
    request = await claimed(stores)

    refused = await stores.requests.apply(
        request.key, transitions.kick(seen_updated_at=request.updated_at, now=at(400))
    )

    assert refused is None
    assert await stores.requests.get(request.key) == request


async def test_kick_of_an_unknown_request_is_refused(stores: Stores) -> None:
    assert (
        await stores.requests.apply(
            RequestKey("t#u#x"), transitions.kick(seen_updated_at=T0, now=at(1))
        )
        is None
    )


@pytest.mark.parametrize("hand_back", ["release", "requeue_expired"])
async def test_kicks_start_again_when_a_request_goes_back_to_pending(
    stores: Stores, hand_back: str
) -> None:
    request = await enqueued(stores)
    assert await stores.requests.apply(
        request.key, transitions.kick(seen_updated_at=T0, now=at(400))
    )
    claim = await stores.requests.apply(
        request.key, transitions.claim(now=at(401), lease_until=at(500))
    )
    assert claim is not None
    assert claim.kicks == 1

    if hand_back == "release":
        assert await stores.requests.apply(request.key, transitions.release(attempt=1, now=at(600)))
    else:
        assert await stores.requests.apply(
            request.key, transitions.requeue_expired(attempt=1, now=at(600))
        )

    stored = await stores.requests.get(request.key)
    assert stored is not None
    assert (stored.status, stored.kicks) == (RequestStatus.PENDING, 0)


async def test_fail_pending_fails_an_untouched_pending_request(stores: Stores) -> None:
    request = await enqueued(stores)

    failed = await stores.requests.apply(
        request.key,
        transitions.fail_pending(seen_updated_at=T0, error=ERROR, now=at(900), expires_at=EXPIRES),
    )

    assert failed is not None
    assert failed.status is RequestStatus.FAILED
    assert (failed.error, failed.expires_at, failed.completed_at) == (ERROR, EXPIRES, at(900))
    assert await stores.requests.get(request.key) == failed


async def test_fail_pending_is_refused_once_claimed_or_touched(stores: Stores) -> None:
    busy = await claimed(stores, a_request("busy"))
    touched = await enqueued(stores, a_request("touched"))
    assert await stores.requests.apply(
        touched.key, transitions.kick(seen_updated_at=T0, now=at(400))
    )

    refused = [
        await stores.requests.apply(
            key,
            transitions.fail_pending(
                seen_updated_at=seen, error=ERROR, now=at(900), expires_at=EXPIRES
            ),
        )
        for key, seen in ((busy.key, busy.updated_at), (touched.key, T0))
    ]

    assert refused == [None, None]
    assert await stores.requests.get(busy.key) == busy
    stored = await stores.requests.get(touched.key)
    assert stored is not None
    assert stored.status is RequestStatus.PENDING


# --- requests: queries -----------------------------------------------------------------


async def test_requests_are_listed_by_connection_oldest_first(stores: Stores) -> None:
    newer = await enqueued(stores, a_request("b", connection="c1", created=at(20)))
    older = await enqueued(stores, a_request("a", connection="c1", created=at(10)))
    await enqueued(stores, a_request("x", connection="c2", created=at(5)))

    listed = await stores.requests.list_by_connection(ConnectionId("c1"))

    assert listed == [older, newer]


async def test_requests_are_listed_by_status_oldest_first_up_to_the_limit(
    stores: Stores,
) -> None:
    # The port's two StatusIndex queries: PENDING ones (stale), PROCESSING ones (expired).
    pending = [await enqueued(stores, a_request(f"p{i}", created=at(10 - i))) for i in range(4)]
    await claimed(stores, a_request("busy", created=at(0)))

    listed = await stores.requests.list_stale_pending(older_than=at(100), limit=3)
    processing = await stores.requests.list_expired_leases(now=at(10_000), limit=10)

    assert [r.key for r in listed] == [pending[3].key, pending[2].key, pending[1].key]
    assert [r.request_id for r in processing] == ["busy"]


# --- subscriptions ---------------------------------------------------------------------


def a_subscription(key: str = "t#u#r1", cid: str = "c1") -> Subscription:
    return Subscription(
        key=RequestKey(key), connection_id=ConnectionId(cid), created_at=T0, expires_at=EXPIRES
    )


async def test_subscriptions_are_listed_by_request_and_by_connection(stores: Stores) -> None:
    subscriptions = [a_subscription("t#u#r1", "c1"), a_subscription("t#u#r1", "c2")]
    other = a_subscription("t#u#r2", "c1")
    for subscription in [*subscriptions, other]:
        await stores.subscriptions.add(subscription)

    by_request = await stores.subscriptions.list_for_request(RequestKey("t#u#r1"))
    by_connection = await stores.subscriptions.list_for_connection(ConnectionId("c1"))

    assert sorted(by_request, key=lambda s: s.connection_id) == subscriptions
    assert sorted(by_connection, key=lambda s: s.key) == [subscriptions[0], other]


async def test_subscribing_twice_keeps_one_subscription(stores: Stores) -> None:
    await stores.subscriptions.add(a_subscription())
    await stores.subscriptions.add(a_subscription())

    assert await stores.subscriptions.list_for_request(RequestKey("t#u#r1")) == [a_subscription()]


async def test_remove_unsubscribes_one_connection_and_tolerates_absence(stores: Stores) -> None:
    await stores.subscriptions.add(a_subscription("t#u#r1", "c1"))
    await stores.subscriptions.add(a_subscription("t#u#r1", "c2"))

    await stores.subscriptions.remove(RequestKey("t#u#r1"), ConnectionId("c1"))
    await stores.subscriptions.remove(RequestKey("t#u#r1"), ConnectionId("c1"))
    await stores.subscriptions.remove(RequestKey("t#u#nope"), ConnectionId("c9"))

    assert await stores.subscriptions.list_for_request(RequestKey("t#u#r1")) == [
        a_subscription("t#u#r1", "c2")
    ]


async def test_remove_for_connection_drops_only_that_connections_subscriptions(
    stores: Stores,
) -> None:
    for key in ["t#u#r1", "t#u#r2", "t#u#r3"]:
        await stores.subscriptions.add(a_subscription(key, "c1"))
    await stores.subscriptions.add(a_subscription("t#u#r1", "c2"))

    removed = await stores.subscriptions.remove_for_connection(ConnectionId("c1"))
    removed_again = await stores.subscriptions.remove_for_connection(ConnectionId("c1"))

    assert (removed, removed_again) == (3, 0)
    assert await stores.subscriptions.list_for_connection(ConnectionId("c1")) == []
    assert await stores.subscriptions.list_for_request(RequestKey("t#u#r1")) == [
        a_subscription("t#u#r1", "c2")
    ]
