"""moto builds an item checking its size once per attribute, not once per attribute pair,
and copies items and writes them out by direct walks.

`moto.dynamodb.models.dynamo_type.Item.__init__` adds attributes one at a time
to a `LimitedSizeDict`, whose `__setitem__` sums the size of every attribute
already there: n attributes cost n²/2 size walks, each recursing through maps
and lists. An item is built on every PutItem, every stream image and every
answer. Here the same running total is kept as the attributes are added, and
`ItemSizeTooLarge` is raised at the same attribute for the same total (over
405,000 bytes, moto's limit).

Every update deep-copies the item twice (for `ReturnValues` and for the stream's
old image), each attribute and nested value through `copy.deepcopy`'s dispatch
and memo. The copy here walks the value tree directly and makes the same tree:
new maps, lists and sets, the same immutable strings and bytes. (A value reached
twice, two attributes holding one value after `SET b = a`, is copied twice where
moto's memo copies it once; moto only reads these copies, for stream images and
`ReturnValues`, so nothing can tell.)

A map or list attribute is written out (`DynamoType.to_regular_json`, for every
answer, stream image and `ReturnValues`) by deep-copying its value, then writing
out each nested value, which deep-copies that value again: each level of nesting
is copied once more. The walk here writes each value once, into new maps and
lists holding the same strings (what the stock method gives: its copies share
nothing mutable either), and base64-decodes a binary as it does.

A value's size (`DynamoType.size`, summed over the whole item for every
attribute an update sets) builds a new `DynamoType` for each value of a map, and
that constructor copies the value's whole subtree: each level of nesting is
rebuilt once more, and the request items' maps made sizing a tenth of the
server's CPU. The walk here adds up the same bytes without building anything.

Used by `LocalMotoServer`, which applies one request at a time.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

__all__ = ["install", "uninstall"]

_MARK = "_streamer_cached"
_LIMIT = 405_000
"""moto's item size limit (`LimitedSizeDict.__setitem__`)."""
_SETS = frozenset({"SS", "NS", "BS"})
_PLAIN_VALUES = (str, bool, bytes, list, dict, type(None))
"""What a value of a DynamoType tree holds (a number is its string)."""


def install() -> None:
    """Replace `Item.__init__` (idempotent)."""
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
    from moto.dynamodb.models.utilities import bytesize

    original = Item.__init__
    if getattr(original, _MARK, False):
        return

    def __init__(self: Any, hash_key: Any, range_key: Any, attrs: dict[str, Any]) -> None:
        self.hash_key = hash_key
        self.range_key = range_key
        built = LimitedSizeDict()
        total = 0
        for key, value in attrs.items():
            typed = DynamoType(value)
            total += bytesize(key) + typed.size()
            if total > _LIMIT:
                raise ItemSizeTooLarge
            dict.__setitem__(built, key, typed)
        self.attrs = built

    _replace(Item, "__init__", __init__, original)
    _install_copies()
    _install_regular_json()
    _install_sizes()


def uninstall() -> None:
    """Put moto's own `Item.__init__` back (tests compare the two)."""
    from moto.dynamodb.models.dynamo_type import Item

    _restore(Item, "__init__")
    _uninstall_copies()
    _uninstall_regular_json()
    _uninstall_sizes()


def _install_copies() -> None:
    """Copy items and values by a direct walk instead of `copy.deepcopy`'s dispatch."""
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict

    stock_item, stock_value = Item.__deepcopy__, DynamoType.__deepcopy__
    if getattr(stock_item, _MARK, False):
        return
    new = object.__new__

    def value_copy(value: Any) -> Any:
        copied = new(DynamoType)
        kind = copied.type = value.type
        inner = value.value
        if kind == "M":
            copied.value = {k: value_copy(v) for k, v in inner.items()}
        elif kind == "L":
            copied.value = [value_copy(v) for v in inner]
        elif kind in _SETS:
            copied.value = list(inner)
        else:
            copied.value = inner
        return copied

    def copy_value(self: Any, memo: dict[int, Any]) -> Any:
        if type(self) is not DynamoType or type(self.value) not in _PLAIN_VALUES:
            return stock_value(self, memo)
        return value_copy(self)

    def copy_item(self: Any, memo: dict[int, Any]) -> Any:
        if type(self) is not Item:
            return stock_item(self, memo)
        result = new(Item)
        result.hash_key = copy.deepcopy(self.hash_key, memo)
        result.range_key = copy.deepcopy(self.range_key, memo)
        attrs = LimitedSizeDict.__new__(LimitedSizeDict)
        for key, value in self.attrs.items():
            dict.__setitem__(attrs, key, copy_value(value, memo))
        result.attrs = attrs
        return result

    _replace(DynamoType, "__deepcopy__", copy_value, stock_value)
    _replace(Item, "__deepcopy__", copy_item, stock_item)


def _uninstall_copies() -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType, Item

    _restore(DynamoType, "__deepcopy__")
    _restore(Item, "__deepcopy__")


def _install_regular_json() -> None:
    """Write out a value in one walk instead of a deep copy per level of nesting."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    stock = DynamoType.to_regular_json
    if getattr(stock, _MARK, False):
        return
    b64decode = base64.b64decode

    def nested(value: Any) -> Any:
        """What the stock method puts in a map or list for `value` (a deep copy of it,
        written out when it is a DynamoType)."""
        kind = type(value)
        if kind is DynamoType:
            return to_regular_json(value)
        if kind is str:
            return value
        copied = copy.deepcopy(value)
        return copied.to_regular_json() if isinstance(copied, DynamoType) else copied

    def to_regular_json(self: Any) -> dict[str, Any]:
        value = self.value
        kind = type(value)
        if type(self) is not DynamoType or kind not in _PLAIN_VALUES:
            return stock(self)
        if kind is dict:
            value = {key: nested(inner) for key, inner in value.items()}
        elif kind is list:
            value = [nested(inner) for inner in value]
        if self.type == "B":
            value = b64decode(value)
        return {self.type: value}

    _replace(DynamoType, "to_regular_json", to_regular_json, stock)


def _uninstall_regular_json() -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType

    _restore(DynamoType, "to_regular_json")


def _install_sizes() -> None:
    """Size a value in one walk instead of a new `DynamoType` per nested value.

    The sizes are the stock method's for a tree as moto's constructor builds it
    (every nested value a `DynamoType`); a list holding anything else, a set, or
    a subclass takes the stock method.
    """
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.utilities import bytesize

    stock = DynamoType.size
    if getattr(stock, _MARK, False):
        return

    def size(self: Any) -> int:
        kind, value = self.type, self.value
        if type(self) is not DynamoType or kind in _SETS:
            return int(stock(self))
        if kind == "S" and type(value) is str:
            return len(value.encode())
        if kind == "N":
            return len(str(value))
        if kind == "M" and type(value) is dict:
            total = 0
            for key, inner in value.items():
                # The stock method sizes `DynamoType(inner)`: a copy, the same size.
                typed = inner if type(inner) is DynamoType else DynamoType(inner)
                text = typed.value
                if typed.type == "S" and type(text) is str and type(key) is str:
                    total += len(key.encode()) + len(text.encode())
                else:
                    total += bytesize(key) + size(typed)
            return total
        if kind == "L" and type(value) is list:
            if not all(type(inner) is DynamoType for inner in value):
                return int(stock(self))
            return sum([size(inner) for inner in value])
        if kind in ("M", "L"):
            return int(stock(self))
        if isinstance(value, bool):
            return 1
        return int(bytesize(value))

    _replace(DynamoType, "size", size, stock)


def _uninstall_sizes() -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType

    _restore(DynamoType, "size")


def _replace(owner: Any, name: str, function: Any, stock: Any) -> None:
    """Put `function` in place of `owner.name` (`stock`), marked, the stock one kept."""
    function.__wrapped__ = stock
    setattr(function, _MARK, True)
    setattr(owner, name, function)


def _restore(owner: Any, name: str) -> None:
    """Put back the method `_replace` replaced, if it did."""
    method = getattr(owner, name)
    if getattr(method, _MARK, False):
        setattr(owner, name, method.__wrapped__)
