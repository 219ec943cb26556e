"""moto's update expressions, parsed once per string and copied node by node.

moto (5.1) parses every `UpdateExpression` twice per `UpdateItem` (once to check
the placeholders it uses, once to apply it) and its validator then deep-copies
the tree before filling it in; for the emulator's claim and completion, the same
few strings on every request, each parse costs 0.3-0.8 ms and each
`copy.deepcopy` 0.25-0.5 ms. `install` wraps `UpdateExpressionParser.make` with a
bounded cache of the trees it returns and gives the validator a `deepcopy` that
copies such a tree node by node (~0.07 ms). A cached tree, checked once, is read
into a `TreeCopier` that makes each further copy from that reading, without
walking the tree or checking it again. moto changes a tree as it applies it
(the validator's copy gets values in place of placeholders, `normalize` reorders
its actions), so a cached tree is handed only to the three places of moto that
read it and nothing else: the handler's two listings of an expression's
placeholders and the backend's `update_item`, whose validator copies the tree
before changing it (`_install_shared_reads`, installed only when moto's source
reads as that says). Every other caller gets a copy.
A copy is made node by node only when that is provably what `copy.deepcopy` would
give: each node a plain object (no `__deepcopy__`, `__reduce__`, slots or state
hooks) reached once, whose state besides `children` and `parent` is immutable,
whose `parent` is the node holding it, and whose leaves are immutable. Anything
else goes to `copy.deepcopy`, and a string moto refuses raises each time.
A contract test compares the trees and the `UpdateItem` answers with and without.

Condition expressions are lexed once per string too (moto lexes each twice per
conditional write, a dozen regular expressions per token); the tokens are
immutable tuples, handed out with new `children` lists. They are parsed once per
string as well: the passes that turn tokens into a condition tree read only the
text, and the only parts of the tree the names and values decide are the nodes
of `#name` and `:value` placeholders, whose value is the name's string and the
value's own dict. Each later parse of that string rebuilds the tree with this
call's placeholders looked up, then makes moto's condition from it with moto's
own `_make_op_condition`; a placeholder the call does not define, or names or
values that are not dicts, take moto's parse (and its error).

Used by `LocalMotoServer`, which applies one request at a time.
"""

from __future__ import annotations

import collections
import copy
import functools
import importlib
from typing import Any

from adapters.moto_source import uses

__all__ = ["TreeCopier", "install", "uninstall"]

_MARK = "_streamer_cached"
_CACHED_EXPRESSIONS = 512
"""Distinct expression strings kept; the emulator uses about a dozen."""
_IMMUTABLE = (str, int, float, bool, type(None))


def install() -> None:
    """Wrap moto's `UpdateExpressionParser.make` (idempotent)."""
    validators, parser = _moto("validators"), _moto("expressions").UpdateExpressionParser
    original = parser.make
    if getattr(original, _MARK, False):
        return
    parse = original.__func__

    @functools.lru_cache(maxsize=_CACHED_EXPRESSIONS)
    def pristine(cls: type, expression: str) -> TreeCopier | None:
        """How to copy moto's tree for `expression` (the tree is never handed out), or
        None when it cannot be copied node by node. A string moto refuses raises each
        time (nothing cached)."""
        tree = parse(cls, expression)
        return TreeCopier(tree) if _checked_copy(tree) is not None else None

    @functools.wraps(parse)
    def make(cls: Any, expression_str: str) -> Any:
        if type(expression_str) is not str:
            return parse(cls, expression_str)
        copier = pristine(cls, expression_str)
        return parse(cls, expression_str) if copier is None else copier.copy()

    setattr(make, _MARK, True)
    parser.make = classmethod(make)
    validators.deepcopy = deepcopy_tree
    _install_shared_reads(parser, pristine)
    _install_condition_lexing()


def _install_shared_reads(parser: Any, pristine: Any) -> None:
    """Hand the cached tree itself to the three places of moto that only read it, and
    keep the backend's rewrite of each expression string.

    moto's DynamoDB handler parses an `UpdateExpression` (in `update_item` and in
    `transact_write_items`) only to list its placeholders (`find_clauses`), and the
    backend's `update_item` only hands its tree to `UpdateExpressionValidator`, whose
    `__init__` deep-copies it before anything is changed (or, planned, reads it:
    `adapters.moto_updates`). Those modules get a parser whose `make` returns the
    cached tree; every other caller of moto's parser still gets a copy. Installed
    only when moto's source uses the trees that way (`_reads_only`); a tree that
    cannot be copied node by node is parsed afresh, as before. The backend's
    `re.sub` of each expression (spaces around `=`, `+`, `-`) is kept per string.
    """
    responses, models = _dynamodb("responses"), _dynamodb("models")
    if getattr(responses.UpdateExpressionParser, _MARK, False) or not _reads_only(
        responses, models
    ):
        return

    class SharedTreeParser(parser):  # type: ignore[misc]
        """moto's parser, whose `make` hands out the cached tree (read, never changed)."""

        @classmethod
        def make(cls: Any, expression_str: str) -> Any:
            copier = pristine(parser, expression_str) if type(expression_str) is str else None
            return parser.make(expression_str) if copier is None else copier.tree

    setattr(SharedTreeParser, _MARK, True)
    responses.UpdateExpressionParser = SharedTreeParser
    models.UpdateExpressionParser = SharedTreeParser
    models.re = _rewrites_kept(models.re)


def _reads_only(responses: Any, models: Any) -> bool:
    """Whether moto's source uses the handler's and the backend's trees as
    `_install_shared_reads` says (any change, and the copies stay)."""
    import inspect

    try:
        handler = inspect.getsource(responses.DynamoHandler.update_item)
        transact = inspect.getsource(responses.DynamoHandler.transact_write_items)
        backend = inspect.getsource(models.DynamoDBBackend.update_item)
        validator = inspect.getsource(_moto("validators").Validator.__init__)
        handler_module, backend_module = inspect.getsource(responses), inspect.getsource(models)
    except (OSError, TypeError):
        return False
    return (
        handler_module.count("UpdateExpressionParser.make(") == 2
        and uses(handler, "update_expression_ast") == _HANDLER_USES
        and uses(transact, "update_expression_ast") == _TRANSACT_USES
        and backend_module.count("UpdateExpressionParser.make(") == 1
        and uses(backend, "update_expression_ast") == _BACKEND_USES
        and uses(validator, "expression") == _VALIDATOR_USES
        and uses(backend_module, "re") == _RE_USES
    )


_HANDLER_USES = [" = UpdateExpress", ".find_clauses(\n ", ".find_clauses(\n "]
_TRANSACT_USES = [" = UpdateExpress", ".find_clauses(\n "]
_BACKEND_USES = [" = UpdateExpress", ",\n              ", ",\n              "]
_VALIDATOR_USES = [": Node,\n        ", "(Node): The root", " to be validated", ")\n"]
_RE_USES = ["\nfrom collection", '.sub(r"\\s*([=\\+-']
"""moto 5.1's uses (each with the 16 characters after it); the validator's last is
`self.node_to_validate = deepcopy(expression)`."""


def _rewrites_kept(module: Any) -> Any:
    """`re`, with `sub` of three strings (no count, no flags) kept per string."""
    import types

    stock = module.sub

    @functools.lru_cache(maxsize=_CACHED_EXPRESSIONS)
    def kept(pattern: str, repl: str, string: str) -> str:
        return str(stock(pattern, repl, string))

    def sub(pattern: Any, repl: Any, string: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs or not all(type(a) is str for a in (pattern, repl, string)):
            return stock(pattern, repl, string, *args, **kwargs)
        return kept(pattern, repl, string)

    shim = types.ModuleType("re", "`re`, the backend's rewrite of each expression kept")
    for name in module.__all__:
        setattr(shim, name, getattr(module, name))
    shim.sub = sub  # type: ignore[attr-defined]
    setattr(shim, _MARK, True)
    shim._streamer_stock = module  # type: ignore[attr-defined]
    return shim


def _dynamodb(module: str) -> Any:
    """A module of `moto.dynamodb`."""
    return importlib.import_module(f"moto.dynamodb.{module}")


def _install_condition_lexing() -> None:
    """Lex each condition string once: moto lexes every `ConditionExpression` twice
    per conditional write, with a dozen regular expressions per token. Tokens are
    handed out as new `Node` tuples with new (empty) `children` lists."""
    conditions = importlib.import_module("moto.dynamodb.comparisons").ConditionExpressionParser
    original = conditions._lex_condition_expression
    if getattr(original, _MARK, False):
        return
    lexed: dict[str, tuple[Any, ...]] = {}

    @functools.wraps(original)
    def lex(self: Any) -> Any:
        expression = self.condition_expression
        tokens = lexed.get(expression) if type(expression) is str else None
        if tokens is None:
            tokens = tuple(original(self))  # raises for a string moto cannot lex
            if type(expression) is str and len(lexed) < _CACHED_EXPRESSIONS:
                lexed[expression] = tokens
        return collections.deque(t._replace(children=list(t.children)) for t in tokens)

    setattr(lex, _MARK, True)
    conditions._lex_condition_expression = lex
    _install_condition_parsing(conditions)


def _install_condition_parsing(conditions: Any) -> None:
    """Parse each condition string once; later calls rebind its placeholders."""
    stock = conditions.parse
    if getattr(stock, _MARK, False):
        return
    kind, nonterminal = conditions.Kind, conditions.Nonterminal
    value_kind, literal, identifier = (
        kind.EXPRESSION_ATTRIBUTE_VALUE,
        kind.LITERAL,
        nonterminal.IDENTIFIER,
    )
    parsed: dict[str, tuple[Any, list[str], list[str]]] = {}
    """expression → (its tree, the names and the values it uses, in moto's order)."""

    def tree_of(self: Any) -> Any:
        """`ConditionExpressionParser.parse`'s passes, up to the tree (moto's order)."""
        nodes = self._lex_condition_expression()
        nodes = self._parse_paths(nodes)
        nodes = self._apply_functions(nodes)
        nodes = self._apply_comparator(nodes)
        nodes = self._apply_in(nodes)
        nodes = self._apply_between(nodes)
        nodes = self._apply_parens_and_booleans(nodes)
        return nodes[0]

    make = tuple.__new__  # what `Node._replace` ends in, without its field-by-field pops

    def rebound(node: Any, names: dict[str, Any], values: dict[str, Any]) -> Any:
        """A new tree like `node`, each placeholder's value looked up (KeyError if absent)."""
        nonterminal, node_kind, text, value, children = node
        if node_kind == value_kind:
            return make(type(node), (nonterminal, node_kind, text, values[text], list(children)))
        if node_kind == literal and nonterminal == identifier and text[:1] == "#":
            return make(type(node), (nonterminal, node_kind, text, names[text], list(children)))
        rebuilt = [rebound(child, names, values) for child in children]
        return make(type(node), (nonterminal, node_kind, text, value, rebuilt))

    @functools.wraps(stock)
    def parse(self: Any) -> Any:
        expression = self.condition_expression
        if type(self) is not conditions or type(expression) is not str or not expression:
            return stock(self)
        known = parsed.get(expression)
        if known is None:
            node = tree_of(self)  # raises as moto's parse does: nothing is kept
            used = (self._find_literals(node), self._find_expr_attr_values(node))
            if len(parsed) < _CACHED_EXPRESSIONS:
                parsed[expression] = (node, *used)
        else:
            names, values = self.expression_attribute_names, self.expression_attribute_values
            template, used = known[0], (known[1], known[2])
            if not (
                (type(names) is dict or not any(u[:1] == "#" for u in used[0]))
                and (type(values) is dict or not used[1])
            ):
                return stock(self)
            try:
                node = rebound(template, names or {}, values or {})
            except KeyError:
                return stock(self)  # moto's own error, from moto's own lookup
        self.expr_attr_names_found.extend(used[0])
        self.expr_attr_values_found.extend(used[1])
        return self._make_op_condition(node)

    setattr(parse, _MARK, True)
    conditions.parse = parse


def deepcopy_tree(value: Any, memo: dict[int, Any] | None = None) -> Any:
    """`copy.deepcopy`, node by node for a tree `_checked_copy` accepts (moto's
    validator copies every expression it is given before changing it)."""
    if memo is None:
        copied = _checked_copy(value)
        if copied is not None:
            return copied
    return copy.deepcopy(value, memo)


def uninstall() -> None:
    """Put moto's own `UpdateExpressionParser.make` and `deepcopy` back (tests compare)."""
    validators, parser = _moto("validators"), _moto("expressions").UpdateExpressionParser
    make = parser.__dict__["make"].__func__
    if getattr(make, _MARK, False):
        parser.make = classmethod(make.__wrapped__)
    validators.deepcopy = copy.deepcopy
    responses, models = _dynamodb("responses"), _dynamodb("models")
    shared = responses.UpdateExpressionParser
    if getattr(shared, _MARK, False):
        responses.UpdateExpressionParser = models.UpdateExpressionParser = shared.__base__
        models.re = models.re._streamer_stock
    conditions = importlib.import_module("moto.dynamodb.comparisons").ConditionExpressionParser
    lex = conditions._lex_condition_expression
    if getattr(lex, _MARK, False):
        conditions._lex_condition_expression = lex.__wrapped__
    parse = conditions.parse
    if getattr(parse, _MARK, False):
        conditions.parse = parse.__wrapped__


def _moto(module: str) -> Any:
    """A module of `moto.dynamodb.parsing` (untyped: moto marks them `type: ignore`)."""
    return importlib.import_module(f"moto.dynamodb.parsing.{module}")


def _checked_copy(root: Any) -> Any:
    """A copy of `root` node by node, if it is what `copy.deepcopy(root)` would give
    (new nodes and `children` lists, the same immutable leaves and attributes,
    each `parent` pointing into the copy); else None.

    That holds for a tree (no node reached twice) of plain nodes (`_plain`), whose
    state is immutable but for `children` and `parent`, with each `parent` the node
    holding it (the root's None) and immutable leaves.
    """
    node_type = _moto("ast_nodes").Node
    seen: set[int] = set()

    def copy(node: Any, parent: Any, original_parent: Any) -> Any:
        cls: Any = type(node)
        state = node.__dict__
        if (
            id(node) in seen
            or not _plain(cls)
            or state.get("parent", _MISSING) is not original_parent
            or not isinstance(state.get("type"), str)
            or (len(state) != 3 and not _immutable_state(state))
        ):
            raise _NotPlain
        seen.add(id(node))
        copied = cls.__new__(cls)
        copied.__dict__.update(state)
        copied.parent = parent
        children = state.get("children", _MISSING)
        if children is None:
            return copied
        if type(children) is not list:
            raise _NotPlain
        out = []
        for child in children:
            if isinstance(child, node_type):
                out.append(copy(child, copied, node))
            elif isinstance(child, _IMMUTABLE):
                out.append(child)
            else:
                raise _NotPlain
        copied.children = out
        return copied

    if not isinstance(root, node_type):
        return None
    try:
        return copy(root, None, None)
    except _NotPlain:
        return None


class TreeCopier:
    """Makes what `_checked_copy(tree)` makes, for a tree it accepted and nothing
    changes (the cache's own, handed only to moto's readers), without walking or
    checking it again.

    The tree is read once into its nodes in walk order: each node's class, its state
    and its parent's position; then each node's children, a node by its position or
    a leaf as it is. A copy is a new node per entry with that state, `parent` set to
    the copy's node, and new `children` lists.
    """

    __slots__ = ("_children", "_nodes", "tree")

    def __init__(self, tree: Any) -> None:
        node_type = _moto("ast_nodes").Node
        positions: dict[int, int] = {}
        nodes: list[tuple[Any, dict[str, Any], int]] = []
        children: list[tuple[int, list[tuple[int, Any]]]] = []

        def read(node: Any, parent: int) -> int:
            position = positions[id(node)] = len(nodes)
            nodes.append((type(node), dict(node.__dict__), parent))
            kids = node.__dict__.get("children")
            if kids is not None:
                spec = [
                    (read(kid, position), None) if isinstance(kid, node_type) else (-1, kid)
                    for kid in kids
                ]
                children.append((position, spec))
            return position

        read(tree, -1)
        self.tree = tree
        """The tree read: handed only to moto's readers (`_install_shared_reads`)."""
        self._nodes = tuple(nodes)
        self._children = tuple(children)

    def copy(self) -> Any:
        """A new tree: new nodes and `children` lists, the same immutable state and leaves."""
        made: list[Any] = []
        for cls, state, parent in self._nodes:
            node = cls.__new__(cls)
            node.__dict__.update(state)
            node.parent = made[parent] if parent >= 0 else None
            made.append(node)
        for position, spec in self._children:
            made[position].children = [made[j] if j >= 0 else leaf for j, leaf in spec]
        return made[0]


class _NotPlain(Exception):
    """A tree `copy_tree` would not copy as `copy.deepcopy` does."""


_MISSING: Any = object()


def _immutable_state(state: dict[str, Any]) -> bool:
    return "children" in state and all(
        isinstance(v, _IMMUTABLE) for k, v in state.items() if k not in _LINKS
    )


_LINKS = frozenset({"children", "parent"})


@functools.cache
def _plain(cls: Any) -> bool:
    """A class `copy.deepcopy` copies as `cls.__new__` plus a deep copy of `__dict__`."""
    base: Any = object
    return (
        not hasattr(cls, "__deepcopy__")
        and all(getattr(cls, hook) is getattr(base, hook) for hook in _OBJECT_HOOKS)
        and not hasattr(cls, "__setstate__")
        and not any("__slots__" in vars(c) for c in cls.__mro__)
    )


_OBJECT_HOOKS = ("__reduce_ex__", "__reduce__", "__getstate__")
