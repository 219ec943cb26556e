"""The stream parser and the shard reader: Lambda's `Records[]` and `GetRecords` give the
same change; what cannot be read is an `UnreadableRecord` naming its sequence number."""

from __future__ import annotations

import copy
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from adapters.aws import client_kwargs
from adapters.dynamodb import DynamoDBStores
from adapters.streams.reader import (
    _ERRORS_BY_CODE,
    IteratorExpired,
    Shard,
    ShardReader,
    StreamGone,
    StreamReadError,
    StreamUnavailable,
    TrimmedData,
    map_stream_errors,
)
from adapters.streams.records import UnreadableRecord, read_stream_record, sequence_number_of
from streamer import transitions
from streamer.models import (
    AsyncRequest,
    ConnectionId,
    RequestChange,
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


def parse_stream_record(raw: Any, *, table_name: str | None = None) -> RequestChange:
    """The change in `raw`, which must be readable."""
    change = read_stream_record(raw, table_name=table_name)
    assert isinstance(change, RequestChange), change
    return change


def refusal(raw: Any, *, table_name: str | None = None) -> str:
    """Why `raw` is unreadable (it must be), after checking it still names its record."""
    unreadable = read_stream_record(raw, table_name=table_name)
    assert isinstance(unreadable, UnreadableRecord), unreadable
    assert unreadable.sequence_number == sequence_number_or_none(raw)
    return unreadable.reason


def sequence_number_or_none(raw: Any) -> str | None:
    body = raw.get("dynamodb") if isinstance(raw, dict) else None
    value = body.get("SequenceNumber") if isinstance(body, dict) else None
    return value if isinstance(value, str) and value else None


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
    assert re.search(r"keys|string", refusal(with_changes("INSERT", Keys=keys)))


def test_a_record_from_another_source_is_refused() -> None:
    record = dict(LAMBDA_RECORD, eventSource="aws:kinesis")

    assert "eventSource" in refusal(record)


def test_a_record_from_another_table_is_refused_when_the_table_is_named() -> None:
    assert parse_stream_record(LAMBDA_RECORD, table_name="streamer-requests-prod")
    assert "streamer-requests-dev" in refusal(LAMBDA_RECORD, table_name="streamer-requests-dev")


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
    assert "stream record" in refusal({**LAMBDA_RECORD, **broken})


def test_an_unknown_status_is_refused() -> None:
    image = {"Status": {"S": "EXPLODED"}}

    assert "EXPLODED" in refusal(with_changes("MODIFY", NewImage=image))


@pytest.mark.parametrize(
    "created",
    [1e300, float("inf"), float("-inf"), float("nan"), -1e20, 10**17, "2015-04-09"],
    ids=["overflow", "inf", "-inf", "nan", "far-past", "far-future-ms", "text"],
)
def test_a_creation_time_out_of_range_is_unreadable_with_its_sequence_number(
    created: object,
) -> None:
    """`datetime.fromtimestamp` raises OverflowError, OSError or ValueError on these."""
    reason = refusal(with_changes("INSERT", ApproximateCreationDateTime=created))

    assert "ApproximateCreationDateTime" in reason


def test_any_error_of_parsing_is_an_unreadable_record() -> None:
    """Keys that cannot even be sorted for the message (a TypeError) do not escape."""
    keys = {"RequestID": {"S": "a#b#c"}, 7: {"S": "x"}}

    assert refusal(with_changes("INSERT", Keys=keys))


@pytest.mark.parametrize("raw", [None, [], "INSERT", {"dynamodb": "nope"}])
def test_a_record_that_is_no_mapping_is_unreadable_without_a_sequence_number(raw: Any) -> None:
    unreadable = read_stream_record(raw)

    assert isinstance(unreadable, UnreadableRecord)
    assert unreadable.sequence_number is None
    assert unreadable.reason


def test_the_sequence_number_is_read_in_one_place_for_both_forms() -> None:
    expected = LAMBDA_RECORD["dynamodb"]["SequenceNumber"]

    assert sequence_number_of(LAMBDA_RECORD) == expected
    assert sequence_number_of(get_records_form(LAMBDA_RECORD)) == expected
    assert sequence_number_of(with_changes("INSERT", SequenceNumber="")) is None


# -- the shard reader, on moto -------------------------------------------------------------


def _request(name: str, now: datetime) -> AsyncRequest:
    return AsyncRequest(
        key=request_key("acme", "alice", name),
        request_id=RequestId(name),
        connection_id=ConnectionId("c1"),
        user_id=UserId("alice"),
        tenant_id=TenantId("acme"),
        action="echo",
        payload={},
        status=RequestStatus.PENDING,
        created_at=now,
        updated_at=now,
    )


@pytest.fixture
async def reader(
    dynamodb_settings: Settings, dynamodb_stores: DynamoDBStores, dynamodb_session: Any
) -> AsyncIterator[ShardReader]:
    """A shard reader on the requests table's stream, over clients the test owns (of
    the same kind of session as the stores')."""
    async with dynamodb_session.client(
        "dynamodbstreams", **client_kwargs(dynamodb_settings)
    ) as streams:
        yield ShardReader(
            streams=streams,
            dynamodb=dynamodb_stores.client,
            table_name=dynamodb_settings.requests_table,
        )


async def _only_shard(reader: ShardReader) -> tuple[str, Shard]:
    arn = await reader.stream_arn()
    assert arn is not None
    shards = await reader.shards(arn)
    assert len(shards) == 1  # moto has one shard
    return arn, shards[0]


async def test_records_read_from_a_moto_stream_parse_to_changes(
    dynamodb_stores: DynamoDBStores, reader: ShardReader
) -> None:
    """What the emulator's poller reads through botocore parses like a Lambda record."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    request = _request("req-1", now)
    await dynamodb_stores.requests.enqueue(request)
    await dynamodb_stores.requests.apply(request.key, transitions.claim(now=now, lease_until=now))
    arn, shard = await _only_shard(reader)

    iterator = await reader.iterator(arn, shard.shard_id, after=None)
    assert iterator is not None
    page = await reader.read(iterator)

    changes = [c for c in page.records if isinstance(c, RequestChange)]
    assert len(changes) == len(page.records)
    assert [(c.event_name, c.new_status) for c in changes] == [
        ("INSERT", RequestStatus.PENDING),
        ("MODIFY", RequestStatus.PROCESSING),
    ]
    assert {c.key for c in changes} == {request.key}
    assert [c.is_claimable for c in changes] == [True, False]
    assert all(c.approximate_created_at.tzinfo is UTC for c in changes)
    assert [c.timeout_s for c in changes] == [request.timeout_s] * 2
    assert page.next_iterator is not None  # an open shard goes on


async def test_the_reader_resumes_after_a_sequence_number_and_finds_the_last_one(
    dynamodb_stores: DynamoDBStores, reader: ShardReader
) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    arn, shard = await _only_shard(reader)
    assert shard.parent_shard_id is None
    assert not shard.is_closed
    assert await reader.last_sequence_number(arn, shard.shard_id) is None  # empty so far
    for name in ("one", "two", "three"):
        await dynamodb_stores.requests.enqueue(_request(name, now))
    start = await reader.iterator(arn, shard.shard_id, after=None)
    assert start is not None
    first, second, third = (await reader.read(start)).records
    assert isinstance(first, RequestChange)
    assert isinstance(third, RequestChange)

    after_first = await reader.iterator(arn, shard.shard_id, after=first.sequence_number)
    assert after_first is not None
    resumed = await reader.read(after_first, limit=1)

    assert resumed.records == (second,)
    assert await reader.last_sequence_number(arn, shard.shard_id) == third.sequence_number


async def test_a_missing_table_is_a_typed_stream_gone(
    dynamodb_settings: Settings, dynamodb_stores: DynamoDBStores, dynamodb_session: Any
) -> None:
    async with dynamodb_session.client(
        "dynamodbstreams", **client_kwargs(dynamodb_settings)
    ) as streams:
        reader = ShardReader(
            streams=streams, dynamodb=dynamodb_stores.client, table_name="no-such-table"
        )
        with pytest.raises(StreamGone) as gone:
            await reader.stream_arn()
    assert gone.value.code == "ResourceNotFoundException"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("ExpiredIteratorException", IteratorExpired),
        ("TrimmedDataAccessException", TrimmedData),
        ("ResourceNotFoundException", StreamGone),
        ("LimitExceededException", StreamUnavailable),
        ("InternalServerError", StreamUnavailable),
    ],
)
def test_every_handled_error_code_is_mapped_to_its_typed_error(
    code: str, expected: type[StreamReadError]
) -> None:
    error = ClientError({"Error": {"Code": code, "Message": "m"}}, "GetRecords")

    with pytest.raises(expected) as raised, map_stream_errors():
        raise error

    assert raised.value.code == code
    assert raised.value.__cause__ is error


def test_the_mapping_covers_every_code_with_a_meaning_of_its_own() -> None:
    assert set(_ERRORS_BY_CODE) == {
        "ExpiredIteratorException",
        "TrimmedDataAccessException",
        "ResourceNotFoundException",
    }


@pytest.mark.parametrize(
    "error",
    [EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), ConnectionResetError()],
    ids=["unreachable", "reset"],
)
def test_an_unreachable_endpoint_is_stream_unavailable(error: Exception) -> None:
    with pytest.raises(StreamUnavailable) as raised, map_stream_errors():
        raise error

    assert raised.value.code == type(error).__name__
