"""`adapters.moto_traverse`, `moto_items` and `moto_updates` give moto's answers, for less CPU."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.dynamodb.models.dynamo_type import Item
from moto_answers import (
    STORE_UPDATES,
    assert_installs_once,
    plan_answers,
    put_answers,
    update_answers,
)

from adapters import moto_items, moto_traverse, moto_updates

PATCHES = [moto_traverse, moto_items, moto_updates]


@pytest.fixture(autouse=True)
def installed() -> Iterator[None]:
    for patch in PATCHES:
        patch.install()
    yield
    for patch in PATCHES:
        patch.install()


def _answers(run: Callable[[Any], list[Any]]) -> list[Any]:
    with mock_aws():
        return run(boto3.client("dynamodb", region_name="us-east-1"))


@pytest.mark.parametrize("patch", PATCHES, ids=lambda p: p.__name__.rpartition(".")[2])
@pytest.mark.parametrize(
    "run", [update_answers, put_answers, plan_answers], ids=["updates", "puts", "flat-updates"]
)
def test_every_answer_is_the_one_moto_gives(patch: Any, run: Callable[[Any], list[Any]]) -> None:
    patch.uninstall()
    expected = _answers(run)
    patch.install()
    assert _answers(run) == expected
    assert sum("Code" in str(answer) for answer in expected) >= 2


def test_every_update_validator_takes_the_cached_walk() -> None:
    from moto.dynamodb.parsing.validators import UpdateExpressionValidator

    validator = UpdateExpressionValidator.__new__(UpdateExpressionValidator)
    validator.expression_attribute_names = {}
    validator.expression_attribute_values = {}
    validator.item = None  # type: ignore[assignment]
    validator.table = type("T", (), {"table_key_attrs": [], "attr": [], "attribute_keys": []})()
    kinds = [type(p) for p in validator.get_ast_processors()]
    assert len(kinds) >= 8
    assert all(moto_traverse.takes_cached_walk(kind) for kind in kinds)


def test_the_size_limit_is_moto_s_on_either_side() -> None:
    answers = _answers(put_answers)
    codes = [a.get("Code") for a in answers if isinstance(a, dict)]
    assert codes.count("ValidationException") == 2  # "over" and "one-big"
    assert answers[-2] == ["at", "nested", "small", "under"]


def test_the_stores_updates_are_planned_and_refusals_are_left_to_moto() -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser

    table = type("T", (), {"table_key_attrs": ["pk"], "attr": [], "attribute_keys": ["pk"]})()
    item = Item(DynamoType({"S": "k"}), None, {"pk": {"S": "k"}, "LastPing": {"S": "t"}})

    def plan(call: dict[str, Any]) -> Any:
        return moto_updates.plan_update(
            tree=UpdateExpressionParser.make(call["UpdateExpression"]),
            names=call.get("ExpressionAttributeNames", {}),
            values=call.get("ExpressionAttributeValues", {}),
            item=item,
            table=table,
        )

    assert all(plan(call) is not None for call in STORE_UPDATES)
    one = {":one": {"N": "1"}}
    for refused in ("SET pk = :one", "SET LastPing = LastPing + :one", "SET a = :one REMOVE a"):
        assert plan({"UpdateExpression": refused, "ExpressionAttributeValues": one}) is None


def test_install_is_idempotent_and_uninstall_restores() -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.parsing.validators import UpdateExpressionValidator, Validator

    moto_updates.install()
    patched_init = UpdateExpressionValidator.__init__
    moto_updates.install()
    assert UpdateExpressionValidator.__init__ is patched_init
    moto_updates.uninstall()
    assert UpdateExpressionValidator.__init__ is Validator.__init__
    moto_updates.uninstall()
    moto_updates.install()
    for patch, owner, name in (
        (moto_traverse, moto_traverse._ast_nodes().DepthFirstTraverser, "traverse"),
        (moto_items, Item, "__init__"),
        (moto_items, DynamoType, "to_regular_json"),
    ):
        assert_installs_once(patch, owner, name)


def test_an_item_s_copy_is_the_tree_deepcopy_makes_and_shares_nothing_mutable() -> None:
    import copy

    from moto.dynamodb.models.dynamo_type import DynamoType

    attrs = {
        "pk": {"S": "k"},
        "m": {"M": {"l": {"L": [{"N": "1"}, {"M": {"b": {"B": b"\x00"}}}]}, "ss": {"SS": ["a"]}}},
        "t": {"BOOL": True},
        "z": {"NULL": True},
        "ns": {"NS": ["1", "2"]},
    }
    item = Item(DynamoType({"S": "k"}), None, attrs)
    moto_items.uninstall()
    expected = copy.deepcopy(item)
    moto_items.install()
    copied = copy.deepcopy(item)

    assert type(copied) is Item
    assert type(copied.attrs) is type(expected.attrs)
    assert copied.to_json() == expected.to_json() == item.to_json()
    assert copied.hash_key == expected.hash_key
    copied.attrs["m"].value["l"].value.append(DynamoType({"S": "new"}))
    copied.attrs["m"].value["ss"].value.append("b")
    copied.attrs["ns"].value.append("3")
    assert item.to_json() == expected.to_json()


def test_a_value_is_written_out_as_moto_writes_it_and_shares_nothing_mutable() -> None:
    import copy

    from moto.dynamodb.models.dynamo_type import DynamoType

    values: list[Any] = [
        {"S": "k"},
        {"N": "1.50"},
        {"B": "AAE="},
        {"B": b"AAE="},
        {"BOOL": False},
        {"NULL": True},
        {"SS": ["a", "b"]},
        {"NS": ["1", "2"]},
        {"BS": ["AA==", "AQ=="]},
        {"L": []},
        {"M": {}},
        {
            "M": {
                "l": {"L": [{"N": "1"}, {"M": {"b": {"B": "AAE="}, "s": {"SS": ["x"]}}}]},
                "m": {"M": {"deep": {"M": {"deeper": {"L": [{"NULL": True}, {"S": "é"}]}}}}},
            }
        },
    ]
    odd = DynamoType({"S": "x"})
    odd.value = ("a", "tuple")  # not a value moto builds: moto's own method writes it
    typed = [DynamoType(v) for v in values] + [odd]
    nested = DynamoType({"M": {}})
    nested.value["odd"] = odd
    nested.value["plain"] = "a raw string"
    typed.append(nested)
    moto_items.uninstall()
    expected = [t.to_regular_json() for t in typed]
    moto_items.install()
    got = [t.to_regular_json() for t in typed]

    assert got == expected
    assert [repr(g) for g in got] == [repr(e) for e in expected]
    before = copy.deepcopy([t.value for t in typed[:-2]])
    for written in got:  # nothing written out is part of the item
        for inner in written.values():
            if isinstance(inner, dict):
                inner.clear()
            elif isinstance(inner, list):
                inner.append("added")
    assert [t.value for t in typed[:-2]] == before


def test_a_value_is_sized_as_moto_sizes_it() -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType

    values: list[Any] = [
        {"S": "k"},
        {"S": "é—𝄞"},
        {"S": ""},
        {"N": "1.50"},
        {"N": "-1E+3"},
        {"B": "AAE="},
        {"B": b"\x00\x01"},
        {"BOOL": False},
        {"NULL": True},
        {"SS": ["a", "bé"]},
        {"NS": ["1", "2.5"]},
        {"BS": ["AA==", b"\x01"]},
        {"L": []},
        {"M": {}},
        {"M": {"é": {"S": "x"}, "n": {"N": "10"}, "t": {"BOOL": True}, "b": {"B": b"ab"}}},
        {
            "M": {
                "l": {"L": [{"N": "1"}, {"M": {"b": {"B": "AAE="}, "s": {"SS": ["x"]}}}]},
                "m": {"M": {"deep": {"M": {"deeper": {"L": [{"NULL": True}, {"S": "é"}]}}}}},
            }
        },
        {"L": [{"L": [{"L": [{"S": "three deep"}]}]}, {"NS": ["7"]}]},
    ]
    typed = [DynamoType(v) for v in values]
    raw_inside = DynamoType({"M": {}})
    raw_inside.value["raw"] = {"M": {"s": {"S": "a raw dict, as moto's copy takes it"}}}
    raw_list = DynamoType({"L": [{"S": "x"}]})
    raw_list.value.append({"S": "not a DynamoType"})  # the stock method refuses it
    odd = DynamoType({"S": "x"})
    odd.value = ("a", "tuple")
    typed += [raw_inside, raw_list, odd]

    def sizes() -> list[Any]:
        out: list[Any] = []
        for value in typed:
            try:
                out.append(value.size())
            except Exception as exc:  # the stock method's own refusal, compared by type
                out.append(type(exc))
        return out

    moto_items.uninstall()
    expected = sizes()
    moto_items.install()
    assert sizes() == expected
    assert AttributeError in expected
    assert expected[0] == 1
    assert_installs_once(moto_items, DynamoType, "size")
