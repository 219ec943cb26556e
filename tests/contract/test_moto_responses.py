"""`adapters.moto_responses` finishes moto's answers as moto does: the same ids, the same bodies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core.responses import BaseResponse
from moto.moto_api._internal import mock_random
from moto.moto_api._internal.moto_random import MotoRandom

from adapters import moto_responses

BODIES: list[Any] = [
    '{"Item": {"pk": {"S": "a"}}}',
    "",
    "<Response><RequestId>old</RequestId><x/></Response>",
    "<a><RequestId>1</RequestId><RequestId>2</RequestId></a>\n<RequestId>3</RequestId>",
    "<RequestId>never closed",
    '{"text": "<RequestId>in a string</RequestId>"}',
    "<requestid>other case</requestid>",
    b"<RequestId>bytes</RequestId>",
    None,
    {"not": "text"},
]


@pytest.fixture(autouse=True)
def installed() -> Iterator[None]:
    state = mock_random.getstate()  # the tests seed moto's generator
    moto_responses.install()
    yield
    moto_responses.install()
    mock_random.setstate(state)


def _enriched(status: Any) -> list[Any]:
    out: list[Any] = []
    for body in BODIES:
        mock_random.seed(7)
        headers: dict[str, Any] = {"status": status} if status is not None else {}
        out.append(BaseResponse._enrich_response(headers, body))
    out.append(mock_random.random())  # the generator's state after
    return out


@pytest.mark.parametrize("status", [None, 200, "400"])
def test_each_answer_is_finished_as_moto_finishes_it(status: Any) -> None:
    moto_responses.uninstall()
    expected = _enriched(status)
    moto_responses.install()
    assert _enriched(status) == expected
    assert expected[2][1] != BODIES[2]  # moto did put an id in


@pytest.mark.parametrize(
    "arguments",
    [{}, {"length": 52}, {"length": 0}, {"include_digits": False}, {"lower_case": True}],
    ids=str,
)
def test_random_strings_are_moto_s_for_the_same_seed(arguments: dict[str, Any]) -> None:
    def draws() -> list[Any]:
        rng = MotoRandom()
        rng.seed(12345)
        return [rng.get_random_string(**arguments) for _ in range(200)] + [rng.random()]

    moto_responses.uninstall()
    expected = draws()
    moto_responses.install()
    assert draws() == expected
    assert len(set(expected)) > 1 or arguments == {"length": 0}


def test_a_generator_with_its_own_choice_keeps_moto_s_method() -> None:
    class Odd(MotoRandom):
        def choice(self, seq: Any) -> Any:
            return seq[0]

    assert Odd().get_random_string(length=3) == "aaa"


def test_answers_over_http_carry_the_same_ids_for_the_same_seed() -> None:
    def ids() -> list[Any]:
        with mock_aws():
            client = boto3.client("dynamodb", region_name="us-east-1")
            mock_random.seed(3)
            got = [client.list_tables()["ResponseMetadata"]["RequestId"] for _ in range(3)]
            with pytest.raises(client.exceptions.ResourceNotFoundException) as missing:
                client.describe_table(TableName="missing")
            got.append(missing.value.response["ResponseMetadata"]["RequestId"])
            return got

    moto_responses.uninstall()
    expected = ids()
    moto_responses.install()
    assert ids() == expected


def test_install_is_idempotent_and_uninstall_restores() -> None:
    patched = BaseResponse.__dict__["_enrich_response"].__func__
    strings = MotoRandom.get_random_string
    moto_responses.install()
    assert BaseResponse.__dict__["_enrich_response"].__func__ is patched
    assert MotoRandom.get_random_string is strings
    moto_responses.uninstall()
    assert BaseResponse.__dict__["_enrich_response"].__func__ is patched.__wrapped__
    assert MotoRandom.get_random_string is strings.__wrapped__  # type: ignore[attr-defined]
    moto_responses.uninstall()
    assert MotoRandom.get_random_string is strings.__wrapped__  # type: ignore[attr-defined]
