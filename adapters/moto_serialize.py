"""moto's DynamoDB Streams answers, serialized by a walk compiled once per shape.

moto (5.1) builds every DynamoDB Streams answer with its model-driven serializer
(`moto.core.serialize.JSONSerializer`). For each member of each structure it
instantiates six alias providers and tries up to a dozen keys, so a `GetRecords`
page (records of nested `AttributeValue`s, 10 members each) cost ~60% of the
server's CPU under the emulator's call mix. `install` wraps
`ActionResult.execute_result` so that, for those answers, the same walk is done
by closures compiled once per shape: the keys each member is looked up under are
the ones moto's `XFormedAttributePicker` tries, in its order, computed once (they
depend on the shape, the member's name and, for moto's class-prefix alias, the
value's class, here always `dict`); each type is converted as moto's JSON
serializer converts it (timestamps by moto's own `TimestampSerializer`, after a
`fromisoformat` of the one form moto's records carry; blobs base64, integers
`int`, floats `float`, the rest as is); and the body is the same `json.dumps`.
Anything else falls back to moto: an error, a value that is not a plain dict,
list, tuple or scalar where the shape has members, response transformers,
pretty printing, another service or protocol. A contract test
compares the bodies of both serializers, byte for byte, over every call the
emulator makes on the stream.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

__all__ = ["install", "serialize", "uninstall"]

_MARK = "_streamer_compiled"
_SERVICES = frozenset({"dynamodbstreams"})
"""The services answered here: the JSON-protocol ones the emulator calls through
moto's serializer (moto's DynamoDB handler writes its own JSON)."""

_SKIP: Any = object()
"""What a converter returns where moto's serializer writes nothing (a None structure)."""

Convert = Callable[[Any], Any]


class Unsupported(Exception):
    """A value this walk does not handle: moto's serializer answers instead."""


def install() -> None:
    """Wrap moto's `ActionResult.execute_result` (idempotent)."""
    from moto.core.responses import ActionResult

    original = ActionResult.execute_result
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def execute_result(self: Any, context: Any) -> Any:
        answer = _answer(self, context)
        return answer if answer is not None else original(self, context)

    setattr(execute_result, _MARK, True)
    ActionResult.execute_result = execute_result  # type: ignore[method-assign]


def uninstall() -> None:
    """Put moto's own `ActionResult.execute_result` back (tests compare the two)."""
    from moto.core.responses import ActionResult

    if getattr(ActionResult.execute_result, _MARK, False):
        ActionResult.execute_result = ActionResult.execute_result.__wrapped__  # type: ignore[attr-defined,method-assign]


def _answer(action_result: Any, context: Any) -> tuple[int, dict[str, str], str] | None:
    """(status, headers, body) as moto's serializer would give them, or None to let it."""
    from moto import settings
    from moto.core.responses import ActionResult
    from moto.core.serialize import JSONSerializer

    if (
        type(action_result) is not ActionResult
        or context.serializer_class is not JSONSerializer
        or str(context.service_model.service_name) not in _SERVICES
        or settings.PRETTIFY_RESPONSES
        or getattr(context.response, "RESPONSE_KEY_PATH_TO_TRANSFORMER", None)
        or isinstance(action_result.result, Exception)
    ):
        return None
    try:
        body = serialize(context.operation_model, action_result.result)
    except Exception:  # Unsupported, or a value moto's own walk would refuse: let it answer.
        return None
    status = context.operation_model.http.get("responseCode", JSONSerializer.DEFAULT_RESPONSE_CODE)
    version = context.service_model.metadata.get("jsonVersion", "1.0")
    headers = {"Content-Type": f"application/x-amz-json-{version}"}
    return status, headers, body


def serialize(operation_model: Any, result: Any) -> str:
    """The JSON body of `result` for `operation_model`'s output, as moto writes it.

    Raises:
        Unsupported: a value outside what this walk handles (nothing is half-done).
    """
    shape = operation_model.output_shape
    if shape is None:
        return json.dumps({})
    converted = _converter(shape)(result)
    return json.dumps({} if converted is _SKIP else converted)


_CONVERTERS: dict[int, tuple[Any, Convert]] = {}
"""Per shape object (kept alive beside its converter, so its id stays its own)."""


def _converter(shape: Any) -> Convert:
    """The converter of one shape, compiled on first use."""
    found = _CONVERTERS.get(id(shape))
    if found is not None:
        return found[1]
    convert = _compile(shape)
    _CONVERTERS[id(shape)] = (shape, convert)
    return convert


def _out_key(shape: Any, key: str) -> str:
    """Where moto's `_default_serialize` writes a value: the shape's wire name, or `key`."""
    name: str = shape.serialization.get("name", key)
    return name


def _compile(shape: Any) -> Convert:
    kind = shape.type_name
    if kind == "structure":
        return _as_is if _is_document(shape) else _structure(shape)
    if kind == "map":
        return _map(shape)
    if kind == "list":
        return _list(shape)
    if kind == "timestamp":
        return _timestamp(shape)
    if kind == "blob":
        return _blob
    if kind in ("integer", "long"):
        return int
    if kind in ("float", "double"):
        return float
    return _as_is


def _as_is(value: Any) -> Any:
    return value


def _blob(value: Any) -> str:
    """moto's `ResponseSerializer._base64`."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return base64.b64encode(raw).strip().decode("utf-8")


def _timestamp(shape: Any) -> Convert:
    from moto.core.serialize import JSONSerializer, TimestampSerializer

    timestamps = TimestampSerializer(JSONSerializer.DEFAULT_TIMESTAMP_FORMAT)
    wanted = shape.serialization.get("timestampFormat", timestamps.default_format)

    def convert(value: Any) -> Any:
        return timestamps._convert_timestamp_to_str(value, wanted)

    if wanted.lower() != TimestampSerializer.TIMESTAMP_FORMAT_UNIX:
        return convert

    def unix(value: Any) -> Any:
        # moto's stream records carry `datetime.isoformat()` of a naive UTC time,
        # which botocore reads with dateutil (~0.1 ms); `fromisoformat` reads that
        # form to the same fields, and the epoch number is moto's own converter's.
        if type(value) is str and _NAIVE_ISO.fullmatch(value):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                return convert(value)
            return timestamps._timestamp_unixtimestamp(parsed.replace(tzinfo=UTC))
        return convert(value)

    return unix


_NAIVE_ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?")
"""`datetime.isoformat()` of a naive time: no zone, no offset, microseconds or none."""


def _keys_tried(parent: Any, key: str, member: Any) -> tuple[str, ...]:
    """The keys moto's `XFormedAttributePicker` looks a member up under, in its order,
    for a `dict` value (its alias providers, each alias followed by its snake_case)."""
    from botocore import xform_name

    aliases: list[str] = []
    # ExplicitAlias: a dict has no `Meta`.
    if (  # ShapeNameAlias
        member.type_name in ("list", "structure")
        and member.name not in parent.members
        and key != member.name
    ):
        aliases.append(member.name)
    aliases.append(key)  # NoAlias
    if key.lower().startswith(parent.name.lower()):  # ShapePrefixAlias
        short = key[len(parent.name) :]
        if short not in parent.members:
            aliases.append(short)
    if key.lower().startswith("dict"):  # ClassPrefixAlias, for a dict
        aliases.append(key[len("dict") :])
    if member.serialization.get("name", key) != key:  # ModelAlias
        aliases.append(member.serialization["name"])
    tried: list[str] = []
    for alias in aliases:
        tried += [alias, xform_name(alias)]
    if any("." in k for k in tried):  # moto's get_value reads those as paths
        raise Unsupported(f"a dotted key for {parent.name}.{key}")
    return tuple(tried)


def _structure(shape: Any) -> Convert:
    members: list[tuple[str, str, tuple[str, ...], Any]] = []
    for key, member in shape.members.items():
        out = key if _is_document(member) else _out_key(member, key)
        members.append((key, out, _keys_tried(shape, key, member), member))
    names = frozenset(key for key, *_ in members)
    # A dict whose keys are all member names, where no member is looked up under
    # another member's name, gives each member the value under its own name: the
    # walk needs one lookup per key the dict has, not one per alias per member.
    direct = all(set(tried) & names <= {key} for key, _, tried, _ in members)
    order = {key: i for i, (key, *_) in enumerate(members)}
    converters: dict[str, Convert] = {}

    def child(key: str, member: Any) -> Convert:
        found = converters.get(key)
        if found is None:
            found = converters[key] = _converter(member)
        return found

    def convert(value: Any) -> Any:
        if value is None:
            return _SKIP
        if type(value) is not dict:
            raise Unsupported(f"{type(value).__name__} for {shape.name}")
        wrapper: dict[str, Any] = {}
        if direct and value.keys() <= names:
            keys = list(value) if len(value) < 2 else sorted(value, key=order.__getitem__)
            for key in keys:
                item = value[key]
                if item is not None:
                    _, out, _, member = members[order[key]]
                    converted = child(key, member)(item)
                    if converted is not _SKIP:
                        wrapper[out] = converted
            return wrapper
        for key, out, tried, member in members:
            item = None
            for candidate in tried:
                if candidate in value:
                    item = value[candidate]
                    break
            if item is not None:
                converted = child(key, member)(item)
                if converted is not _SKIP:
                    wrapper[out] = converted
        return wrapper

    return convert


def _is_document(shape: Any) -> bool:
    """A document structure, which moto writes as it is, under the key it came with."""
    return shape.type_name == "structure" and bool(shape.is_document_type)


def _map(shape: Any) -> Convert:
    value_shape = shape.value
    if "name" in value_shape.serialization:
        raise Unsupported(f"a wire name for the values of {shape.name}")
    # moto writes a non-document structure under an empty key into the map itself.
    nested = value_shape.type_name == "structure" and not _is_document(value_shape)
    convert_value: list[Convert] = []
    plain = _plain_attributes(value_shape) if nested else None

    def convert(value: Any) -> Any:
        if type(value) is not dict:
            raise Unsupported(f"{type(value).__name__} for {shape.name}")
        if plain is not None and plain(value):
            return value  # what the walk would build, key for key
        if not convert_value:
            convert_value.append(_converter(value_shape))
        each = convert_value[0]
        mapped: dict[str, Any] = {}
        for key, item in value.items():
            if nested and not key:
                raise Unsupported(f"an empty key in {shape.name}")
            converted = each(item)
            if converted is not _SKIP:
                mapped[key] = converted
        return mapped

    return convert


def _list(shape: Any) -> Convert:
    member = shape.member
    if "name" in member.serialization and not _is_document(member):
        # moto would keep each item unconverted (nothing lands under the member's name).
        raise Unsupported(f"a wire name for the members of {shape.name}")
    convert_item: list[Convert] = []

    def convert(value: Any) -> Any:
        if type(value) not in (list, tuple):
            raise Unsupported(f"{type(value).__name__} for {shape.name}")
        if not convert_item:
            convert_item.append(_converter(member))
        each = convert_item[0]
        out: list[Any] = []
        for item in value:
            converted = each(item)
            # moto keeps the item as it was when nothing was written (a None structure).
            out.append(item if converted is _SKIP else converted)
        return out

    return convert


_PLAIN_TAGS: dict[str, tuple[str, str]] = {
    "S": ("string", ""),
    "N": ("string", ""),
    "BOOL": ("boolean", ""),
    "NULL": ("boolean", ""),
    "SS": ("list", "string"),
    "NS": ("list", "string"),
    "M": ("map", "self"),
    "L": ("list", "self"),
}
"""The members of an `AttributeValue` whose values the walk writes as they are:
(the member's type, its list member's or map value's: "self" is `AttributeValue`)."""


def _plain_attributes(shape: Any) -> Callable[[dict[str, Any]], bool] | None:
    """For DynamoDB's `AttributeValue` structure: a test that a map of them (a stream
    image) is one the walk would rebuild key for key, or None for any other shape.

    The walk writes a string, a boolean, a list of strings, and a map or list of such
    values as they are, under the member's own name, when each value has one member
    and it is set. A binary (base64 again), a None, a second member, an unknown one,
    an empty map key or any other Python type fails the test, and the walk writes it.
    """
    if shape.type_name != "structure" or _is_document(shape):
        return None
    members = shape.members
    names = frozenset(members)
    for tag, (kind, inner) in _PLAIN_TAGS.items():
        member = members.get(tag)
        if (
            member is None
            or member.type_name != kind
            or member.serialization.get("name", tag) != tag
            or set(_keys_tried(shape, tag, member)) & names != {tag}
        ):
            return None
        if kind == "list":
            item = member.member
            wanted = shape.name if inner == "self" else None
            if "name" in item.serialization or (
                item.name != wanted if wanted else item.type_name != inner
            ):
                return None
        if kind == "map":
            if member.value.name != shape.name or member.key.type_name != "string":
                return None
            if "name" in member.value.serialization:
                return None
    if not all(
        set(_keys_tried(shape, key, member)) & names <= {key} for key, member in members.items()
    ):
        return None
    strings = ("S", "N")
    booleans = ("BOOL", "NULL")
    string_lists = ("SS", "NS")

    def value_is_plain(value: Any) -> bool:
        if type(value) is not dict or len(value) != 1:
            return False
        for tag, inner in value.items():
            if tag in strings:
                return type(inner) is str
            if tag in booleans:
                return type(inner) is bool
            if tag in string_lists:
                return type(inner) is list and all(type(x) is str for x in inner)
            if tag == "M":
                return type(inner) is dict and map_is_plain(inner)
            if tag == "L":
                return type(inner) is list and all(value_is_plain(x) for x in inner)
        return False

    def map_is_plain(mapping: dict[str, Any]) -> bool:
        for key, value in mapping.items():
            if type(key) is not str or not key or not value_is_plain(value):
                return False
        return True

    return map_is_plain
