"""`adapters.moto_traverse` and `adapters.moto_items` give moto's answers, for less CPU."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.dynamodb.models.dynamo_type import Item
from moto_answers import put_answers, update_answers

from adapters import moto_items, moto_traverse

PATCHES = [moto_traverse, moto_items]


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
@pytest.mark.parametrize("run", [update_answers, put_answers], ids=["updates", "puts"])
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


def test_install_is_idempotent_and_uninstall_restores() -> None:
    for patch, owner, name in (
        (moto_traverse, moto_traverse._ast_nodes().DepthFirstTraverser, "traverse"),
        (moto_items, Item, "__init__"),
    ):
        patched = getattr(owner, name)
        patch.install()
        assert getattr(owner, name) is patched
        patch.uninstall()
        assert getattr(owner, name) is patched.__wrapped__
        patch.uninstall()
        assert getattr(owner, name) is patched.__wrapped__
        patch.install()
