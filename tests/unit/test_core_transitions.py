"""Status changes as data: each `Transition` says when it may happen and what it
writes, and `transitions.apply` is the one pure function that applies it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from streamer import transitions
from streamer.models import (
    AsyncRequest,
    ConnectionId,
    ProgressSnapshot,
    RequestError,
    RequestId,
    RequestStatus,
    TenantId,
    UserId,
    parse_request_key,
    request_key,
)
from streamer.transitions import Transition

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
ERROR = RequestError("PROCESSING_FAILED", "boom")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def a_request(status: RequestStatus = RequestStatus.PENDING, **changes: object) -> AsyncRequest:
    request = AsyncRequest(
        key=request_key("t", "u", "r1"),
        request_id=RequestId("r1"),
        connection_id=ConnectionId("c1"),
        user_id=UserId("u"),
        tenant_id=TenantId("t"),
        action="work",
        payload={},
        status=status,
        created_at=T0,
        updated_at=T0,
        attempt=1,
        lease_until=at(100),
        progress=40.0,
        progress_message="stored",
    )
    return replace(request, **changes)  # type: ignore[arg-type]


# Every change, built with guards the request above passes (attempt 1, lease at
# 100 s, UpdatedAt T0), so only the status decides.
CHANGES: dict[str, Callable[[], Transition]] = {
    "claim": lambda: transitions.claim(now=at(1), lease_until=at(300)),
    "record_progress": lambda: transitions.record_progress(
        attempt=1, progress=ProgressSnapshot(50), now=at(1)
    ),
    "record_retry": lambda: transitions.record_retry(
        attempt=1, error=ERROR, now=at(1), lease_until=at(400)
    ),
    "complete": lambda: transitions.complete(attempt=1, result=1, now=at(1), expires_at=9),
    "fail": lambda: transitions.fail(attempt=1, error=ERROR, now=at(1), expires_at=9),
    "release": lambda: transitions.release(attempt=1, now=at(1)),
    "cancel": lambda: transitions.cancel(now=at(1), expires_at=9),
    "requeue_expired": lambda: transitions.requeue_expired(attempt=1, now=at(101)),
    "fail_expired": lambda: transitions.fail_expired(
        attempt=1, error=ERROR, now=at(101), expires_at=9
    ),
    "kick": lambda: transitions.kick(seen_updated_at=T0, now=at(1)),
    "fail_pending": lambda: transitions.fail_pending(
        seen_updated_at=T0, error=ERROR, now=at(1), expires_at=9
    ),
    "follow": transitions.follow,
}

FROM: dict[str, set[RequestStatus]] = {
    "claim": {RequestStatus.PENDING},
    "cancel": {RequestStatus.PENDING, RequestStatus.PROCESSING},
    "kick": {RequestStatus.PENDING},
    "fail_pending": {RequestStatus.PENDING},
    "follow": set(RequestStatus),
}
"""Where each change may start; every other one needs PROCESSING."""


def test_every_change_is_in_the_table_and_named_as_listed() -> None:
    assert set(CHANGES) == transitions.NAMES
    assert {name: make().name for name, make in CHANGES.items()} == {n: n for n in CHANGES}


@pytest.mark.parametrize("status", list(RequestStatus))
@pytest.mark.parametrize("name", sorted(CHANGES))
def test_a_change_applies_only_from_its_statuses(name: str, status: RequestStatus) -> None:
    allowed = FROM.get(name, {RequestStatus.PROCESSING})

    changed = transitions.apply(a_request(status), CHANGES[name]())

    assert (changed is not None) is (status in allowed)


def test_apply_is_pure_and_leaves_the_input_alone() -> None:
    request = a_request(RequestStatus.PENDING)

    claimed = transitions.apply(request, CHANGES["claim"]())

    assert request.status is RequestStatus.PENDING
    assert claimed is not None
    assert (claimed.status, claimed.attempt, claimed.lease_until) == (
        RequestStatus.PROCESSING,
        2,
        at(300),
    )
    assert claimed.processing_started == claimed.updated_at == at(1)


def test_a_missing_request_allows_nothing() -> None:
    assert transitions.apply(None, CHANGES["cancel"]()) is None


def test_a_stale_attempt_is_refused() -> None:
    request = a_request(RequestStatus.PROCESSING, attempt=2)

    assert transitions.apply(request, CHANGES["complete"]()) is None
    assert transitions.apply(request, CHANGES["release"]()) is None


def test_the_lease_must_have_expired_before_now() -> None:
    request = a_request(RequestStatus.PROCESSING)
    at_expiry = transitions.requeue_expired(attempt=1, now=at(100))
    after = transitions.requeue_expired(attempt=1, now=at(100.001))

    assert transitions.apply(request, at_expiry) is None
    assert transitions.apply(a_request(RequestStatus.PROCESSING, lease_until=None), after) is None
    requeued = transitions.apply(request, after)
    assert requeued is not None
    assert (requeued.status, requeued.lease_until, requeued.kicks) == (
        RequestStatus.PENDING,
        None,
        0,
    )


def test_the_seen_updated_at_must_match() -> None:
    request = a_request(RequestStatus.PENDING, updated_at=at(5))

    assert transitions.apply(request, CHANGES["kick"]()) is None
    kicked = transitions.apply(request, transitions.kick(seen_updated_at=at(5), now=at(6)))
    assert kicked is not None
    assert (kicked.kicks, kicked.updated_at) == (1, at(6))


def test_completion_stores_100_with_the_actions_last_message() -> None:
    request = a_request(RequestStatus.PROCESSING)
    last = ProgressSnapshot(95.0, "Uploading report", {"bytes": 10})

    completed = transitions.apply(
        request,
        transitions.complete(
            attempt=1, result={"url": "u"}, now=at(9), expires_at=9, progress=last
        ),
    )

    assert completed is not None
    assert (completed.progress, completed.progress_message, completed.progress_details) == (
        100.0,
        "Uploading report",
        {"bytes": 10},
    )


def test_completion_without_a_snapshot_keeps_the_stored_message_at_100() -> None:
    completed = transitions.apply(a_request(RequestStatus.PROCESSING), CHANGES["complete"]())

    assert completed is not None
    assert (completed.progress, completed.progress_message) == (100.0, "stored")


def test_failure_keeps_the_last_real_value() -> None:
    request = a_request(RequestStatus.PROCESSING)
    last = ProgressSnapshot(62.5, "step 5")

    reported = transitions.apply(
        request, transitions.fail(attempt=1, error=ERROR, now=at(9), expires_at=9, progress=last)
    )
    stored_only = transitions.apply(request, CHANGES["fail"]())
    cancelled = transitions.apply(request, CHANGES["cancel"]())

    assert reported is not None
    assert (reported.progress, reported.progress_message) == (62.5, "step 5")
    assert stored_only is not None
    assert (stored_only.progress, stored_only.progress_message) == (40.0, "stored")
    assert cancelled is not None
    assert (cancelled.progress, cancelled.error) == (40.0, transitions.CANCELLED_ERROR)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sets": {"colour": 1}}, "not fields"),
        ({"sets": {"key": "x"}}, "identity"),
        ({"removes": frozenset({"status"})}, "only counters"),
        ({"increments": frozenset({"progress"})}, "only counters"),
        ({"sets": {"attempt": 1}, "increments": frozenset({"attempt"})}, "twice"),
        ({"from_statuses": frozenset()}, "some status"),
    ],
)
def test_a_malformed_transition_is_refused_when_built(
    kwargs: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {"from_statuses": frozenset({RequestStatus.PENDING})}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Transition("odd", **arguments)  # type: ignore[arg-type]


# --- the request key ----------------------------------------------------------------


@pytest.mark.parametrize(
    "request_id",
    ["plain", "a#b", "#", "##x##", "ünïcødé-✓-日本", "#" * 128, "é" * 128, "a" + "#b" * 63 + "c"],
)
def test_a_request_key_reads_back_the_ids_it_was_built_from(request_id: str) -> None:
    key = request_key("tenant-ü", "user-1", request_id)

    parts = parse_request_key(key)

    assert (parts.tenant_id, parts.user_id, parts.request_id) == (
        "tenant-ü",
        "user-1",
        request_id,
    )


def test_ids_differing_only_around_a_hash_give_different_keys() -> None:
    assert request_key("t", "u", "a#b") != request_key("t", "u", "a") != request_key("t", "u", "b")


@pytest.mark.parametrize(("tenant", "user"), [("t#1", "u"), ("t", "u#1")])
def test_an_owner_holding_a_hash_cannot_make_a_key(tenant: str, user: str) -> None:
    with pytest.raises(ValueError, match="must not hold"):
        request_key(tenant, user, "r1")


@pytest.mark.parametrize("key", ["", "no-separator", "only#one"])
def test_a_key_without_its_three_parts_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="<tenant>#<user>#<id>"):
        parse_request_key(key)
