"""moto's update-expression validators walk the tree with each type check made once.

Every `UpdateItem` runs ten processors over its expression's tree
(`moto.dynamodb.parsing.validators.UpdateExpressionValidator`), each a
`DepthFirstTraverser`. For every node, the stock walk rebuilds the processor's
class-to-function map twice and asks `isinstance` against abstract base classes
(each an `ABCMeta.__instancecheck__`): a third of the server's CPU under the
emulator's calls. The walk here visits the same nodes in the same order and calls
the same functions; which map entry a node's class takes (the first it is an
instance of, in the map's order) is decided once per processor class and node
class, and a processor's map is built once per walk.

Used by `LocalMotoServer`, which applies one request at a time.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

__all__ = ["install", "takes_cached_walk", "uninstall"]

_MARK = "_streamer_cached"


def install() -> None:
    """Replace `DepthFirstTraverser.traverse` (idempotent)."""
    nodes = _ast_nodes()
    DepthFirstTraverser, Node = nodes.DepthFirstTraverser, nodes.Node

    original = DepthFirstTraverser.traverse
    if getattr(original, _MARK, False):
        return
    is_node: dict[type, bool] = {}
    entry: dict[tuple[type, type], Any] = {}
    """(processor class, node class) → the map key that node class takes, or None."""

    def key_for(processor: Any, node_type: type, mapping: dict[Any, Any]) -> Any:
        found = entry.get((type(processor), node_type), _MISSING)
        if found is _MISSING:
            found = next((k for k in mapping if issubclass(node_type, k)), None)
            entry[(type(processor), node_type)] = found
        return found

    def walk(processor: Any, mapping: dict[Any, Any], node: Any, child_id: int) -> Any:
        node_type = type(node)
        known = is_node.get(node_type)
        if known is None:
            known = is_node[node_type] = isinstance(node, Node)
        if not known:
            return node
        parent_node = node.parent
        children = node.children
        if children is not None:
            pre = processor.pre_processing_of_child
            for index, child in enumerate(children):
                pre(node, index)
                walk(processor, mapping, child, index)
        key = key_for(processor, node_type, mapping)
        if key is not None:
            node = mapping[key](node)
            node.parent = parent_node
            if parent_node:
                parent_node.children[child_id] = node
        return node

    walks_as_stock: dict[type, bool] = {}
    """Traverser class → `takes_cached_walk`, asked once per class."""

    def traverse(self: Any, node: Any) -> Any:
        kind = type(self)
        stock = walks_as_stock.get(kind)
        if stock is None:
            stock = walks_as_stock[kind] = takes_cached_walk(kind)
        if not stock:
            return original(self, node)  # a walk of its own: keep it
        return walk(self, self._processing_map(), node, -1)

    traverse.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(traverse, _MARK, True)
    DepthFirstTraverser.traverse = traverse


def uninstall() -> None:
    """Put moto's own walk back (tests compare the two)."""
    DepthFirstTraverser = _ast_nodes().DepthFirstTraverser
    method = DepthFirstTraverser.traverse
    if getattr(method, _MARK, False):
        DepthFirstTraverser.traverse = method.__wrapped__


def takes_cached_walk(kind: type) -> bool:
    """Whether a traverser class walks as `DepthFirstTraverser` does (so the cached
    walk is its walk): it overrides none of the walk's own steps."""
    stock = _ast_nodes().DepthFirstTraverser
    return all(
        getattr(kind, name) is getattr(stock, name)
        for name in ("nodes_to_be_processed", "process", "traverse_node_recursively")
    )


@functools.cache
def _ast_nodes() -> Any:
    """moto's AST module (untyped: `# type: ignore` at its top)."""
    return importlib.import_module("moto.dynamodb.parsing.ast_nodes")


_MISSING: Any = object()
