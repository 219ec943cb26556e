"""moto's `Query`, answered from the items that can match rather than the whole table.

moto (5.x) answers every `Query` by sorting all of a table's items (`Table.all_items`)
and then filtering them: a query by partition key on a table of 10,000 items takes
about 110 ms, and paging a 2,000-item index result of the same table 2.5 s, so
every query the emulator makes slows down as its tables grow. `install` wraps
`Table.query` so that, for the duration of one call, `all_items` returns only the
candidates: the items under the partition key for a table query, or the items
whose index partition attribute equals the queried value for an index query.
moto's own code then does everything else (conditions, ordering, paging, limits,
projections, filters) on that subset, so each answer is the one moto would give.
It also sorts index results by each key's value computed once, where moto's sort
key rebuilds it (a Decimal for a number) on every comparison. A test compares
both answers query by query, and every contract test runs on the server this is
installed in.

Used by `LocalMotoServer`, which applies one request at a time: the per-call
substitution is never seen by a concurrent request.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["install", "uninstall"]

_MARK = "_streamer_candidates"


def install() -> None:
    """Wrap moto's `Table.query` and `Table.sorted_items` (idempotent)."""
    from moto.dynamodb.models.table import Table

    original = Table.query
    if getattr(original, _MARK, False):
        return
    original_sort = Table.sorted_items

    @functools.wraps(original)
    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        candidates = _candidates(self, hash_key, args, kwargs)
        if candidates is None:
            return original(self, hash_key, *args, **kwargs)
        self.all_items = lambda: candidates
        try:
            return original(self, hash_key, *args, **kwargs)
        finally:
            del self.all_items

    @functools.wraps(original_sort)
    def sorted_items(
        self: Any, hash_key_attrs: list[str], range_key_attrs: list[str | None], items: list[Any]
    ) -> list[Any]:
        # moto's key is a tuple of `DynamoType`s, whose `==` and `<` each rebuild
        # `cast_value` (a Decimal for numbers): compare the cast values once. Within
        # a key attribute every item has the schema's type, so the order is the same.
        names = self._generate_attr_to_sort_by(hash_key_attrs, range_key_attrs)
        items.sort(key=lambda item: tuple(item.attrs[name].cast_value for name in names))
        return items

    setattr(query, _MARK, True)
    Table.query = query  # type: ignore[method-assign]
    Table.sorted_items = sorted_items  # type: ignore[method-assign]


def uninstall() -> None:
    """Put moto's own `Table.query` and `Table.sorted_items` back (tests compare the two)."""
    from moto.dynamodb.models.table import Table

    if getattr(Table.query, _MARK, False):
        Table.query = Table.query.__wrapped__  # type: ignore[attr-defined,method-assign]
        Table.sorted_items = Table.sorted_items.__wrapped__  # type: ignore[attr-defined,method-assign]


# `Table.query(hash_key, range_comparison, range_objs, limit, exclusive_start_key,
# scan_index_forward, projection_expressions, index_name=None, ...)`: where
# `index_name` sits when the backend passes it by position.
_INDEX_NAME_POSITION = 6


def _candidates(
    table: Any, hash_key: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[Any] | None:
    """A superset of the items the query can return, or None to let moto scan."""
    index_name = kwargs.get("index_name")
    if index_name is None and len(args) > _INDEX_NAME_POSITION:
        index_name = args[_INDEX_NAME_POSITION]
    if not index_name:
        if hash_key is None:
            return None
        under = table.items.get(hash_key)
        if under is None:
            return []
        return list(under.values()) if table.range_key_attr else [under]
    conditions = kwargs.get("hash_key_conditions") or []
    if not conditions:
        return None
    attribute, value = conditions[0]
    if value.type not in _PLAIN_TYPES:
        return None
    wanted_type, wanted = value.type, value.value
    found: list[Any] = []
    for under in table.items.values():
        for item in under.values() if table.range_key_attr else (under,):
            got = item.attrs.get(attribute)
            if got is not None and got.value == wanted and got.type == wanted_type:
                found.append(item)
    return found


_PLAIN_TYPES = frozenset({"S", "B"})
"""Key types whose stored form is their value (a number's is not: "1" == "1.0")."""
