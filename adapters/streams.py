"""The one parser of requests-table stream records, for Lambda and the emulator alike.

Lambda hands the processor `Records[]` whose `ApproximateCreationDateTime` is a
number of epoch seconds; the emulator's poller reads `get_records()` through
botocore, which gives a `datetime`. Both become the same `RequestChange` here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from streamer.models import RequestChange, RequestKey, RequestStatus

__all__ = ["EVENT_NAMES", "parse_stream_record"]

EVENT_NAMES = frozenset({"INSERT", "MODIFY", "REMOVE"})
"""The `eventName`s a DynamoDB stream record can carry."""

_MILLISECONDS_AFTER = 100_000_000_000
"""Epoch numbers above this (year 5138 in seconds) are milliseconds."""


def parse_stream_record(raw: Mapping[str, Any], *, table_name: str | None = None) -> RequestChange:
    """Parse one DynamoDB Streams record of the requests table.

    Args:
        raw: a record from Lambda's `event["Records"]` or from `get_records()`.
        table_name: when given, a record whose `eventSourceARN` names another
            table is refused.

    Raises:
        ValueError: the record is not a requests-table stream record (wrong
            source or table, no `RequestID` key, unknown event name or status).
    """
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
    sequence_number = body.get("SequenceNumber")
    if not isinstance(sequence_number, str) or not sequence_number:
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
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        seconds = float(value)
        if seconds > _MILLISECONDS_AFTER:
            seconds /= 1000
        return datetime.fromtimestamp(seconds, tz=UTC)
    raise ValueError(f"stream record has no usable ApproximateCreationDateTime ({value!r})")
