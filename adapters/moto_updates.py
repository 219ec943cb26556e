"""moto applies an update expression of top-level attributes as a plan made in one
pass, instead of ten validator walks and an executor walk over its tree.

`UpdateItem` was most of the local server's CPU: moto validates an expression by
walking its tree once per rule (ten walks), then walks it again to execute it.
The expressions the stores write are flat (`SET #status = :s, #attempt =
if_not_exists(#attempt, :zero) + :one REMOVE #lease_until`, `ADD #n :d`), so here
one pass reads the tree into a plan: each action's attribute and the value it
gets, computed with moto's own `DynamoType` arithmetic against the item.

A plan is made only when every rule moto would check is known to pass: at most
one clause of each kind, no attribute named twice, no key attribute, every
placeholder defined, no reserved word as a plain name, operands of matching
number types, moto's type and empty-value checks of `SET`. Anything else, and
every expression with a nested path, a list index, `list_append`, `DELETE` or
`ADD` of a set, goes the stock way, so moto raises its own errors. The plan
then sets and removes attributes in moto's order, through the item's own
`LimitedSizeDict`, so a too-large item fails at the same action.

Used by `LocalMotoServer`, which applies one request at a time.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any

__all__ = ["Plan", "install", "plan_update", "uninstall"]

_MARK = "_streamer_planned"
_SIZE_LIMIT = 405_000
"""moto's item size limit (`LimitedSizeDict.__setitem__`)."""


def _size(value: Any, dynamo_type: Any, bytesize: Any) -> int:
    """An attribute value's size as `LimitedSizeDict` counts it."""
    return int(value.size()) if type(value) is dynamo_type else int(bytesize(str(value)))


@dataclass(slots=True)
class Plan:
    """What an update does: attributes set (or removed, value None) in order."""

    steps: list[tuple[str, Any]]

    def normalize(self) -> None:
        """moto normalizes its validated tree before executing; a plan is in order."""

    def apply(self, item: Any) -> None:
        """Set and remove in order. moto's `LimitedSizeDict` sums the whole item for
        each set (old value included) and refuses one over 405,000 bytes; the same
        sum is kept here as the steps go, and the same set is refused."""
        sizes = _moto("models.dynamo_type")
        bytesize = _moto("models.utilities").bytesize
        attrs = item.attrs
        total = sum(bytesize(k) + _size(v, sizes.DynamoType, bytesize) for k, v in attrs.items())
        for name, value in self.steps:
            old = attrs.get(name)
            old_size = 0 if old is None else bytesize(name) + _size(old, sizes.DynamoType, bytesize)
            if value is None:
                attrs.pop(name, None)
                total -= old_size
                continue
            new_size = bytesize(name) + _size(value, sizes.DynamoType, bytesize)
            if total + new_size > _SIZE_LIMIT:
                raise _moto("exceptions").ItemSizeTooLarge
            dict.__setitem__(attrs, name, value)
            total += new_size - old_size


class _Unplanned(Exception):
    """The expression needs moto's own validation (it may be refused)."""


def install() -> None:
    """Plan updates in `UpdateExpressionValidator` and run plans in
    `UpdateExpressionExecutor` (idempotent)."""
    validators, executors = _moto("parsing.validators"), _moto("parsing.executors")
    validator, executor = validators.UpdateExpressionValidator, executors.UpdateExpressionExecutor
    if getattr(validator.__dict__.get("__init__"), _MARK, False):
        return
    stock_init, stock_validate = validators.Validator.__init__, validator.validate
    stock_execute = executor.execute

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = _arguments(*args, **kwargs)
        plan = plan_update(**bound)
        if plan is None:
            stock_init(self, *args, **kwargs)
        else:
            self._streamer_plan = plan

    def validate(self: Any) -> Any:
        plan = self.__dict__.get("_streamer_plan")
        return plan if plan is not None else stock_validate(self)

    def execute(self: Any, node: Any = None) -> None:
        if node is None and type(self.update_ast) is Plan:
            self.update_ast.apply(self.item)
            return
        stock_execute(self, node)

    for function in (__init__, validate, execute):
        setattr(function, _MARK, True)
    validator.__init__ = __init__
    validator.validate = validate
    executor.execute = execute
    executor._streamer_stock_execute = stock_execute
    validator._streamer_stock_validate = stock_validate


def uninstall() -> None:
    """Put moto's own validation and execution back (tests compare the two)."""
    validators, executors = _moto("parsing.validators"), _moto("parsing.executors")
    validator, executor = validators.UpdateExpressionValidator, executors.UpdateExpressionExecutor
    if not getattr(validator.__dict__.get("__init__"), _MARK, False):
        return
    del validator.__init__
    validator.validate = validator._streamer_stock_validate
    executor.execute = executor._streamer_stock_execute


def _arguments(
    expression: Any,
    expression_attribute_names: dict[str, str] | None,
    expression_attribute_values: dict[str, Any] | None,
    item: Any,
    table: Any,
) -> dict[str, Any]:
    return {
        "tree": expression,
        "names": expression_attribute_names or {},
        "values": expression_attribute_values or {},
        "item": item,
        "table": table,
    }


def plan_update(
    *, tree: Any, names: dict[str, str], values: dict[str, Any], item: Any, table: Any
) -> Plan | None:
    """The plan for `tree` against `item`, or None when moto must validate it."""
    try:
        return _Planner(names, values, item, table).plan(tree)
    except _Unplanned:
        return None


class _Planner:
    def __init__(self, names: dict[str, str], values: dict[str, Any], item: Any, table: Any):
        self._names = names
        self._values = values
        self._item = item
        self._table = table
        self._nodes = _moto("parsing.ast_nodes")
        self._dynamo_type = _moto("models.dynamo_type").DynamoType
        self._reserved = _moto("parsing.reserved_keywords").ReservedKeywords

    def plan(self, tree: Any) -> Plan:
        nodes = self._nodes
        clauses: dict[type, int] = {}
        steps: list[tuple[str, Any]] = []
        removes: list[tuple[str, Any]] = []
        node = tree
        while node is not None:
            _require(type(node) is nodes.UpdateExpression)
            following = None
            for child in node.children:
                kind = type(child)
                if kind is nodes.UpdateExpression:
                    following = child
                    continue
                clauses[kind] = clauses.get(kind, 0) + 1
                _require(clauses[kind] == 1)
                for action in self._actions(child):
                    name, value = self._step(action)
                    if value is None:
                        removes.append((name, None))
                        continue
                    # moto runs a run of REMOVEs when the next other action comes.
                    steps += removes
                    removes = []
                    steps.append((name, value))
            node = following
        steps += removes
        targets = [name for name, _ in steps]
        _require(len(set(targets)) == len(targets))
        return Plan(steps)

    def _actions(self, clause: Any) -> list[Any]:
        nodes = self._nodes
        holder = {
            nodes.UpdateExpressionSetClause: nodes.UpdateExpressionSetActions,
            nodes.UpdateExpressionRemoveClause: nodes.UpdateExpressionRemoveActions,
            nodes.UpdateExpressionAddClause: nodes.UpdateExpressionAddActions,
        }.get(type(clause))
        _require(holder is not None and len(clause.children) == 1)
        found: list[Any] = []
        actions = clause.children[0]
        while actions is not None:
            _require(type(actions) is holder and 1 <= len(actions.children) <= 2)
            found.append(actions.children[0])
            actions = actions.children[1] if len(actions.children) == 2 else None
        return found

    def _step(self, action: Any) -> tuple[str, Any]:
        """(attribute, its new value, or None to remove it)."""
        nodes = self._nodes
        kind = type(action)
        if kind is nodes.UpdateExpressionRemoveAction:
            _require(len(action.children) == 1)
            return self._target(action.children[0])[0], None
        _require(len(action.children) == 2)
        name, token = self._target(action.children[0])
        if kind is nodes.UpdateExpressionAddAction:
            return name, self._added(name, action.children[1])
        _require(kind is nodes.UpdateExpressionSetAction)
        value = self._value(action.children[1])
        for definition in self._table.attr:
            _require(
                definition["AttributeName"] != token or definition["AttributeType"] == value.type
            )
        _require(
            value.value or value.type not in ("S", "B") or token not in self._table.attribute_keys
        )
        return name, value

    def _target(self, path: Any) -> tuple[str, str]:
        """A top-level attribute path: (its name, the token written: placeholder or name)."""
        nodes = self._nodes
        _require(type(path) is nodes.UpdateExpressionPath and len(path.children) == 1)
        element = path.children[0]
        _require(len(element.children) == 1 and type(element.children[0]) is str)
        token = element.children[0]
        if type(element) is nodes.ExpressionAttributeName:
            _require(token in self._names)
            name = self._names[token]
        else:
            _require(type(element) is nodes.ExpressionAttribute)
            _require(token.upper() not in self._reserved.get_reserved_keywords())
            name = token
        _require(name not in self._table.table_key_attrs)
        return name, token

    def _existing(self, path: Any) -> Any:
        """The item's value at a top-level path, or None when it has none."""
        name, _ = self._target(path)
        return self._item.attrs.get(name)

    def _placeholder_value(self, node: Any) -> Any:
        _require(type(node) is self._nodes.ExpressionAttributeValue and len(node.children) == 1)
        token = node.children[0]
        _require(token in self._values)
        return self._dynamo_type(self._values[token])

    def _operand(self, node: Any) -> Any:
        nodes = self._nodes
        kind = type(node)
        if kind is nodes.ExpressionAttributeValue:
            return self._placeholder_value(node)
        if kind is nodes.UpdateExpressionPath:
            existing = self._existing(node)
            _require(existing is not None)  # moto: the attribute does not exist
            return existing
        _require(kind is nodes.UpdateExpressionFunction and len(node.children) == 3)
        function, first, second = node.children
        _require(function == "if_not_exists" and type(first) is nodes.UpdateExpressionPath)
        default = self._placeholder_value(second)
        existing = self._existing(first)
        return default if existing is None else existing

    def _value(self, node: Any) -> Any:
        nodes = self._nodes
        _require(type(node) is nodes.UpdateExpressionValue)
        children = node.children
        if len(children) == 1:
            return self._operand(children[0])
        _require(len(children) == 3 and type(children[1]) is nodes.ExpressionValueOperator)
        left, right = self._operand(children[0]), self._operand(children[2])
        operator = children[1].children[0]
        try:
            if operator == "+":
                return left + right
            _require(operator == "-")
            return left - right
        except TypeError:
            raise _Unplanned() from None

    def _added(self, name: str, node: Any) -> Any:
        value = self._placeholder_value(node)
        _require(value.type == "N")
        existing = self._item.attrs.get(name)
        if existing is None:
            existing = self._dynamo_type({"N": "0"})
        _require(existing.type == "N")
        return existing + value


def _require(condition: bool) -> None:
    if not condition:
        raise _Unplanned()


@functools.cache
def _moto(module: str) -> Any:
    """A module of `moto.dynamodb` (untyped: moto marks its parsers `type: ignore`)."""
    return importlib.import_module(f"moto.dynamodb.{module}")
