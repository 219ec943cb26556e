"""moto builds an item checking its size once per attribute, not once per attribute pair.

`moto.dynamodb.models.dynamo_type.Item.__init__` adds attributes one at a time
to a `LimitedSizeDict`, whose `__setitem__` sums the size of every attribute
already there: n attributes cost n²/2 size walks, each recursing through maps
and lists. An item is built on every PutItem, every stream image and every
answer. Here the same running total is kept as the attributes are added, and
`ItemSizeTooLarge` is raised at the same attribute for the same total (over
405,000 bytes, moto's limit).

Used by `LocalMotoServer`, which applies one request at a time.
"""

from __future__ import annotations

from typing import Any

__all__ = ["install", "uninstall"]

_MARK = "_streamer_cached"
_LIMIT = 405_000
"""moto's item size limit (`LimitedSizeDict.__setitem__`)."""


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

    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(__init__, _MARK, True)
    Item.__init__ = __init__  # type: ignore[method-assign]


def uninstall() -> None:
    """Put moto's own `Item.__init__` back (tests compare the two)."""
    from moto.dynamodb.models.dynamo_type import Item

    method = Item.__init__
    if getattr(method, _MARK, False):
        Item.__init__ = method.__wrapped__  # type: ignore[attr-defined,method-assign]
