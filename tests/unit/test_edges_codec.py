"""The DynamoDB value codec: its direct paths give exactly boto3's answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import IntEnum, StrEnum
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer

from adapters.dynamodb import codec
from streamer.errors import UnstorableValue


class Colour(StrEnum):
    RED = "red"


class Level(IntEnum):
    HIGH = 3


VALUES: list[Any] = [
    "",
    "héllo ✓ 日本語 🎉",
    True,
    False,
    None,
    0,
    -17,
    2**62,
    10**37,
    -(10**37) - 1,
    0.0,
    -0.0,
    0.1,
    3.14159,
    1e-7,
    1e100,
    -2.5,
    12.0,
    Decimal("1.50"),
    Colour.RED,
    Level.HIGH,
    {"a": {"b": [1, {"c": [True, False, None]}, "d"]}, "list": [[], [[]]]},
    {1: "int key", "x": (1, 2.5, "t")},
    ("tuple", 1),
    {"tags": {"a", "b"}, "ids": {1, 2}},
    b"\x00\x01bytes",
]
UNSTORABLE: list[Any] = [float("nan"), float("inf"), 10**38, 10**40, 1e-300, 1e200, object()]


def boto3_answer(value: Any) -> dict[str, Any]:
    """What the codec gave before its direct paths: boto3's serializer throughout."""
    return TypeSerializer().serialize(codec._to_storable(value))  # type: ignore[return-value]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_a_value_is_typed_exactly_as_boto3_types_it(value: Any) -> None:
    assert codec.to_attribute_value(value) == boto3_answer(value)


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_a_typed_value_reads_back_exactly_as_through_boto3(value: Any) -> None:
    typed = boto3_answer(value)
    expected = codec._from_stored(TypeDeserializer().deserialize(typed))
    assert codec.from_attribute_value(typed) == expected
    assert type(codec.from_attribute_value(typed)) is type(expected)


@pytest.mark.parametrize("value", UNSTORABLE, ids=repr)
def test_what_boto3_refuses_is_refused_with_the_same_reason(value: Any) -> None:
    try:
        boto3_answer(value)
    except (ValueError, TypeError, ArithmeticError) as exc:
        reason = codec._unstorable_reason(exc)
    else:  # pragma: no cover - the corpus holds refusals only
        raise AssertionError(f"boto3 stored {value!r}")
    with pytest.raises(UnstorableValue) as refused:
        codec.to_attribute_value({"nested": [value]})
    assert refused.value.message == UnstorableValue(reason).message


def test_numbers_read_back_as_int_when_integral_else_float() -> None:
    assert codec.from_attribute_value({"N": "12"}) == 12
    assert type(codec.from_attribute_value({"N": "12.0"})) is int
    assert codec.from_attribute_value({"N": "0.1"}) == 0.1
    assert codec.from_attribute_value({"N": "1E+100"}) == 1e100
    assert isinstance(codec.from_attribute_value({"B": b"x"}), Binary | bytes)


@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 12, 1, 17, 50, 32, 123456, tzinfo=UTC),
        datetime(2026, 12, 1, 17, 50, 32),  # naive: taken as UTC
        datetime(2026, 12, 1, 23, 20, 32, 5, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
    ids=str,
)
def test_times_are_written_as_strftime_writes_them(at: datetime) -> None:
    utc = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    assert codec.format_time(at) == utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert codec.parse_time(codec.format_time(at)) == utc
