"""A stored request's status changes as data, and the one pure function that applies them.

Each change is a `Transition` value: the statuses it may start from, the guards
that make it safe under races (the writer's `attempt`, a lease expired before a
time, the `updated_at` last seen), and what it sets, increments and removes.
The in-memory fake applies one with `apply`; the DynamoDB store compiles the
same value into one conditional `UpdateItem`. Adding a change is one function
here, not an edit in every store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

from streamer.models import AsyncRequest, ProgressSnapshot, RequestError, RequestStatus

__all__ = [
    "CANCELLED_ERROR",
    "NAMES",
    "Transition",
    "allows",
    "apply",
    "cancel",
    "claim",
    "complete",
    "fail",
    "fail_expired",
    "fail_pending",
    "follow",
    "kick",
    "record_progress",
    "record_retry",
    "release",
    "requeue_expired",
]

CANCELLED_ERROR: Final = RequestError(code="CANCELLED", message="request was cancelled")
"""The `Error` a cancelled request keeps."""

_FIELDS: Final = frozenset(f.name for f in fields(AsyncRequest))
_FIXED: Final = frozenset({"key", "request_id", "connection_id", "user_id", "tenant_id"})
_COUNTERS: Final = frozenset({"attempt", "retry_count", "kicks"})
_OPTIONAL: Final = frozenset(
    {"result", "error", "lease_until", "processing_started", "completed_at", "expires_at"}
)
_ACTIVE: Final = frozenset({RequestStatus.PENDING, RequestStatus.PROCESSING})


@dataclass(frozen=True, slots=True)
class Transition:
    """One conditional change of a stored request: when it may happen, what it writes.

    Args:
        name: what the change is (`claim`, `complete`, …): one of `NAMES`.
        from_statuses: the statuses the stored request may be in.
        attempt: when set, the stored `attempt` must equal it (the writer still
            owns the run it claimed).
        lease_expired_before: when set, the stored `lease_until` must be before it.
        seen_updated_at: when set, the stored `updated_at` must equal it (nothing
            happened since the writer read it).
        sets: `AsyncRequest` field names → their new values.
        increments: counter fields that grow by one.
        removes: optional fields cleared (the attribute is removed).
    """

    name: str
    from_statuses: frozenset[RequestStatus]
    sets: Mapping[str, Any] = field(default_factory=dict)
    increments: frozenset[str] = frozenset()
    removes: frozenset[str] = frozenset()
    attempt: int | None = None
    lease_expired_before: datetime | None = None
    seen_updated_at: datetime | None = None

    def __post_init__(self) -> None:
        if not self.from_statuses:
            raise ValueError(f"{self.name}: a change must start from some status")
        unknown = (set(self.sets) | self.increments | self.removes) - _FIELDS
        if unknown:
            raise ValueError(f"{self.name}: not fields of a request: {sorted(unknown)}")
        if _FIXED & (set(self.sets) | self.removes):
            raise ValueError(f"{self.name}: a request's identity never changes")
        if self.increments - _COUNTERS or self.removes - _OPTIONAL:
            raise ValueError(f"{self.name}: only counters grow and only optional fields go")
        if len(set(self.sets) | self.increments | self.removes) != (
            len(self.sets) + len(self.increments) + len(self.removes)
        ):
            raise ValueError(f"{self.name}: a field is changed twice")
        object.__setattr__(self, "sets", MappingProxyType(dict(self.sets)))


def allows(request: AsyncRequest | None, transition: Transition) -> bool:
    """Whether `transition` may change `request` (None: there is no such request)."""
    if request is None or request.status not in transition.from_statuses:
        return False
    if transition.attempt is not None and request.attempt != transition.attempt:
        return False
    if transition.lease_expired_before is not None and (
        request.lease_until is None or not request.lease_until < transition.lease_expired_before
    ):
        return False
    return transition.seen_updated_at is None or request.updated_at == transition.seen_updated_at


def apply(request: AsyncRequest | None, transition: Transition) -> AsyncRequest | None:
    """The request after `transition`, or None when its statuses or guards refuse it."""
    if request is None or not allows(request, transition):
        return None
    changes: dict[str, Any] = dict(transition.sets)
    for name in transition.increments:
        changes[name] = getattr(request, name) + 1
    for name in transition.removes:
        changes[name] = None
    return replace(request, **changes)


# -- the changes ---------------------------------------------------------------------


def claim(*, now: datetime, lease_until: datetime) -> Transition:
    """PENDING → PROCESSING: a lease, `processing_started`, `attempt` + 1."""
    return Transition(
        "claim",
        frozenset({RequestStatus.PENDING}),
        sets={
            "status": RequestStatus.PROCESSING,
            "lease_until": lease_until,
            "processing_started": now,
            "updated_at": now,
        },
        increments=frozenset({"attempt"}),
    )


def record_progress(*, attempt: int, progress: ProgressSnapshot, now: datetime) -> Transition:
    """Save the progress snapshot while PROCESSING under `attempt`."""
    return Transition(
        "record_progress",
        frozenset({RequestStatus.PROCESSING}),
        sets={**_progress(progress), "updated_at": now},
        attempt=attempt,
    )


def record_retry(
    *,
    attempt: int,
    error: RequestError,
    now: datetime,
    lease_until: datetime,
    progress: ProgressSnapshot | None = None,
) -> Transition:
    """Count one retry under `attempt`: `retry_count` + 1, the error kept, the lease
    extended, and `progress`, when given, stored (the last value reported)."""
    return Transition(
        "record_retry",
        frozenset({RequestStatus.PROCESSING}),
        sets={"error": error, "lease_until": lease_until, "updated_at": now}
        | (_progress(progress) if progress else {}),
        increments=frozenset({"retry_count"}),
        attempt=attempt,
    )


def complete(
    *,
    attempt: int,
    result: Any,
    now: datetime,
    expires_at: int,
    progress: ProgressSnapshot | None = None,
) -> Transition:
    """PROCESSING (under `attempt`) → COMPLETED with `result` and the TTL.

    The stored progress becomes 100, with the action's last message and details
    when `progress` gives them (otherwise the stored ones stay).
    """
    final = {"progress": 100.0}
    if progress is not None:
        final = {**_progress(progress), "progress": 100.0}
    return Transition(
        "complete",
        frozenset({RequestStatus.PROCESSING}),
        sets={
            "status": RequestStatus.COMPLETED,
            "result": result,
            **_finished(now, expires_at),
            **final,
        },
        attempt=attempt,
    )


def fail(
    *,
    attempt: int,
    error: RequestError,
    now: datetime,
    expires_at: int,
    progress: ProgressSnapshot | None = None,
) -> Transition:
    """PROCESSING (under `attempt`) → FAILED with `error` and the TTL.

    `progress`, when given, is the last value the action reported (it may be
    newer than the throttled snapshot stored); otherwise the stored one stays.
    """
    return Transition(
        "fail",
        frozenset({RequestStatus.PROCESSING}),
        sets=_failed(error, now, expires_at) | (_progress(progress) if progress else {}),
        attempt=attempt,
    )


def release(*, attempt: int, now: datetime, progress: ProgressSnapshot | None = None) -> Transition:
    """PROCESSING (under `attempt`) → PENDING: handed back for another claim, with
    `progress`, when given, stored (so the next run resumes from the last report)."""
    return Transition(
        "release",
        frozenset({RequestStatus.PROCESSING}),
        sets=_pending_again(now) | (_progress(progress) if progress else {}),
        removes=frozenset({"lease_until"}),
        attempt=attempt,
    )


def cancel(*, now: datetime, expires_at: int) -> Transition:
    """PENDING|PROCESSING → CANCELLED, keeping the last stored progress."""
    return Transition(
        "cancel",
        _ACTIVE,
        sets={
            "status": RequestStatus.CANCELLED,
            "error": CANCELLED_ERROR,
            **_finished(now, expires_at),
        },
    )


def requeue_expired(*, attempt: int, now: datetime) -> Transition:
    """PROCESSING with a lease expired before `now` (under `attempt`) → PENDING."""
    return Transition(
        "requeue_expired",
        frozenset({RequestStatus.PROCESSING}),
        sets=_pending_again(now),
        removes=frozenset({"lease_until"}),
        attempt=attempt,
        lease_expired_before=now,
    )


def fail_expired(
    *, attempt: int, error: RequestError, now: datetime, expires_at: int
) -> Transition:
    """PROCESSING with a lease expired before `now` (under `attempt`) → FAILED."""
    return Transition(
        "fail_expired",
        frozenset({RequestStatus.PROCESSING}),
        sets=_failed(error, now, expires_at),
        attempt=attempt,
        lease_expired_before=now,
    )


def kick(*, seen_updated_at: datetime, now: datetime) -> Transition:
    """Re-announce a PENDING request untouched since `seen_updated_at`: `updated_at`
    = `now`, `kicks` + 1. The write puts a fresh PENDING image on the stream."""
    return Transition(
        "kick",
        frozenset({RequestStatus.PENDING}),
        sets={"updated_at": now},
        increments=frozenset({"kicks"}),
        seen_updated_at=seen_updated_at,
    )


def fail_pending(
    *, seen_updated_at: datetime, error: RequestError, now: datetime, expires_at: int
) -> Transition:
    """PENDING, untouched since `seen_updated_at` → FAILED (never picked up)."""
    return Transition(
        "fail_pending",
        frozenset({RequestStatus.PENDING}),
        sets=_failed(error, now, expires_at),
        seen_updated_at=seen_updated_at,
    )


def follow() -> Transition:
    """Mark the request followed, in whatever status: `subscribe` does it after
    adding the subscription, so an outcome written later looks the subscribers up
    and one written earlier is in what this write returns. Nothing else changes
    (not `updated_at`), so no other writer's guard is disturbed."""
    return Transition("follow", frozenset(RequestStatus), sets={"followed": True})


NAMES: Final = frozenset(
    {
        "claim",
        "record_progress",
        "record_retry",
        "complete",
        "fail",
        "release",
        "cancel",
        "requeue_expired",
        "fail_expired",
        "kick",
        "fail_pending",
        "follow",
    }
)
"""The name of every change above (a fake's failure injection accepts them)."""


def _progress(progress: ProgressSnapshot) -> dict[str, Any]:
    return {
        "progress": progress.percentage,
        "progress_message": progress.message,
        "progress_details": progress.details,
    }


def _finished(now: datetime, expires_at: int) -> dict[str, Any]:
    return {"completed_at": now, "updated_at": now, "expires_at": expires_at}


def _failed(error: RequestError, now: datetime, expires_at: int) -> dict[str, Any]:
    return {"status": RequestStatus.FAILED, "error": error, **_finished(now, expires_at)}


def _pending_again(now: datetime) -> dict[str, Any]:
    # Kicks count re-announcements since the request last became PENDING.
    return {"status": RequestStatus.PENDING, "kicks": 0, "updated_at": now}
