"""botocore's JSON-protocol serializer and parser, compiled once per shape into plain walks.

botocore's `JSONSerializer` and `JSONParser` find a handler by name for every
value of every call (an item of 20 attributes costs ~100 µs to parse). The
walks here are built once from the same service model and give the same Python
values: structures keep only modelled members that are not null, blobs are
base64, timestamps go through botocore's own converters, and every subtree
holding none of those is passed through untouched. Unknown and missing required
parameters raise botocore's `ParamValidationError`, as its validator would;
other type checks are left to the server.
"""

from __future__ import annotations

import base64
import decimal
from collections.abc import Callable
from typing import Any, Final

from botocore.exceptions import ParamValidationError
from botocore.model import Shape, StructureShape
from botocore.serialize import create_serializer
from botocore.utils import parse_timestamp

__all__ = ["Walk", "compile_input", "compile_output"]

Walk = Callable[[Any], Any]
"""One value in, its serialized (or parsed) form out."""

_BOTOCORE: Final[Any] = create_serializer("json", include_validation=False)
"""botocore's own converters for the leaves that need one (timestamps, floats, blobs)."""

_TRANSFORMED_LEAVES: Final = frozenset({"blob", "timestamp", "float", "double"})
_PARSED_LEAVES: Final = frozenset({"blob", "timestamp"})


def compile_input(shape: Shape) -> Walk:
    """The walk that turns call parameters of `shape` into the JSON body's value,
    as `JSONSerializer._serialize` does."""
    return _Compiler(output=False).walk(shape) or _same


def compile_output(shape: Shape) -> Walk:
    """The walk that turns a decoded JSON body of `shape` into botocore's parsed
    value, as `JSONParser._parse_shape` does."""
    return _Compiler(output=True).walk(shape) or _same


def _same(value: Any) -> Any:
    return value


class _Compiler:
    """Builds one walk per shape name; a recursive shape (AttributeValue) refers
    to its own walk through a cell filled once it is built."""

    def __init__(self, *, output: bool) -> None:
        self._output = output
        self._leaves = _PARSED_LEAVES if output else _TRANSFORMED_LEAVES
        self._built: dict[str, list[Walk | None]] = {}
        self._needed: dict[str, bool] = {}

    def walk(self, shape: Shape) -> Walk | None:
        """The walk of `shape`, or None when its values pass through unchanged."""
        if not self._needs_walk(shape, set()):
            return None
        cell = self._built.get(shape.name)
        if cell is not None:
            return cell[0] if cell[0] is not None else _late(cell)
        cell = [None]
        self._built[shape.name] = cell
        built = self._build(shape)
        cell[0] = built
        return built

    def _needs_walk(self, shape: Shape, seen: set[str]) -> bool:
        """Whether any value under `shape` is changed on the way (a structure
        always is: its members are checked or filtered)."""
        known = self._needed.get(shape.name)
        if known is not None:
            return known
        kind = shape.type_name
        if kind == "structure":
            needed = not getattr(shape, "is_document_type", False)
        elif kind in self._leaves:
            needed = True
        elif kind == "list" or kind == "map":
            if shape.name in seen:
                return False
            seen.add(shape.name)
            inner = shape.member if kind == "list" else shape.value  # type: ignore[attr-defined]
            needed = self._needs_walk(inner, seen)
        else:
            needed = False
        self._needed[shape.name] = needed
        return needed

    def _plain(self, shape: Shape) -> frozenset[str] | None:
        """For a structure: the wire names of its members whose values pass unchanged,
        so a value holding only those passes whole (every AttributeValue but M, L, B
        and BS). None for any other shape, and on the way in for a structure with
        required members (they must be checked)."""
        if shape.type_name != "structure" or getattr(shape, "is_document_type", False):
            return None
        assert isinstance(shape, StructureShape)
        if not self._output and shape.required_members:
            return None
        return frozenset(
            name
            for name, member in shape.members.items()
            if member.serialization.get("name", name) == name
            and not self._needs_walk(member, set())
        )

    def _build(self, shape: Shape) -> Walk:
        kind = shape.type_name
        if kind == "structure":
            assert isinstance(shape, StructureShape)
            return self._output_structure(shape) if self._output else self._input_structure(shape)
        if kind == "list" or kind == "map":
            inner_shape = shape.member if kind == "list" else shape.value  # type: ignore[attr-defined]
            inner = self.walk(inner_shape)
            assert inner is not None
            plain = self._plain(inner_shape)
            if self._output:
                return _parse_list(inner, plain) if kind == "list" else _parse_map(inner, plain)
            return _serialize_list(inner, plain) if kind == "list" else _serialize_map(inner, plain)
        if kind == "blob":
            return base64.b64decode if self._output else _BOTOCORE._get_base64
        if kind == "timestamp":
            if self._output:
                return parse_timestamp
            timestamp_format = shape.serialization.get("timestampFormat")
            return lambda value: _BOTOCORE._convert_timestamp_to_str(value, timestamp_format)
        return _float  # float, double

    def _input_structure(self, shape: StructureShape) -> Walk:
        members: dict[str, tuple[str, Walk | None]] = {
            name: (member.serialization.get("name", name), self.walk(member))
            for name, member in shape.members.items()
        }
        required = frozenset(shape.required_members)
        shape_name = shape.name
        plain = self._plain(shape)

        def serialize(value: Any) -> Any:
            if plain is not None and plain.issuperset(value):
                return value  # every member passes unchanged (an AttributeValue's S, N, ...)
            serialized = {}
            for key, item in value.items():
                found = members.get(key)
                if found is None:
                    raise ParamValidationError(
                        report=f'Unknown parameter in {shape_name}: "{key}", '
                        f"must be one of: {', '.join(members)}"
                    )
                wire_name, inner = found
                serialized[wire_name] = item if inner is None else inner(item)
            if required and not required.issubset(value):
                missing = ", ".join(sorted(required.difference(value)))
                raise ParamValidationError(
                    report=f"Missing required parameter in {shape_name}: {missing}"
                )
            return serialized

        return serialize

    def _output_structure(self, shape: StructureShape) -> Walk:
        members: dict[str, tuple[str, Walk | None]] = {
            member.serialization.get("name", name): (name, self.walk(member))
            for name, member in shape.members.items()
        }
        is_union = bool(getattr(shape, "is_tagged_union", False))
        same_named = frozenset(wire for wire, (name, _) in members.items() if wire == name)
        walks = {wire: inner for wire, (_, inner) in members.items() if inner is not None}
        walked = frozenset(walks)

        def parse(value: Any) -> Any:
            if value is None:
                return None
            if same_named.issuperset(value) and None not in value.values():
                # Known, non-null members only: walked in place (the decoded JSON's own).
                for wire_name in walked.intersection(value):
                    value[wire_name] = walks[wire_name](value[wire_name])
                return value
            parsed = {}
            for wire_name, item in value.items():
                found = members.get(wire_name)
                if found is None or item is None:
                    continue
                name, inner = found
                parsed[name] = item if inner is None else inner(item)
            if is_union and not parsed:
                tags = [key for key, item in value.items() if key != "__type" and item is not None]
                if tags:
                    return {"SDK_UNKNOWN_MEMBER": {"name": tags[0]}}
            return parsed

        return parse


def _parse_list(item: Walk, plain: frozenset[str] | None) -> Walk:
    """Items walked in place (the list is the decoded JSON's own); a structure holding
    only plain, non-null members is left as decoded, checked inline (no call)."""
    if plain is None:

        def parse_all(values: Any) -> Any:
            for index, value in enumerate(values):
                values[index] = item(value)
            return values

        return parse_all
    passes = plain.issuperset

    def parse(values: Any) -> Any:
        for index, value in enumerate(values):
            if type(value) is not dict or not passes(value) or None in value.values():
                values[index] = item(value)
        return values

    return parse


def _parse_map(entry: Walk, plain: frozenset[str] | None) -> Walk:
    """Values walked in place (the map is the decoded JSON's own); a structure holding
    only plain, non-null members is left as decoded, checked inline (no call)."""
    if plain is None:

        def parse_all(values: Any) -> Any:
            for key, value in values.items():
                values[key] = entry(value)
            return values

        return parse_all
    passes = plain.issuperset

    def parse(values: Any) -> Any:
        for key, value in values.items():
            if type(value) is not dict or not passes(value) or None in value.values():
                values[key] = entry(value)
        return values

    return parse


def _serialize_list(item: Walk, plain: frozenset[str] | None) -> Walk:
    """The caller's list when no item changes, else a copy: parameters are never changed."""
    passes = plain.issuperset if plain is not None else None

    def serialize(values: Any) -> Any:
        copied: list[Any] | None = None
        for index, value in enumerate(values):
            if passes is not None and type(value) is dict and passes(value):
                continue
            walked = item(value)
            if walked is not value:
                if copied is None:
                    copied = list(values)
                copied[index] = walked
        return values if copied is None else copied

    return serialize


def _serialize_map(entry: Walk, plain: frozenset[str] | None) -> Walk:
    """The caller's map when no value changes, else a copy: parameters are never changed."""
    passes = plain.issuperset if plain is not None else None

    def serialize(values: Any) -> Any:
        copied: dict[Any, Any] | None = None
        for key, value in values.items():
            if passes is not None and type(value) is dict and passes(value):
                continue
            walked = entry(value)
            if walked is not value:
                if copied is None:
                    copied = dict(values)
                copied[key] = walked
        return values if copied is None else copied

    return serialize


def _late(cell: list[Walk | None]) -> Walk:
    """The walk of a shape still being built (a recursive reference)."""

    def walk(value: Any) -> Any:
        inner = cell[0]
        assert inner is not None
        return inner(value)

    return walk


def _float(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        value = float(value)
    return _BOTOCORE._handle_float(value)
