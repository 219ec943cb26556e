"""moto's `UpdateItem` keeps what it reads of the item before the update, not two deep
copies of it.

moto deep-copies the item twice per update. The handler
(`DynamoHandler.update_item`) copies it and writes the copy out at once
(`existing_item.to_json()`, for `ReturnValues` and the changed attributes); the
backend (`DynamoDBBackend.update_item`) copies it before applying the update and
hands the copy to the stream, which writes it out as the record's old image and
reads its key. `Item.to_json` builds new maps and lists and keeps only immutable
strings, booleans and bytes of the item, so for the handler the item itself gives
the same output as its copy; for the backend, what the stream reads of the copy
(the written-out attributes, the keys) is taken before the update, and only that
is kept. An item holding anything else (a value `to_json` would share) is copied
as moto copies it.

Each module's `copy` is swapped for one whose `deepcopy` does this for an item and
is `copy.deepcopy` for anything else. It is installed only after reading moto's
source: the handler and the backend each deep-copy one item in the one place
described, use that copy only as described, and the stream reads only
`to_json()`, `hash_key` and `range_key` of the old item; a moto that does
anything else keeps its own copies.

Used by `LocalMotoServer`, which applies one request at a time.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import types
from collections.abc import Callable
from typing import Any

from adapters.moto_source import uses

__all__ = ["Snapshot", "install", "uninstall"]

_MARK = "_streamer_snapshots"
_SCALARS = (str, bool, bytes, type(None))


class Snapshot:
    """What the stream reads of an item before an update: its written-out attributes
    and copies of its keys (anything else raises AttributeError)."""

    __slots__ = ("_attributes", "_read", "hash_key", "range_key")

    def __init__(self, item: Any) -> None:
        self.hash_key = copy.deepcopy(item.hash_key)
        self.range_key = copy.deepcopy(item.range_key)
        self._attributes: dict[str, Any] = item.to_json()["Attributes"]
        self._read = False

    def to_json(self, root_attr_name: str = "Attributes") -> dict[str, Any]:
        """`Item.to_json` of the item as it was (a fresh copy after the first call)."""
        attributes = copy.deepcopy(self._attributes) if self._read else self._attributes
        self._read = True
        return {root_attr_name: attributes}


def install() -> None:
    """Swap the `copy` of moto's DynamoDB handler and backend modules (idempotent)."""
    responses, models = _module("responses"), _module("models")
    if getattr(responses.copy, _MARK, False) or not _reads_as_described(responses, models):
        return
    from moto.dynamodb.models.dynamo_type import Item

    def for_handler(value: Any) -> Any:
        return value  # written out at once; `to_json` shares nothing mutable

    responses.copy = _copy_module(Item, for_handler)
    models.copy = _copy_module(Item, Snapshot)


def uninstall() -> None:
    """Put the `copy` module back (tests compare the two)."""
    for module in (_module("responses"), _module("models")):
        if getattr(module.copy, _MARK, False):
            module.copy = copy


def _module(name: str) -> Any:
    return importlib.import_module(f"moto.dynamodb.{name}")


def _copy_module(item_class: type, take: Callable[[Any], Any]) -> types.ModuleType:
    """`copy`, with `deepcopy(item)` giving `take(item)` for a plain item."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    def shares_nothing(item: Any) -> bool:
        """Whether `item.to_json()` keeps nothing mutable of the item."""
        for value in item.attrs.values():
            if type(value) is not DynamoType:
                return False
            inner = value.value
            kind = type(inner)
            if kind is list:
                if not all(type(v) is DynamoType or type(v) is str for v in inner):
                    return False
            elif kind is dict:
                if not all(type(v) is DynamoType for v in inner.values()):
                    return False
            elif kind not in _SCALARS:
                return False
        return True

    def deepcopy(value: Any, memo: Any = None, _nil: Any = None) -> Any:
        if memo is None and type(value) is item_class and shares_nothing(value):
            return take(value)
        return copy.deepcopy(value, memo)

    module = types.ModuleType("copy", "`copy`, an item's deep copy taken as moto uses it")
    for name in copy.__all__:
        setattr(module, name, getattr(copy, name))
    module.deepcopy = deepcopy  # type: ignore[attr-defined]
    setattr(module, _MARK, True)
    return module


def _reads_as_described(responses: Any, models: Any) -> bool:
    """Whether moto's source uses these copies as the module docstring says."""
    from moto.dynamodb.models.table import StreamRecord, StreamShard

    try:
        handler = inspect.getsource(responses.DynamoHandler.update_item)
        backend = inspect.getsource(models.DynamoDBBackend.update_item)
        add = inspect.getsource(StreamShard.add)
        record = inspect.getsource(StreamRecord.__init__)
        handler_module, backend_module = inspect.getsource(responses), inspect.getsource(models)
    except (OSError, TypeError):
        return False
    return (
        handler_module.count("copy.") == 1
        and "copy.deepcopy(self.dynamodb_backend.get_item(name, key))" in handler
        and uses(handler, "existing_item") == _HANDLER_USES
        and backend_module.count("copy.deepcopy(item)") == 1
        and uses(backend, "orig_item") == _BACKEND_USES
        and "self.items.append(StreamRecord(self.table, t, event_name, old, new, seq))" in add
        and uses(add, "old") == _ADD_USES
        and uses(record, "old") == _RECORD_OLD_USES
        and uses(record, "rec") == _RECORD_REC_USES
    )


_HANDLER_USES = [" = copy.deepcopy", ":\n            ex", '.to_json()["Attr']
_BACKEND_USES = [" = copy.deepcopy", ", item)\n        "]
_ADD_USES = [": Optional[Item]", " is None:\n      ", ", new, seq))\n   "]
_RECORD_OLD_USES = [
    ": Optional[Item]",
    '.to_json()["Attr',
    " is not None els",
    " if old is not N",
    " is not None els",
]
_RECORD_REC_USES = [" = old if old is", ".hash_key.to_jso", " is not None:\n  ", ".range_key.to_js"]
"""moto 5.1's uses of the copies (each with the 16 characters after it): any change, no install."""
