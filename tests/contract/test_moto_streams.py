"""`adapters.moto_streams`: moto's shard iterators expire after 15 minutes, as
DynamoDB's do, instead of piling up for the life of the server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto_answers import assert_installs_once, pk_table

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
        created = pk_table(dynamodb, "t", stream="NEW_IMAGE")
        dynamodb.put_item(TableName="t", Item={"pk": {"S": "a"}})
        client = boto3.client("dynamodbstreams", region_name="us-east-1")
        arn = created["TableDescription"]["LatestStreamArn"]
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


def _records(client: Any, iterator: str) -> tuple[list[str], str]:
    page = client.get_records(ShardIterator=iterator)
    return [r["dynamodb"]["SequenceNumber"] for r in page["Records"]], page["NextShardIterator"]


def _iterator(client: Any, kind: str, number: str | None = None) -> str:
    arn = client.list_streams()["Streams"][0]["StreamArn"]
    shard = client.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    extra = {"SequenceNumber": number} if number is not None else {}
    got: str = client.get_shard_iterator(
        StreamArn=arn, ShardId=shard, ShardIteratorType=kind, **extra
    )["ShardIterator"]
    return got


def _put(name: str) -> None:
    boto3.client("dynamodb", region_name="us-east-1").put_item(
        TableName="t", Item={"pk": {"S": name}}
    )


def test_records_past_24_hours_are_trimmed_and_the_rest_keep_their_numbers(
    streams: tuple[Any, Any, str], clock: Clock
) -> None:
    client, _, _ = streams  # one record ("a") written at the start
    clock.now += 3600
    _put("b")
    clock.now += 3600
    _put("c")
    before, _ = _records(client, _iterator(client, "TRIM_HORIZON"))
    arn = client.list_streams()["Streams"][0]["StreamArn"]
    shards = client.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    from moto.dynamodb.models import dynamodb_backends

    table = dynamodb_backends["123456789012"]["us-east-1"].get_table("t")
    assert len(table.stream_shard.items) == 3

    clock.now += moto_streams.RECORD_RETENTION_S - 2 * 3600 + 1  # "a" just past 24 h, "b" 23 h
    kept, _ = _records(client, _iterator(client, "TRIM_HORIZON"))
    assert kept == before[1:]
    assert len(table.stream_shard.items) == 2  # dropped, not only hidden
    assert client.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"] == shards
    _put("d")  # numbered after every record written, trimmed or not
    latest, _ = _records(client, _iterator(client, "AFTER_SEQUENCE_NUMBER", before[2]))
    assert len(latest) == 1
    assert int(latest[0]) == int(before[2]) + 1
    # after the last record dropped nothing unread is gone: it reads on
    after_a, _ = _records(client, _iterator(client, "AFTER_SEQUENCE_NUMBER", before[0]))
    assert after_a == [*before[1:], *latest]
    assert _records(client, _iterator(client, "LATEST"))[0] == []


def test_a_read_from_before_the_oldest_record_kept_is_refused_as_trimmed(
    streams: tuple[Any, Any, str], clock: Clock
) -> None:
    client, _, iterator = streams
    clock.now += 60
    _put("b")
    first, _ = _records(client, iterator)
    clock.now += moto_streams.RECORD_RETENTION_S - 5 * 60
    waiting = _iterator(client, "TRIM_HORIZON")  # at "a", 10 minutes before "a" and "b" go
    assert _records(client, waiting)[0] == first
    clock.now += 10 * 60
    for position in (
        lambda: _iterator(client, "AT_SEQUENCE_NUMBER", first[0]),
        lambda: _iterator(client, "AFTER_SEQUENCE_NUMBER", first[0]),  # "b" is gone too
        lambda: client.get_records(ShardIterator=waiting),
    ):
        with pytest.raises(ClientError) as caught:
            position()
        assert caught.value.response["Error"]["Code"] == "TrimmedDataAccessException"
    assert _records(client, _iterator(client, "TRIM_HORIZON"))[0] == []


def test_until_a_record_is_24_hours_old_every_answer_is_moto_s(clock: Clock) -> None:
    def answers() -> list[Any]:
        with mock_aws():
            dynamodb = boto3.client("dynamodb", region_name="us-east-1")
            pk_table(dynamodb, "t", stream="KEYS_ONLY")
            client = boto3.client("dynamodbstreams", region_name="us-east-1")
            got: list[Any] = []
            for n in range(4):
                _put(f"k{n}")
                clock.now += 3600  # four hours of records, none 24 hours old
            got.append(_records(client, _iterator(client, "TRIM_HORIZON"))[0])
            numbers = got[0]
            for kind, number in (
                ("AT_SEQUENCE_NUMBER", numbers[1]),
                ("AFTER_SEQUENCE_NUMBER", numbers[3]),
                ("LATEST", None),
            ):
                got.append(_records(client, _iterator(client, kind, number))[0])
            before_start = _iterator(client, "AT_SEQUENCE_NUMBER", "1" * 21)
            try:  # moto's own failure for a number before the shard's start
                got.append(_records(client, before_start))
            except Exception as error:
                got.append(type(error).__name__)
            arn = client.list_streams()["Streams"][0]["StreamArn"]
            description = client.describe_stream(StreamArn=arn)["StreamDescription"]
            got.append((description["Shards"], description["StreamStatus"]))
            return got

    moto_streams.uninstall()
    expected = answers()
    moto_streams.install()
    assert answers() == expected
    assert len(expected[0]) == 4


def test_install_is_idempotent_and_uninstall_restores() -> None:
    from moto.dynamodb.models.table import StreamShard

    assert_installs_once(moto_streams, StreamShard, "add")
