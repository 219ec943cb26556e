"""The shard reader: the requests table's DynamoDB Stream, read through given clients.

Every call goes through `map_stream_errors`, so its callers (the emulator's
poller) see typed errors (`IteratorExpired`, `TrimmedData`, `StreamGone`,
`StreamUnavailable`) and never a botocore type or error code. Records come back
parsed by the one parser (`read_stream_record`). The reader opens no client:
the composition root hands it the ones it made.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

from botocore.exceptions import BotoCoreError, ClientError

from adapters.streams.records import (
    UnreadableRecord,
    read_stream_record,
    sequence_number_of,
)
from streamer.models import RequestChange

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodbstreams import DynamoDBStreamsClient

__all__ = [
    "MAX_RECORDS_PER_READ",
    "IteratorExpired",
    "Page",
    "Shard",
    "ShardReader",
    "StreamGone",
    "StreamReadError",
    "StreamUnavailable",
    "TrimmedData",
    "map_stream_errors",
]

MAX_RECORDS_PER_READ: Final = 1000
"""`GetRecords` takes a Limit of at most 1000."""


class StreamReadError(Exception):
    """A call to the stream failed; `code` is the AWS error code (or the error's type).

    Args:
        code: e.g. `ExpiredIteratorException`, `EndpointConnectionError`.
        message: one line for the log.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code


class IteratorExpired(StreamReadError):
    """The shard iterator is older than 15 minutes: get a new one after the last record."""


class TrimmedData(StreamReadError):
    """The position asked for is older than the stream keeps (24 h): records were lost."""


class StreamGone(StreamReadError):
    """The table, its stream or the shard does not exist (any more): look for a new stream."""


class StreamUnavailable(StreamReadError):
    """Any other failure (throttling, a 5xx, the endpoint unreachable): retry later."""


_ERRORS_BY_CODE: Final[Mapping[str, type[StreamReadError]]] = {
    "ExpiredIteratorException": IteratorExpired,
    "TrimmedDataAccessException": TrimmedData,
    "ResourceNotFoundException": StreamGone,
}
"""The AWS error codes with a meaning of their own; any other is `StreamUnavailable`."""


@contextlib.contextmanager
def map_stream_errors() -> Iterator[None]:
    """Translate botocore's exceptions (and socket errors) into `StreamReadError`s."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "ClientError"))
        raise _ERRORS_BY_CODE.get(code, StreamUnavailable)(
            code, str(error.get("Message", ""))
        ) from exc
    except (BotoCoreError, OSError) as exc:
        raise StreamUnavailable(type(exc).__name__, str(exc)) from exc


@dataclass(frozen=True, slots=True)
class Shard:
    """One shard of a stream, as `DescribeStream` lists it.

    Args:
        shard_id: its id.
        parent_shard_id: the shard it was split from, whose records come first.
        is_closed: it has an ending sequence number (no record will be added).
    """

    shard_id: str
    parent_shard_id: str | None
    is_closed: bool


@dataclass(frozen=True, slots=True)
class Page:
    """One `GetRecords` answer.

    Args:
        records: each record parsed, in shard order; a record without a sequence
            number is an `UnreadableRecord` whose `sequence_number` is None.
        next_iterator: where to read on; None once a closed shard is read to its end.
    """

    records: tuple[RequestChange | UnreadableRecord, ...]
    next_iterator: str | None


class ShardReader:
    """Reads the requests table's stream: its current ARN, its shards, their records.

    Args:
        streams: a DynamoDB Streams client (its owner closes it).
        dynamodb: a DynamoDB client, for the table's `LatestStreamArn`.
        table_name: the requests table.
    """

    def __init__(
        self, *, streams: DynamoDBStreamsClient, dynamodb: DynamoDBClient, table_name: str
    ) -> None:
        self._streams = streams
        self._dynamodb = dynamodb
        self.table_name = table_name

    async def stream_arn(self) -> str | None:
        """The table's current stream; None when streams are not enabled on it."""
        with map_stream_errors():
            described = await self._dynamodb.describe_table(TableName=self.table_name)
        arn = described["Table"].get("LatestStreamArn")
        return str(arn) if arn else None

    async def shards(self, stream_arn: str) -> list[Shard]:
        """Every shard of the stream, parents before children (DescribeStream's order)."""
        shards: list[Shard] = []
        start: str | None = None
        while True:
            with map_stream_errors():
                if start is None:
                    described = await self._streams.describe_stream(StreamArn=stream_arn)
                else:
                    described = await self._streams.describe_stream(
                        StreamArn=stream_arn, ExclusiveStartShardId=start
                    )
            description = described["StreamDescription"]
            for shard in description.get("Shards", []):
                shards.append(
                    Shard(
                        shard_id=shard["ShardId"],
                        parent_shard_id=shard.get("ParentShardId") or None,
                        is_closed=bool(
                            shard.get("SequenceNumberRange", {}).get("EndingSequenceNumber")
                        ),
                    )
                )
            start = description.get("LastEvaluatedShardId")
            if not start:
                return shards

    async def iterator(self, stream_arn: str, shard_id: str, *, after: str | None) -> str | None:
        """An iterator after sequence number `after` (None: from the shard's start);
        None when a closed shard has nothing there."""
        with map_stream_errors():
            if after is None:
                got = await self._streams.get_shard_iterator(
                    StreamArn=stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )
            else:
                got = await self._streams.get_shard_iterator(
                    StreamArn=stream_arn,
                    ShardId=shard_id,
                    ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                    SequenceNumber=after,
                )
        return got.get("ShardIterator")

    async def read(self, iterator: str, *, limit: int = MAX_RECORDS_PER_READ) -> Page:
        """Up to `limit` records from `iterator` on, each through the one parser."""
        with map_stream_errors():
            page = await self._streams.get_records(ShardIterator=iterator, Limit=limit)
        records = tuple(
            read_stream_record(raw, table_name=self.table_name) for raw in page.get("Records", [])
        )
        # The stubs say it is always there; a closed shard read to its end has none.
        next_iterator = cast("dict[str, Any]", page).get("NextShardIterator")
        return Page(records=records, next_iterator=next_iterator)

    async def last_sequence_number(self, stream_arn: str, shard_id: str) -> str | None:
        """The last sequence number now in the shard (None when it is empty)."""
        iterator = await self.iterator(stream_arn, shard_id, after=None)
        last: str | None = None
        while iterator:
            with map_stream_errors():
                page = await self._streams.get_records(
                    ShardIterator=iterator, Limit=MAX_RECORDS_PER_READ
                )
            records = page.get("Records", [])
            if not records:
                break
            last = sequence_number_of(records[-1]) or last
            iterator = cast("dict[str, Any]", page).get("NextShardIterator")
        return last
