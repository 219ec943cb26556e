"""`adapters.moto_streams`: moto's shard iterators expire after 15 minutes, as
DynamoDB's do, instead of piling up for the life of the server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from adapters import moto_streams


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(moto_streams, "clock", fake)
    return fake


@pytest.fixture
def streams(clock: Clock) -> Iterator[tuple[Any, Any, str]]:
    """A table with a stream and one item; moto's streams backend; the shard's first iterator."""
    moto_streams.install()
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        table = dynamodb.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        )
        dynamodb.put_item(TableName="t", Item={"pk": {"S": "a"}})
        client = boto3.client("dynamodbstreams", region_name="us-east-1")
        arn = table["TableDescription"]["LatestStreamArn"]
        shard = client.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
        iterator = client.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        from moto.dynamodbstreams.models import dynamodbstreams_backends

        yield client, dynamodbstreams_backends["123456789012"]["us-east-1"], iterator


def test_an_iterator_past_15_minutes_is_expired_and_a_fresh_one_reads(
    streams: tuple[Any, Any, str], clock: Clock
) -> None:
    client, _, iterator = streams
    clock.now += moto_streams.ITERATOR_LIFETIME_S - 1
    page = client.get_records(ShardIterator=iterator)
    assert [r["eventName"] for r in page["Records"]] == ["INSERT"]
    clock.now += 2  # the first iterator is now past its lifetime; the page's is not
    with pytest.raises(ClientError) as caught:
        client.get_records(ShardIterator=iterator)
    assert caught.value.response["Error"]["Code"] == "ExpiredIteratorException"
    assert client.get_records(ShardIterator=page["NextShardIterator"])["Records"] == []


def test_iterators_do_not_pile_up(streams: tuple[Any, Any, str], clock: Clock) -> None:
    client, backend, iterator = streams
    for _ in range(50):  # a poller: each read hands back the next iterator
        clock.now += 60
        iterator = client.get_records(ShardIterator=iterator)["NextShardIterator"]
    # 15 minutes of one read a minute, plus the one just handed out.
    assert len(backend.shard_iterators) <= 16
