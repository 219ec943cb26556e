"""The one parser of requests-table stream records, for Lambda and the emulator alike.

Lambda hands the processor `Records[]` whose `ApproximateCreationDateTime` is a
number of epoch seconds; the emulator's poller reads `get_records()` through
botocore, which gives a `datetime`. Both become the same `RequestChange` here,
or an `UnreadableRecord` that still names its sequence number, so a poison
record is reported (Lambda) or stepped over (emulator), never a crash.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from streamer.models import RequestChange, RequestKey, RequestStatus

__all__ = ["EVENT_NAMES", "UnreadableRecord", "read_stream_record", "sequence_number_of"]

EVENT_NAMES = frozenset({"INSERT", "MODIFY", "REMOVE"})
"""The `eventName`s a DynamoDB stream record can carry."""

_MILLISECONDS_AFTER = 100_000_000_000
"""Epoch numbers above this (year 5138 in seconds) are milliseconds."""


@dataclass(frozen=True, slots=True)
class UnreadableRecord:
    """A stream record that is not a usable requests-table change.

    Args:
        sequence_number: `dynamodb.SequenceNumber` when the record has one (what
            a batch failure or a checkpoint names), else None.
        reason: one line for the log; no attribute values beyond the record's
            metadata.
    """

    sequence_number: str | None
    reason: str


def sequence_number_of(raw: Any) -> str | None:
    """`dynamodb.SequenceNumber` of a stream record; None when it has none."""
    body = raw.get("dynamodb") if isinstance(raw, Mapping) else None
    sequence_number = body.get("SequenceNumber") if isinstance(body, Mapping) else None
    return sequence_number if isinstance(sequence_number, str) and sequence_number else None


def read_stream_record(
    raw: Any, *, table_name: str | None = None
) -> RequestChange | UnreadableRecord:
    """Parse one DynamoDB Streams record of the requests table.

    Never raises (for any `Exception` of parsing): what cannot be read comes back
    as an `UnreadableRecord` with its sequence number, so one poison record
    cannot fail a whole batch.

    Args:
        raw: a record from Lambda's `event["Records"]` or from `get_records()`.
        table_name: when given, a record whose `eventSourceARN` names another
            table is unreadable.
    """
    try:
        return _parse(raw, table_name)
    except ValueError as exc:
        return UnreadableRecord(sequence_number_of(raw), str(exc))
    except Exception as exc:
        reason = f"stream record could not be parsed ({type(exc).__name__})"
        return UnreadableRecord(sequence_number_of(raw), reason)


def _parse(raw: Any, table_name: str | None) -> RequestChange:
    """The change in `raw`; ValueError saying what is wrong with it."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"not a DynamoDB stream record (a {type(raw).__name__})")
    source = raw.get("eventSource")
    if source is not None and source != "aws:dynamodb":
        raise ValueError(f"not a DynamoDB stream record (eventSource {source!r})")
    if table_name is not None:
        _check_table(raw.get("eventSourceARN"), table_name)
    event_name = raw.get("eventName")
    if event_name not in EVENT_NAMES:
        raise ValueError(f"not a DynamoDB stream record (eventName {event_name!r})")
    body = raw.get("dynamodb")
    if not isinstance(body, Mapping):
        raise ValueError("not a DynamoDB stream record (no 'dynamodb' section)")
    keys = body.get("Keys")
    if not isinstance(keys, Mapping) or set(keys) != {"RequestID"}:
        found = sorted(keys) if isinstance(keys, Mapping) else None
        raise ValueError(f"not a requests-table record (keys {found}, expected ['RequestID'])")
    sequence_number = sequence_number_of(raw)
    if sequence_number is None:
        raise ValueError("stream record has no SequenceNumber")
    return RequestChange(
        event_id=str(raw.get("eventID", "")),
        event_name=event_name,
        sequence_number=sequence_number,
        key=RequestKey(_string(keys["RequestID"], "RequestID")),
        new_status=None if event_name == "REMOVE" else _status(body.get("NewImage")),
        approximate_created_at=_created_at(body.get("ApproximateCreationDateTime")),
        timeout_s=None if event_name == "REMOVE" else _timeout_s(body.get("NewImage")),
    )


def _check_table(arn: Any, table_name: str) -> None:
    # arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL
    if not isinstance(arn, str):
        return
    _, _, resource = arn.partition(":table/")
    name = resource.split("/", 1)[0]
    if name != table_name:
        raise ValueError(f"stream record from table {name!r}, expected {table_name!r}")


def _string(value: Any, name: str) -> str:
    if isinstance(value, Mapping) and isinstance(value.get("S"), str):
        return str(value["S"])
    raise ValueError(f"stream record attribute {name} is not a string value")


def _timeout_s(image: Any) -> float | None:
    """`TimeoutSeconds` of the new image; None when absent or not a usable number
    (the processor then reads the item before claiming it)."""
    value = image.get("TimeoutSeconds") if isinstance(image, Mapping) else None
    number = value.get("N") if isinstance(value, Mapping) else None
    if not isinstance(number, str):
        return None
    try:
        seconds = float(number)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _status(image: Any) -> RequestStatus | None:
    if not isinstance(image, Mapping) or "Status" not in image:
        return None  # a KEYS_ONLY/OLD_IMAGE stream, or an item without a status
    value = _string(image["Status"], "Status")
    try:
        return RequestStatus(value)
    except ValueError:
        raise ValueError(f"stream record has an unknown Status {value!r}") from None


def _created_at(value: Any) -> datetime:
    """`ApproximateCreationDateTime` in UTC: botocore gives a `datetime`, Lambda
    epoch seconds (a number; milliseconds are recognised by their size)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        seconds = float(value)
        if seconds > _MILLISECONDS_AFTER:
            seconds /= 1000
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(
                f"stream record has an ApproximateCreationDateTime out of range ({value!r})"
            ) from None
    raise ValueError(f"stream record has no usable ApproximateCreationDateTime ({value!r})")
