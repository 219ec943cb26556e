"""`adapters.moto_expressions` gives moto's trees and moto's answers, without reparsing."""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.dynamodb.parsing import validators
from moto.dynamodb.parsing.ast_nodes import Node
from moto.dynamodb.parsing.expressions import UpdateExpressionParser
from moto_answers import condition_answers, pk_table, update_answers

from adapters import moto_expressions

EXPRESSIONS = [
    # the emulator's own: a claim, a completion, the connection counter, a ping
    "SET #status = :set_status, #lease_until = :set_lease_until, "
    "#processing_started = :set_processing_started, #updated_at = :set_updated_at, "
    "#attempt = if_not_exists(#attempt, :zero) + :one",
    "SET #status = :set_status, #result = :set_result, #completed_at = :set_completed_at, "
    "#updated_at = :set_updated_at, #expires_at = :set_expires_at, #progress = :set_progress "
    "REMOVE #lease_until",
    "ADD #n :d",
    "SET LastPing = :at",
    # the rest of the grammar
    "SET a.b[2].c = list_append(if_not_exists(a.b, :empty), :more), d = d - :one",
    "REMOVE a[1], a[3], b.c DELETE s :gone ADD n :one",
    "set #a=:b,c=  :d   remove  e",
]


def _shape(node: Any, numbers: dict[int, int]) -> Any:
    """A node's whole state, with `parent` as the parent's position in the walk."""
    if not isinstance(node, Node):
        return (type(node).__name__, node)
    numbers[id(node)] = len(numbers)
    state = {key: value for key, value in vars(node).items() if key not in ("children", "parent")}
    children = node.children
    return (
        type(node).__name__,
        state,
        None if node.parent is None else numbers.get(id(node.parent), "outside"),
        None if children is None else [_shape(child, numbers) for child in children],
    )


def shape(tree: Any) -> Any:
    """What `copy.deepcopy` keeps of a tree: types, state, children, parent links."""
    return _shape(tree, {})


def _nodes(tree: Any) -> list[Any]:
    found = [tree]
    for child in tree.children or []:
        if isinstance(child, Node):
            found += _nodes(child)
    return found


@pytest.fixture
def installed() -> Iterator[None]:
    moto_expressions.install()
    yield
    moto_expressions.install()


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_each_tree_is_the_one_moto_parses_and_shares_no_node(
    installed: None, expression: str
) -> None:
    moto_expressions.uninstall()
    expected = UpdateExpressionParser.make(expression)
    moto_expressions.install()
    first = UpdateExpressionParser.make(expression)
    second = UpdateExpressionParser.make(expression)

    assert shape(first) == shape(second) == shape(expected)
    assert not {id(n) for n in _nodes(first)} & {id(n) for n in _nodes(second)}
    lists = [{id(n.children) for n in _nodes(t) if n.children is not None} for t in (first, second)]
    assert not lists[0] & lists[1]


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_a_copier_makes_the_checked_copy_again_whatever_its_copies_go_through(
    expression: str,
) -> None:
    tree = UpdateExpressionParser.make(expression)
    expected = shape(copy.deepcopy(tree))
    copier = moto_expressions.TreeCopier(tree)
    first = copier.copy()
    assert shape(first) == expected
    assert [list(vars(n)) for n in _nodes(first)] == [list(vars(n)) for n in _nodes(tree)]
    for node in _nodes(first):  # what moto's validator and normalize do to their copy
        node.parent = None
        node.type = "changed"
        if node.children is not None:
            node.children.reverse()
            node.children.append("added")
    second = copier.copy()
    assert shape(second) == expected
    assert shape(tree) == expected
    assert not {id(n) for n in _nodes(first)} & {id(n) for n in _nodes(second)}


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_the_validators_copy_is_a_deep_copy(expression: str) -> None:
    tree = UpdateExpressionParser.make(expression)
    copied = moto_expressions.deepcopy_tree(tree)

    assert shape(copied) == shape(copy.deepcopy(tree))
    assert not {id(n) for n in _nodes(copied)} & {id(n) for n in _nodes(tree)}


def test_what_is_not_a_plain_tree_is_deep_copied_by_copy() -> None:
    tree = UpdateExpressionParser.make("SET a = :v")
    child = tree.children[0]
    odd = [
        {"a": [1, 2]},  # not a node
        child,  # a subtree: its parent is outside it
    ]
    shared = UpdateExpressionParser.make("SET a = :v")
    shared.children.append(shared.children[0])  # a node reached twice
    odd.append(shared)
    valued = UpdateExpressionParser.make("SET a = :v")
    valued.children[0].children.append(["a mutable leaf"])
    odd.append(valued)
    for value in odd:
        assert moto_expressions._checked_copy(value) is None
        copied = moto_expressions.deepcopy_tree(value)
        if isinstance(value, Node):
            assert shape(copied) == shape(copy.deepcopy(value))
        else:
            assert copied == value
            assert copied is not value


def test_update_item_answers_are_the_ones_moto_gives(installed: None) -> None:
    moto_expressions.uninstall()
    assert validators.deepcopy is copy.deepcopy
    with mock_aws():
        expected = update_answers(boto3.client("dynamodb", region_name="us-east-1"))
    moto_expressions.install()
    assert validators.deepcopy is moto_expressions.deepcopy_tree
    with mock_aws():
        assert update_answers(boto3.client("dynamodb", region_name="us-east-1")) == expected
    assert any("Error" not in str(answer) for answer in expected)
    assert sum("Code" in answer for answer in expected if isinstance(answer, dict)) >= 5


def test_condition_answers_are_the_ones_moto_gives(installed: None) -> None:
    from moto.dynamodb.comparisons import ConditionExpressionParser

    moto_expressions.uninstall()
    assert not hasattr(ConditionExpressionParser._lex_condition_expression, "__wrapped__")
    with mock_aws():
        expected = condition_answers(boto3.client("dynamodb", region_name="us-east-1"))
    moto_expressions.install()
    assert hasattr(ConditionExpressionParser._lex_condition_expression, "__wrapped__")
    with mock_aws():
        assert condition_answers(boto3.client("dynamodb", region_name="us-east-1")) == expected
    codes = [a.get("Code") for a in expected if "Code" in a]
    assert "ConditionalCheckFailedException" in codes
    assert len(codes) < len(expected)


def _op_shape(value: Any) -> Any:
    """A condition's whole state: each operator's and operand's class and attributes."""
    if isinstance(value, list | tuple):
        return [_op_shape(v) for v in value]
    if hasattr(value, "__dict__"):
        return (type(value).__name__, {k: _op_shape(v) for k, v in vars(value).items()})
    return value


def _parses(calls: list[tuple[str | None, Any, Any]]) -> list[Any]:
    """Each call's parse: the condition, the names and values it found, or the error."""
    from moto.dynamodb.comparisons import ConditionExpressionParser

    out: list[Any] = []
    for expression, names, values in calls:
        parser = ConditionExpressionParser(expression, names, values)
        try:
            op = parser.parse()
        except Exception as error:
            out.append((type(error).__name__, str(error)))
            continue
        out.append((_op_shape(op), parser.expr_attr_names_found, parser.expr_attr_values_found))
    return out


def test_each_condition_parse_is_moto_s_whatever_the_placeholders_hold(installed: None) -> None:
    from moto_answers import CONDITIONS

    names = {"#s": "s", "#n": "n"}
    values: list[dict[str, Any]] = [
        {":p": {"S": "P"}, ":q": {"S": "D"}, ":one": {"N": "1"}, ":ten": {"N": "10"}},
        {":p": {"SS": ["x"]}, ":q": {"M": {"k": {"S": "v"}}}, ":one": {"N": "2"}, ":ten": {}},
    ]
    for value in values:
        value.update({":pre": {"S": "PEN"}, ":type": {"S": "S"}})
    calls: list[tuple[str | None, Any, Any]] = []
    for condition in [*CONDITIONS, "pk = :p", "a.b[1].#s = :p", "#s = :p AND #s = :p"]:
        for value in values:
            calls.append((condition, names, value))
        calls.append((condition, {"#s": "other", "#n": "n"}, values[0]))
        calls.append((condition, {}, values[0]))  # a name it uses is not defined
        calls.append((condition, names, {":p": {"S": "P"}}))  # nor a value
        calls.append((condition, None, values[0]))
        calls.append((condition, names, None))
    calls += [
        ("", names, values[0]),
        (None, None, None),
        ("status = :p", names, values[0]),  # a reserved word
        ("#s = = :p", names, values[0]),  # refused: never kept
        ("attribute_exists(:p)", names, values[0]),
    ]
    moto_expressions.uninstall()
    expected = _parses(calls)
    moto_expressions.install()
    assert _parses(calls) == expected
    assert _parses(calls) == expected  # each string parsed before
    errors = [answer for answer in expected if len(answer) == 2]
    assert 10 < len(errors) < len(expected) / 2


def test_install_is_idempotent_and_uninstall_restores(installed: None) -> None:
    moto_expressions.install()
    wrapped = UpdateExpressionParser.__dict__["make"]
    moto_expressions.install()
    assert UpdateExpressionParser.__dict__["make"] is wrapped
    from moto.dynamodb.comparisons import ConditionExpressionParser

    parse = ConditionExpressionParser.parse
    moto_expressions.install()
    assert ConditionExpressionParser.parse is parse
    moto_expressions.uninstall()
    assert UpdateExpressionParser.__dict__["make"].__func__ is wrapped.__func__.__wrapped__
    assert validators.deepcopy is copy.deepcopy
    assert ConditionExpressionParser.parse is parse.__wrapped__  # type: ignore[attr-defined]
    from moto.dynamodb import models, responses

    assert responses.UpdateExpressionParser is models.UpdateExpressionParser
    assert responses.UpdateExpressionParser is UpdateExpressionParser
    assert models.re is re
    moto_expressions.uninstall()
    assert models.re is re


def _transact_answers(client: Any) -> list[Any]:
    """A transaction of two updates (their placeholders listed by the handler too)."""
    pk_table(client, "x")
    update = {"TableName": "x", "UpdateExpression": EXPRESSIONS[2]}
    client.transact_write_items(
        TransactItems=[
            {"Update": {**update, "Key": {"pk": {"S": key}}, **_PLACEHOLDERS}} for key in "ab"
        ]
    )
    got = client.scan(TableName="x")["Items"]
    return sorted(got, key=lambda item: item["pk"]["S"])


_PLACEHOLDERS: dict[str, Any] = {
    "ExpressionAttributeNames": {"#n": "n"},
    "ExpressionAttributeValues": {":d": {"N": "2"}},
}


_NAMES = {f"#{name}": name for name in re.findall(r"#(\w+)", " ".join(EXPRESSIONS))}
_VALUES: dict[str, Any] = {
    f":{name}": {"N": "1"} for name in re.findall(r":(\w+)", " ".join(EXPRESSIONS))
} | {":empty": {"L": []}, ":more": {"L": []}, ":gone": {"SS": ["x"]}, ":at": {"S": "t"}}


def test_the_readers_share_the_cached_tree_and_nothing_changes_it(installed: None) -> None:
    from moto.dynamodb import models, responses

    moto_expressions.uninstall()
    with mock_aws():
        expected = _transact_answers(boto3.client("dynamodb", region_name="us-east-1"))
    moto_expressions.install()
    shared = responses.UpdateExpressionParser
    assert shared is not UpdateExpressionParser
    assert models.UpdateExpressionParser is shared
    trees = {expression: shared.make(expression) for expression in EXPRESSIONS}
    before = {expression: shape(tree) for expression, tree in trees.items()}
    made = 0
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        update_answers(client)
        assert _transact_answers(client) == expected
        for expression in EXPRESSIONS:  # each through the planned or the stock validator
            request: dict[str, Any] = {"UpdateExpression": expression}
            names = {k: v for k, v in _NAMES.items() if re.search(rf"{k}\b", expression)}
            values = {k: v for k, v in _VALUES.items() if re.search(rf"{k}\b", expression)}
            if names:
                request["ExpressionAttributeNames"] = names
            if values:
                request["ExpressionAttributeValues"] = values
            for _ in range(2):  # the first call makes the item, the second updates it
                with contextlib.suppress(client.exceptions.ClientError):  # moto's refusal
                    client.update_item(TableName="x", Key={"pk": {"S": "new"}}, **request)
                    made += 1
    assert made == 2 * (len(EXPRESSIONS) - 2)  # all but the two nested paths
    for expression, tree in trees.items():
        assert shared.make(expression) is tree
        assert shape(tree) == before[expression]
        copied = UpdateExpressionParser.make(expression)  # any other caller: its own copy
        assert copied is not tree
        assert shape(copied) == before[expression]


def test_a_moto_that_uses_its_trees_otherwise_keeps_its_copies(
    installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.dynamodb import models, responses

    moto_expressions.uninstall()
    monkeypatch.setattr(moto_expressions, "_HANDLER_USES", [*moto_expressions._HANDLER_USES, "x"])
    moto_expressions.install()
    assert responses.UpdateExpressionParser is UpdateExpressionParser
    assert models.UpdateExpressionParser is UpdateExpressionParser
    tree = UpdateExpressionParser.make(EXPRESSIONS[0])
    assert UpdateExpressionParser.make(EXPRESSIONS[0]) is not tree
    moto_expressions.uninstall()


def test_the_backend_s_rewrite_is_re_sub_s() -> None:
    from moto.dynamodb import models

    moto_expressions.install()
    assert models.re is not re
    for expression in [*EXPRESSIONS, "SET a =  b  +  :c", "SET a=b-c"]:
        for _ in range(2):
            got = models.re.sub(r"\s*([=\+-])\s*", "\\1", expression)
            assert got == re.sub(r"\s*([=\+-])\s*", "\\1", expression)
    assert models.re.sub("a", "b", "aaa", count=1) == "baa"
    assert models.re.sub("a", "b", "AAA", flags=re.IGNORECASE) == "bbb"
