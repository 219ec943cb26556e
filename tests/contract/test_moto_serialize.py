"""`adapters.moto_serialize` writes moto's DynamoDB Streams answers byte for byte."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core.responses import ActionResult
from moto.core.serialize import JSONSerializer, XFormedAttributePicker
from moto.core.utils import get_service_model
from moto_answers import assert_installs_once, pk_table

from adapters import moto_serialize


@pytest.fixture
def answers() -> Iterator[list[tuple[str, str, Any, Any]]]:
    """Every serialized answer moto gives, as (service, operation, moto's, ours)."""
    seen: list[tuple[str, str, Any, Any]] = []
    moto_serialize.uninstall()
    original = ActionResult.execute_result

    def both(self: Any, context: Any) -> Any:
        status, headers, body = original(self, context)
        theirs = (status, dict(headers), body)
        ours = moto_serialize._answer(self, context)
        service = str(context.service_model.service_name)
        seen.append((service, str(context.operation_model.name), theirs, ours))
        return status, headers, body

    ActionResult.execute_result = both  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        ActionResult.execute_result = original  # type: ignore[method-assign]
        moto_serialize.install()


ITEM: dict[str, Any] = {
    "pk": {"S": "req#1"},
    "blob": {"B": b"\x00\x01\xffbinary"},
    "blobs": {"BS": [b"x", b"\x00y"]},
    "number": {"N": "1.50"},
    "numbers": {"NS": ["1", "-2.5e3"]},
    "strings": {"SS": ["a", "ü"]},
    "flag": {"BOOL": False},
    "nothing": {"NULL": True},
    "nested": {
        "M": {
            "list": {"L": [{"NULL": True}, {"BOOL": True}, {"M": {}}, {"L": []}]},
            "deeper": {"M": {"s": {"S": ""}, "b": {"B": b"\x7f"}}},
        }
    },
}


def test_every_stream_answer_is_the_one_moto_writes(answers: list[Any]) -> None:
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        streams = boto3.client("dynamodbstreams", region_name="us-east-1")
        pk_table(dynamodb, "requests", stream="NEW_AND_OLD_IMAGES")
        dynamodb.create_table(
            TableName="keys-only",
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "B"},
            ],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"},
        )
        arn = dynamodb.describe_table(TableName="requests")["Table"]["LatestStreamArn"]
        keys_arn = dynamodb.describe_table(TableName="keys-only")["Table"]["LatestStreamArn"]
        streams.list_streams()
        streams.list_streams(TableName="requests")
        shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
        latest = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard, ShardIteratorType="LATEST"
        )["ShardIterator"]
        assert streams.get_records(ShardIterator=latest)["Records"] == []  # an empty page

        dynamodb.put_item(TableName="requests", Item=ITEM)  # INSERT
        dynamodb.update_item(  # MODIFY
            TableName="requests",
            Key={"pk": {"S": "req#1"}},
            UpdateExpression="SET #s = :s, nested.deeper.n = :n REMOVE blobs",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":s": {"S": "DONE"}, ":n": {"N": "7"}},
        )
        dynamodb.delete_item(TableName="requests", Key={"pk": {"S": "req#1"}})  # REMOVE
        for i in range(5):
            dynamodb.put_item(TableName="requests", Item={"pk": {"S": f"p{i}"}, "i": {"N": str(i)}})
        dynamodb.put_item(TableName="keys-only", Item={"pk": {"S": "k"}, "sk": {"B": b"\x00"}})

        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        pages = []
        for _ in range(4):  # pages of 3, then what is left, then empty pages
            page = streams.get_records(ShardIterator=iterator, Limit=3)
            pages.append(page["Records"])
            iterator = page["NextShardIterator"]
        assert [len(p) for p in pages] == [3, 3, 2, 0]
        assert [r["eventName"] for r in pages[0]] == ["INSERT", "MODIFY", "REMOVE"]
        first = pages[0][0]["dynamodb"]["SequenceNumber"]
        for kind, number in (("AT_SEQUENCE_NUMBER", first), ("AFTER_SEQUENCE_NUMBER", first)):
            at = streams.get_shard_iterator(
                StreamArn=arn, ShardId=shard, ShardIteratorType=kind, SequenceNumber=number
            )["ShardIterator"]
            streams.get_records(ShardIterator=at)
        keys_shard = streams.describe_stream(StreamArn=keys_arn)["StreamDescription"]["Shards"]
        at = streams.get_shard_iterator(
            StreamArn=keys_arn,
            ShardId=keys_shard[0]["ShardId"],
            ShardIteratorType="TRIM_HORIZON",
        )["ShardIterator"]
        streams.get_records(ShardIterator=at)

    operations = {operation for _, operation, _, _ in answers}
    assert operations == {"ListStreams", "DescribeStream", "GetShardIterator", "GetRecords"}
    for service, operation, theirs, ours in answers:
        assert service == "dynamodbstreams"
        assert ours is not None, operation  # answered here, not handed back to moto
        assert ours == theirs, operation


def test_dynamodb_answers_never_reach_the_serializer(answers: list[Any]) -> None:
    """moto's DynamoDB handler writes its own JSON (errors too): nothing of it changes."""
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        pk_table(dynamodb, "t", stream="NEW_AND_OLD_IMAGES")
        dynamodb.describe_table(TableName="t")
        key = {"pk": {"S": "req#1"}}
        dynamodb.put_item(TableName="t", Item=ITEM, ReturnValues="ALL_OLD")
        for returned in ("ALL_NEW", "ALL_OLD", "UPDATED_NEW", "UPDATED_OLD", "NONE"):
            dynamodb.update_item(
                TableName="t",
                Key=key,
                UpdateExpression="SET nested.deeper.n = if_not_exists(nested.deeper.n, :z) + :o",
                ExpressionAttributeValues={":z": {"N": "0"}, ":o": {"N": "1"}},
                ReturnValues=returned,
            )
        dynamodb.get_item(TableName="t", Key=key, ConsistentRead=True)
        dynamodb.batch_get_item(RequestItems={"t": {"Keys": [key, {"pk": {"S": "none"}}]}})
        dynamodb.query(
            TableName="t",
            KeyConditionExpression="pk = :k",
            ExpressionAttributeValues={":k": {"S": "req#1"}},
            Limit=1,
        )
        # (moto 5.1 cannot write this error for an item with a binary inside a map)
        plain = {"pk": {"S": "req#2"}, "b": {"B": b"\x00"}, "m": {"M": {"n": {"N": "1"}}}}
        dynamodb.put_item(TableName="t", Item=plain)
        with pytest.raises(dynamodb.exceptions.ConditionalCheckFailedException) as failed:
            dynamodb.update_item(
                TableName="t",
                Key={"pk": plain["pk"]},
                UpdateExpression="SET flag = :t",
                ConditionExpression="attribute_not_exists(pk)",
                ExpressionAttributeValues={":t": {"BOOL": True}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        assert failed.value.response["Item"]["pk"] == plain["pk"]
        with pytest.raises(dynamodb.exceptions.ResourceNotFoundException):
            dynamodb.describe_table(TableName="missing")

    assert answers == []


def _theirs(operation: str, result: Any) -> str:
    """moto's own serializer, as `ActionResult.execute_result` sets it up."""
    model = get_service_model("dynamodbstreams").operation_model(operation)
    serializer = JSONSerializer(operation_model=model, value_picker=XFormedAttributePicker())
    body: str = serializer.serialize(result)["body"]
    return body


def _record(**dynamodb: Any) -> dict[str, Any]:
    return {
        "eventID": "e1",
        "eventName": "MODIFY",
        "eventVersion": "1.0",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": "2026-12-01T11:49:15.541492",
            "SequenceNumber": "1100000000017454423009",
            "SizeBytes": 12,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
            "Keys": {"pk": {"S": "a"}},
            **dynamodb,
        },
    }


RESULTS: list[tuple[str, Any]] = [
    ("GetRecords", {"Records": [], "NextShardIterator": "it"}),
    ("GetRecords", {"Records": [_record()], "NextShardIterator": None}),
    ("GetRecords", {"NextShardIterator": "it", "Records": (_record(),)}),  # order, tuple
    ("GetRecords", {"Records": [_record(NewImage={"b": {"B": "AAE="}, "x": {"B": b"\x00"}})]}),
    ("GetRecords", {"Records": [_record(NewImage={"gone": None, "s": {"S": None}})]}),
    ("GetRecords", {"Records": [_record(OldImage={"n": {"N": "1", "S": "both"}})]}),
    ("GetRecords", {"Records": [_record(ApproximateCreationDateTime="2026-12-01T11:49:15")]}),
    ("GetRecords", {"Records": [_record(ApproximateCreationDateTime=1796125755.5412)]}),
    (
        "GetRecords",
        {
            "Records": [
                _record(ApproximateCreationDateTime=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
            ]
        },
    ),
    ("GetRecords", {"Records": [_record(SizeBytes="40", Extra="dropped")]}),
    ("GetRecords", {"records": [_record()], "next_shard_iterator": "snake-case aliases"}),
    ("GetRecords", {"Records": [{**_record(), "dynamodb": None, "userIdentity": None}]}),
    ("GetRecords", {"Records": [None, _record()]}),
    (
        "GetRecords",
        {"Records": [{**_record(), "userIdentity": {"PrincipalId": "p", "Type": "Service"}}]},
    ),
    ("GetRecords", {"Records": [{"StreamRecord": _record()["dynamodb"], "eventName": "INSERT"}]}),
    ("GetRecords", {"Records": [{**_record(), "StreamRecord": {"SizeBytes": 1}}]}),
    ("GetShardIterator", {"ShardIterator": "arn|1|x"}),
    ("GetShardIterator", {}),
    ("GetShardIterator", None),
    (
        "DescribeStream",
        {
            "StreamDescription": {
                "StreamArn": "arn",
                "CreationRequestDateTime": datetime(2026, 12, 1, 11, 49, 15, 541000),
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "Shards": [
                    {
                        "ShardId": "s",
                        "SequenceNumberRange": {"StartingSequenceNumber": "1"},
                        "ParentShardId": None,
                    }
                ],
                "LastEvaluatedShardId": None,
            }
        },
    ),
    ("ListStreams", {"Streams": [], "LastEvaluatedStreamArn": "arn"}),
]


@pytest.mark.parametrize(("operation", "result"), RESULTS)
def test_each_result_serializes_as_moto_serializes_it(operation: str, result: Any) -> None:
    model = get_service_model("dynamodbstreams").operation_model(operation)
    assert moto_serialize.serialize(model, result) == _theirs(operation, result)


PLAIN_IMAGE: dict[str, Any] = {
    "pk": {"S": "req#1"},
    "n": {"N": "-1.5e3"},
    "flag": {"BOOL": False},
    "nothing": {"NULL": True},
    "ss": {"SS": ["a", "ü"]},
    "ns": {"NS": []},
    "m": {"M": {"l": {"L": [{"M": {}}, {"L": [{"S": ""}]}, {"NULL": True}]}, "e": {"M": {}}}},
    'quote"key': {"S": "line\nbreak \\ \u2028"},
}
NEAR_PLAIN: list[dict[str, Any]] = [
    {"m": {"M": {"l": {"L": [{"B": "AAE="}]}}}},  # a binary, deep down
    {"bs": {"BS": ["AA=="]}},
    {"two": {"S": "a", "N": "1"}},  # two members: the walk writes them in the model's order
    {"m": {"M": {"x": {"S": None}}}},
    {"m": {"M": {"x": {"S": "a"}, "odd": {"X": "not a member"}}}},
    {"l": {"L": [None, {"S": "a"}]}},
    {"t": {"SS": ("a", "tuple")}},
    {"n": {"N": 1}},
    {"nb": {"BOOL": 1}},
    {"ss": {"SS": ["a", 2]}},
    {"m": {"M": {"": {"S": "an empty key deep down"}}}},
    {"m": {"M": []}},
    {"empty": {}},
]


def _attribute_map() -> Any:
    model = get_service_model("dynamodbstreams").operation_model("GetRecords")
    return model.output_shape.members["Records"].member.members["dynamodb"].members["NewImage"]


def test_a_plain_image_is_written_as_it_is_and_as_moto_writes_it() -> None:
    convert = moto_serialize._converter(_attribute_map())
    assert convert(PLAIN_IMAGE) is PLAIN_IMAGE
    assert convert(ITEM) is not ITEM  # binaries: walked
    for image in (PLAIN_IMAGE, ITEM):
        result = {"Records": [_record(NewImage=image, OldImage=image)], "NextShardIterator": "i"}
        model = get_service_model("dynamodbstreams").operation_model("GetRecords")
        assert moto_serialize.serialize(model, result) == _theirs("GetRecords", result)


@pytest.mark.parametrize("image", NEAR_PLAIN, ids=repr)
def test_an_image_that_is_not_plain_is_walked(image: dict[str, Any]) -> None:
    convert = moto_serialize._converter(_attribute_map())
    model = get_service_model("dynamodbstreams").operation_model("GetRecords")
    merged = {**PLAIN_IMAGE, **image}
    result = {"Records": [_record(NewImage=merged)]}
    try:
        assert convert(merged) is not merged
    except moto_serialize.Unsupported:
        with pytest.raises(moto_serialize.Unsupported):
            moto_serialize.serialize(model, result)
        return
    assert moto_serialize.serialize(model, result) == _theirs("GetRecords", result)


def test_only_dynamodb_s_attribute_values_are_tested_for_plain_images() -> None:
    model = get_service_model("dynamodbstreams").operation_model("GetRecords")
    record = model.output_shape.members["Records"].member
    assert moto_serialize._plain_attributes(_attribute_map().value) is not None
    assert moto_serialize._plain_attributes(record) is None
    assert moto_serialize._plain_attributes(record.members["dynamodb"]) is None


class Shard:
    """A model object, not a dict: moto reads its attributes by many names."""

    shard_id = "s"


@pytest.mark.parametrize(
    ("operation", "result"),
    [
        ("GetShardIterator", Shard()),
        ("DescribeStream", {"StreamDescription": {"Shards": [Shard()]}}),
        ("GetRecords", {"Records": "not a list"}),
        ("GetRecords", {"Records": [_record(Keys={"": {"S": "empty key"}})]}),
    ],
)
def test_anything_else_is_left_to_moto(operation: str, result: Any) -> None:
    model = get_service_model("dynamodbstreams").operation_model(operation)
    with pytest.raises(moto_serialize.Unsupported):
        moto_serialize.serialize(model, result)


def test_blobs_are_base64_of_what_moto_holds() -> None:
    """moto holds a binary attribute as the base64 text it was sent, and its
    serializer encodes that text again; the walk keeps that (it changes no answer)."""
    model = get_service_model("dynamodbstreams").operation_model("GetRecords")
    result = {"Records": [_record(NewImage={"b": {"B": "AAE="}})]}
    body = moto_serialize.serialize(model, result)
    assert base64.b64encode(b"AAE=").decode() in body
    assert body == _theirs("GetRecords", result)


def test_install_is_idempotent_and_uninstall_restores() -> None:
    assert_installs_once(moto_serialize, ActionResult, "execute_result")


TIMESTAMPS = [
    "2026-12-01T11:49:15.541492",
    "2026-12-01T11:49:15.000999",
    "2026-12-01T11:49:15.001000",
    "2026-12-01T11:49:15",
    "1970-01-01T00:00:00.000001",
    "2038-01-19T03:14:08.999999",
    "9999-12-31T23:59:59.999999",
    "2026-02-30T11:49:15.541492",  # no such day: moto's own path decides
    "2026-12-01T11:49:15.5",
    "2026-12-01T11:49:15+00:00",
    "2026-12-01T11:49:15.541492Z",
    "2026-12-01 11:49:15",
    "1796125755.5412",
    "1796125755",
    1796125755,
    datetime(2026, 12, 1, 11, 49, 15, 541492),
    datetime(2026, 12, 1, 11, 49, 15, tzinfo=UTC),
]


@pytest.mark.parametrize("value", TIMESTAMPS, ids=str)
def test_each_timestamp_is_the_number_moto_writes(value: Any) -> None:
    result = {"Records": [_record(ApproximateCreationDateTime=value)]}
    model = get_service_model("dynamodbstreams").operation_model("GetRecords")
    expected = refused = ""
    try:
        expected = _theirs("GetRecords", result)
    except ValueError as error:
        refused = str(error)
    if refused:
        with pytest.raises(ValueError, match="Invalid timestamp") as ours:
            moto_serialize.serialize(model, result)
        assert str(ours.value) == refused
        return
    assert moto_serialize.serialize(model, result) == expected
