"""Values to and from DynamoDB's typed form, times as sortable strings, item sizes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import DYNAMODB_CONTEXT, TypeDeserializer, TypeSerializer

from streamer.clock import utc_second
from streamer.errors import UnstorableValue

__all__ = [
    "MAX_ITEM_BYTES",
    "format_time",
    "from_attribute_value",
    "from_item",
    "item_size",
    "optional_time",
    "parse_time",
    "to_attribute_value",
    "to_item",
]

MAX_ITEM_BYTES = 400 * 1024
"""DynamoDB's item size limit (names and values, UTF-8)."""

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _to_storable(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("DynamoDB cannot store NaN or infinity")
        return Decimal(str(value))
    if isinstance(value, Mapping):
        return {str(k): _to_storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_storable(v) for v in value]
    return value


def _from_stored(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _from_decimal(value)
    if isinstance(value, dict):
        return {k: _from_stored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_stored(v) for v in value]
    if isinstance(value, set | frozenset):
        return [_from_stored(v) for v in sorted(value)]
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return value


def _from_decimal(value: Decimal) -> int | float:
    if value != value.to_integral_value():
        return float(value)
    exponent = value.as_tuple().exponent
    # "1E+100" came from a float (ints are written digit by digit); as an int it
    # would no longer equal that float. Small integral values are ints either way.
    if isinstance(exponent, int) and exponent > 0 and abs(value) >= 2**53:
        return float(value)
    return int(value)


def to_attribute_value(value: Any) -> dict[str, Any]:
    """A Python (JSON-like) value as a typed DynamoDB value (`{"M": ...}`, …).

    Raises:
        UnstorableValue: NaN/infinity, a number beyond 38 significant digits, or a
            type DynamoDB has no form for.
    """
    try:
        return _typed(value)
    except (ValueError, TypeError, ArithmeticError) as exc:
        # decimal's Inexact/Rounded/Overflow are ArithmeticErrors: DynamoDB numbers
        # carry at most 38 significant digits.
        raise UnstorableValue(_unstorable_reason(exc)) from exc


def _typed(value: Any) -> dict[str, Any]:
    """boto3's serializer's answer, with the JSON types (what requests hold) built
    directly: its type dispatch was most of the CPU of a store call. Numbers go
    through DynamoDB's decimal context as boto3's do; any other type goes to boto3."""
    kind = type(value)
    if kind is str:
        return {"S": value}
    if kind is bool:
        return {"BOOL": value}
    if value is None:
        return {"NULL": True}
    if kind is int:
        return {"N": _number(value)}
    if kind is float:
        if not math.isfinite(value):
            raise ValueError("DynamoDB cannot store NaN or infinity")
        return {"N": _number(Decimal(str(value)))}
    if kind is dict:
        return {"M": {str(k): _typed(v) for k, v in value.items()}}
    if kind is list or kind is tuple:
        return {"L": [_typed(v) for v in value]}
    return _serializer.serialize(_to_storable(value))  # type: ignore[return-value]


def _number(value: int | Decimal) -> str:
    number = str(DYNAMODB_CONTEXT.create_decimal(value))
    if number in ("Infinity", "NaN"):
        raise TypeError("Infinity and NaN not supported")
    return number


def _unstorable_reason(exc: Exception) -> str:
    if isinstance(exc, ArithmeticError):
        return "numbers are limited to 38 significant digits"
    if isinstance(exc, ValueError):
        return "NaN and infinity are not numbers DynamoDB can store"
    return "a value of an unsupported type"


def from_attribute_value(value: Mapping[str, Any]) -> Any:
    """A typed DynamoDB value back to Python: numbers as int when integral, else float."""
    if len(value) == 1:
        ((kind, inner),) = value.items()
        # boto3's deserializer's answer for the JSON types, built directly.
        if kind == "S" or kind == "BOOL":
            return inner
        if kind == "N":
            return _from_decimal(DYNAMODB_CONTEXT.create_decimal(inner))
        if kind == "M":
            return {k: from_attribute_value(v) for k, v in inner.items()}
        if kind == "L":
            return [from_attribute_value(v) for v in inner]
        if kind == "NULL":
            return None
    return _from_stored(_deserializer.deserialize(dict(value)))  # type: ignore[arg-type]


def to_item(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {name: to_attribute_value(value) for name, value in attributes.items()}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: from_attribute_value(value) for name, value in item.items()}


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with fixed-width microseconds, so strings sort as times do."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return f"{utc_second(value)}.{value.microsecond:06d}Z"


def parse_time(value: str) -> datetime:
    """The inverse of `format_time`; also reads any RFC 3339 string (timezone-aware)."""
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def optional_time(value: Any) -> datetime | None:
    return parse_time(value) if isinstance(value, str) and value else None


def _number_size(value: Mapping[str, Any]) -> int:
    digits = str(value["N"]).lstrip("-").replace(".", "").lstrip("0") or "0"
    return 1 + math.ceil(len(digits) / 2)


def _value_size(value: Mapping[str, Any]) -> int:
    (kind, inner), *_ = value.items()
    if kind == "S":
        return len(str(inner).encode())
    if kind == "N":
        return _number_size(value)
    if kind == "B":
        return len(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + 1 + _value_size(v) for k, v in inner.items())
    if kind == "L":
        return 3 + sum(1 + _value_size(v) for v in inner)
    if kind == "SS":
        return sum(len(str(s).encode()) for s in inner)
    if kind == "NS":
        return sum(_number_size({"N": n}) for n in inner)
    if kind == "BS":
        return sum(len(b) for b in inner)
    raise ValueError(f"unknown DynamoDB type {kind!r}")


def item_size(item: Mapping[str, Mapping[str, Any]]) -> int:
    """DynamoDB's size of a typed item in bytes (names + values), a close upper estimate."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())
