"""`adapters.moto_snapshots`: `UpdateItem` answers and stream images are moto's, without
moto's two deep copies of the item."""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto_answers import STORE_UPDATES, condition_answers, plan_answers, update_answers

from adapters import moto_snapshots

RESPONSES = importlib.import_module("moto.dynamodb.responses")
MODELS = importlib.import_module("moto.dynamodb.models")


@pytest.fixture(autouse=True)
def installed() -> Iterator[None]:
    moto_snapshots.install()
    yield
    moto_snapshots.install()


def _stream_answers(client: Any) -> list[Any]:
    """The stores' updates and a corpus of others on a table with both images in its
    stream; every answer, then every stream record (without its id and time)."""
    answers = plan_answers(client)
    client.update_table(
        TableName="u",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    for key in ("fresh", "again", "third"):
        for call in STORE_UPDATES:
            for returned in ("ALL_NEW", "ALL_OLD", "UPDATED_NEW", "UPDATED_OLD", "NONE"):
                try:
                    got = client.update_item(
                        TableName="u", Key={"pk": {"S": key}}, ReturnValues=returned, **call
                    )
                    got.pop("ResponseMetadata")
                    answers.append(got)
                except client.exceptions.ClientError as error:
                    answers.append(error.response["Error"])
    client.update_item(
        TableName="u",
        Key={"pk": {"S": "again"}},
        UpdateExpression="SET #r.echo[0] = :x, more = list_append(if_not_exists(more, :e), :x)",
        ExpressionAttributeNames={"#r": "Result"},
        ExpressionAttributeValues={":x": {"L": [{"S": "in place"}]}, ":e": {"L": []}},
    )  # changes a nested value in place
    streams = boto3.client("dynamodbstreams", region_name="us-east-1")
    arn = client.describe_table(TableName="u")["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = streams.get_records(ShardIterator=iterator)["Records"]
    for record in records:
        del record["eventID"], record["dynamodb"]["ApproximateCreationDateTime"]
    assert len(records) > 30
    return [*answers, *records]


@pytest.mark.parametrize(
    "run",
    [_stream_answers, update_answers, condition_answers],
    ids=["streamed", "updates", "conditions"],
)
def test_every_answer_and_stream_image_is_moto_s(run: Callable[[Any], list[Any]]) -> None:
    def answers() -> list[Any]:
        with mock_aws():
            return run(boto3.client("dynamodb", region_name="us-east-1"))

    moto_snapshots.uninstall()
    assert RESPONSES.copy is copy
    expected = answers()
    moto_snapshots.install()
    assert RESPONSES.copy is not copy
    assert MODELS.copy is not copy
    assert answers() == expected


def test_the_stream_s_old_item_is_what_it_reads_of_the_item_before_the_update() -> None:
    item = Item(
        DynamoType({"S": "k"}),
        DynamoType({"N": "1"}),
        {"pk": {"S": "k"}, "m": {"M": {"l": {"L": [{"S": "a"}]}}}, "ss": {"SS": ["x"]}},
    )
    old = MODELS.copy.deepcopy(item)
    assert type(old) is moto_snapshots.Snapshot
    expected = copy.deepcopy(item).to_json()
    item.attrs["m"].value["l"].value.append(DynamoType({"S": "changed in place"}))
    item.attrs["ss"].value.append("y")
    assert old.to_json() == expected
    assert old.to_json() == expected  # a second read is a copy of the first
    assert old.to_json()["Attributes"] is not old.to_json()["Attributes"]
    assert old.hash_key == item.hash_key
    assert old.hash_key is not item.hash_key
    assert old.range_key == item.range_key
    with pytest.raises(AttributeError):
        old.attrs  # noqa: B018 - nothing else of an item is there
    assert RESPONSES.copy.deepcopy(item) is item


def test_anything_else_is_deep_copied_as_moto_copies_it() -> None:
    odd = Item(DynamoType({"S": "k"}), None, {"pk": {"S": "k"}})
    odd.attrs["raw"] = DynamoType({"S": "x"})
    odd.attrs["raw"].value = ["a list", {"a": "dict"}]  # `to_json` would share the dict
    for module in (RESPONSES, MODELS):
        copied = module.copy.deepcopy(odd)
        assert type(copied) is Item
        assert copied is not odd
        assert copied.attrs["raw"].value == odd.attrs["raw"].value
        assert copied.attrs["raw"] is not odd.attrs["raw"]  # moto's own copy: a new value
        assert module.copy.deepcopy({"not": ["an item"]}) == {"not": ["an item"]}
        assert module.copy.deepcopy(None) is None
        memo: dict[int, Any] = {}
        assert type(module.copy.deepcopy(odd, memo)) is Item


def test_a_moto_that_uses_its_copies_otherwise_keeps_them(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect

    real = inspect.getsource

    def changed(target: Any) -> str:
        source = real(target)
        if target is MODELS.DynamoDBBackend.update_item:
            return source.replace(
                "table.stream_shard.add(orig_item", "orig_item.attrs; add(orig_item"
            )
        return source

    moto_snapshots.uninstall()
    monkeypatch.setattr(inspect, "getsource", changed)
    moto_snapshots.install()
    assert RESPONSES.copy is copy
    assert MODELS.copy is copy
    monkeypatch.undo()
    moto_snapshots.install()
    assert RESPONSES.copy is not copy


def test_install_is_idempotent_and_uninstall_restores() -> None:
    swapped = RESPONSES.copy, MODELS.copy
    moto_snapshots.install()
    assert (RESPONSES.copy, MODELS.copy) == swapped
    moto_snapshots.uninstall()
    assert RESPONSES.copy is copy
    assert MODELS.copy is copy
    moto_snapshots.uninstall()
    assert RESPONSES.copy is copy
