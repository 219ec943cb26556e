"""`parse_stream_record`: Lambda's `Records[]` and `get_records()` give the same change."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aioboto3
import pytest

from adapters.aws import client_kwargs
from adapters.dynamodb import DynamoDBStores
from adapters.streams import parse_stream_record
from streamer import transitions
from streamer.models import (
    AsyncRequest,
    ConnectionId,
    RequestId,
    RequestStatus,
    TenantId,
    UserId,
    request_key,
)
from streamer.settings import Settings

ARN = (
    "arn:aws:dynamodb:us-east-1:123456789012:table/streamer-requests-prod/"
    "stream/2026-01-01T00:00:00.000"
)

# Shaped like the Lambda developer guide's DynamoDB event sample, on our table.
LAMBDA_RECORD: dict[str, Any] = {
    "eventID": "c4ca4238a0b923820dcc509a6f75849b",
    "eventName": "INSERT",
    "eventVersion": "1.1",
    "eventSource": "aws:dynamodb",
    "awsRegion": "us-east-1",
    "dynamodb": {
        "Keys": {"RequestID": {"S": "acme#alice#req-1"}},
        "NewImage": {
            "RequestID": {"S": "acme#alice#req-1"},
            "Status": {"S": "PENDING"},
            "Action": {"S": "generate_report"},
            "Payload": {"M": {"report": {"S": "q1"}}},
            "Progress": {"N": "0"},
        },
        "ApproximateCreationDateTime": 1428537600,
        "SequenceNumber": "4421584500000000017450439091",
        "SizeBytes": 126,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    },
    "eventSourceARN": ARN,
}


def get_records_form(record: dict[str, Any]) -> dict[str, Any]:
    """The same record as botocore returns it from `GetRecords`: a datetime, no ARN."""
    converted = copy.deepcopy(record)
    converted.pop("eventSourceARN", None)
    seconds = converted["dynamodb"]["ApproximateCreationDateTime"]
    converted["dynamodb"]["ApproximateCreationDateTime"] = datetime.fromtimestamp(
        seconds, tz=timezone(timedelta(hours=2))
    )
    return converted


def with_changes(event_name: str, **body: Any) -> dict[str, Any]:
    record = copy.deepcopy(LAMBDA_RECORD)
    record["eventName"] = event_name
    record["dynamodb"].update(body)
    return record


def test_lambda_record_becomes_a_claimable_change() -> None:
    change = parse_stream_record(LAMBDA_RECORD)

    assert change.event_id == "c4ca4238a0b923820dcc509a6f75849b"
    assert change.event_name == "INSERT"
    assert change.sequence_number == "4421584500000000017450439091"
    assert change.key == "acme#alice#req-1"
    assert change.new_status is RequestStatus.PENDING
    assert change.approximate_created_at == datetime(2015, 4, 9, tzinfo=UTC)
    assert change.is_claimable


def test_the_image_timeout_travels_with_the_change() -> None:
    """The processor sets the claim's lease from it instead of reading the item."""
    image = dict(LAMBDA_RECORD["dynamodb"]["NewImage"], TimeoutSeconds={"N": "840.5"})

    assert parse_stream_record(with_changes("INSERT", NewImage=image)).timeout_s == 840.5
    assert parse_stream_record(LAMBDA_RECORD).timeout_s is None


@pytest.mark.parametrize("value", [{"S": "840"}, {"N": "soon"}, {"N": "nan"}, {"N": "-1"}])
def test_an_unusable_image_timeout_is_left_out(value: dict[str, str]) -> None:
    image = dict(LAMBDA_RECORD["dynamodb"]["NewImage"], TimeoutSeconds=value)

    assert parse_stream_record(with_changes("INSERT", NewImage=image)).timeout_s is None


def test_get_records_form_parses_to_the_same_change() -> None:
    assert parse_stream_record(get_records_form(LAMBDA_RECORD)) == parse_stream_record(
        LAMBDA_RECORD
    )


def test_approximate_time_is_utc_in_both_forms() -> None:
    for record in (LAMBDA_RECORD, get_records_form(LAMBDA_RECORD)):
        assert parse_stream_record(record).approximate_created_at.tzinfo is UTC


def test_fractional_and_millisecond_epochs_are_read_as_seconds() -> None:
    fractional = with_changes("INSERT", ApproximateCreationDateTime=1.46480646e9)
    millis = with_changes("INSERT", ApproximateCreationDateTime=1428537600123)

    assert parse_stream_record(fractional).approximate_created_at == datetime.fromtimestamp(
        1464806460, tz=UTC
    )
    assert parse_stream_record(millis).approximate_created_at == datetime(
        2015, 4, 9, 0, 0, 0, 123000, tzinfo=UTC
    )


def test_a_progress_write_is_not_claimable() -> None:
    image = dict(LAMBDA_RECORD["dynamodb"]["NewImage"], Status={"S": "PROCESSING"})

    change = parse_stream_record(with_changes("MODIFY", NewImage=image))

    assert change.new_status is RequestStatus.PROCESSING
    assert not change.is_claimable


def test_a_released_request_is_claimable_again() -> None:
    change = parse_stream_record(with_changes("MODIFY"))

    assert change.event_name == "MODIFY"
    assert change.is_claimable


def test_a_removal_has_no_new_status() -> None:
    record = with_changes("REMOVE", OldImage=LAMBDA_RECORD["dynamodb"]["NewImage"])
    del record["dynamodb"]["NewImage"]

    change = parse_stream_record(record)

    assert change.new_status is None
    assert not change.is_claimable


def test_a_keys_only_record_has_no_status() -> None:
    record = copy.deepcopy(LAMBDA_RECORD)
    del record["dynamodb"]["NewImage"]

    assert parse_stream_record(record).new_status is None


@pytest.mark.parametrize(
    ("keys", "what"),
    [
        ({"ConnectionID": {"S": "WyHPAfymhcwCENw="}}, "connections table"),
        ({"RequestID": {"S": "a#b#c"}, "ConnectionID": {"S": "x"}}, "subscriptions table"),
        ({"RequestID": {"N": "7"}}, "numeric key"),
    ],
    ids=["connections", "subscriptions", "numeric"],
)
def test_records_of_other_tables_are_refused(keys: dict[str, Any], what: str) -> None:
    with pytest.raises(ValueError, match=r"keys|string"):
        parse_stream_record(with_changes("INSERT", Keys=keys))


def test_a_record_from_another_source_is_refused() -> None:
    record = dict(LAMBDA_RECORD, eventSource="aws:kinesis")

    with pytest.raises(ValueError, match="eventSource"):
        parse_stream_record(record)


def test_a_record_from_another_table_is_refused_when_the_table_is_named() -> None:
    assert parse_stream_record(LAMBDA_RECORD, table_name="streamer-requests-prod")
    with pytest.raises(ValueError, match="streamer-requests-dev"):
        parse_stream_record(LAMBDA_RECORD, table_name="streamer-requests-dev")


@pytest.mark.parametrize(
    "broken",
    [
        {"eventName": "UPSERT"},
        {"dynamodb": None},
        {"dynamodb": {"Keys": {"RequestID": {"S": "k"}}, "ApproximateCreationDateTime": 1}},
    ],
    ids=["event-name", "no-body", "no-sequence-number"],
)
def test_malformed_records_are_refused(broken: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="stream record"):
        parse_stream_record({**LAMBDA_RECORD, **broken})


def test_an_unknown_status_is_refused() -> None:
    image = {"Status": {"S": "EXPLODED"}}

    with pytest.raises(ValueError, match="EXPLODED"):
        parse_stream_record(with_changes("MODIFY", NewImage=image))


async def test_records_read_from_a_moto_stream_parse_to_changes(
    dynamodb_settings: Settings, dynamodb_stores: DynamoDBStores
) -> None:
    """What the emulator's poller reads through botocore parses like a Lambda record."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    request = AsyncRequest(
        key=request_key("acme", "alice", "req-1"),
        request_id=RequestId("req-1"),
        connection_id=ConnectionId("c1"),
        user_id=UserId("alice"),
        tenant_id=TenantId("acme"),
        action="echo",
        payload={},
        status=RequestStatus.PENDING,
        created_at=now,
        updated_at=now,
    )
    await dynamodb_stores.requests.enqueue(request)
    await dynamodb_stores.requests.apply(request.key, transitions.claim(now=now, lease_until=now))

    described = await dynamodb_stores.client.describe_table(
        TableName=dynamodb_settings.requests_table
    )
    stream_arn = described["Table"]["LatestStreamArn"]
    session = aioboto3.Session()
    async with session.client("dynamodbstreams", **client_kwargs(dynamodb_settings)) as streams:
        shard = (await streams.describe_stream(StreamArn=stream_arn))["StreamDescription"][
            "Shards"
        ][0]
        iterator = (
            await streams.get_shard_iterator(
                StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )
        )["ShardIterator"]
        records = (await streams.get_records(ShardIterator=iterator))["Records"]

    changes = [parse_stream_record(record) for record in records]
    assert [(c.event_name, c.new_status) for c in changes] == [
        ("INSERT", RequestStatus.PENDING),
        ("MODIFY", RequestStatus.PROCESSING),
    ]
    assert {c.key for c in changes} == {request.key}
    assert [c.is_claimable for c in changes] == [True, False]
    assert all(c.approximate_created_at.tzinfo is UTC for c in changes)
    assert [c.timeout_s for c in changes] == [request.timeout_s] * 2
