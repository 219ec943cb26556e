"""moto's DynamoDB Streams as DynamoDB keeps them: iterators expire after 15 minutes,
records are trimmed after 24 hours.

moto keeps every shard iterator it ever handed out: each `GetRecords` answer
carries a new one (a 632-character id) that stays in a dict for the life of the
server. A poller reading every 0.5 s while idle leaves about 170,000 of them a
day, some 250 MB of an embedded moto that `make run` keeps up for days.
`install` stamps each iterator when it is made and, on every `GetRecords` and
`GetShardIterator`, drops the ones older than DynamoDB's 15-minute lifetime
(oldest first: the dict is in creation order). A `GetRecords` on a dropped one
is answered `ExpiredIteratorException`, as DynamoDB answers it, and a reader
gets a fresh iterator after its last record, as after any expiry.

moto also keeps every stream record ever written (`StreamShard.items`, both
images of each). DynamoDB keeps a record 24 hours. Each record is stamped when it
is written, and those past 24 hours are dropped from the front of the shard on
each write, `GetRecords` and `GetShardIterator`. moto numbers a record by its
place in the list, so each of its own computations (a new record's number,
`TRIM_HORIZON`, `LATEST`, a page) runs with the shard's start moved past the
records dropped: a record keeps its number, `TRIM_HORIZON` is the oldest one
kept, and `DescribeStream` still shows the shard's own start. Reading from a
position before the oldest record kept (an iterator at or after a sequence number
whose next records are gone, or one that was there when they went) is answered
`TrimmedDataAccessException`, as DynamoDB answers a read past its trim point;
an iterator after the last record dropped, where nothing unread is gone, reads
on. Until a record is 24 hours old, every answer is moto's.

Used by `LocalMotoServer`, which applies one request at a time.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["ITERATOR_LIFETIME_S", "RECORD_RETENTION_S", "install", "uninstall"]

ITERATOR_LIFETIME_S = 15 * 60
"""How long DynamoDB Streams honours a shard iterator."""
RECORD_RETENTION_S = 24 * 60 * 60
"""How long DynamoDB Streams keeps a stream record."""
_MARK = "_streamer_expiring"
_TRIMMED = "_streamer_trimmed"
"""A shard's count of records dropped from its front."""

clock: Callable[[], float] = time.monotonic
"""The time source (a test moves it)."""


def install() -> None:
    """Wrap moto's iterator and record creation, a shard's `add`, and the two calls
    that touch iterators (idempotent)."""
    from moto.dynamodb.models.table import StreamRecord, StreamShard
    from moto.dynamodbstreams.models import DynamoDBStreamsBackend, ShardIterator

    if getattr(DynamoDBStreamsBackend.get_records, _MARK, False):
        return
    original_init = ShardIterator.__init__
    original_record_init = StreamRecord.__init__
    original_add = StreamShard.add
    original_get_records = DynamoDBStreamsBackend.get_records
    original_get_iterator = DynamoDBStreamsBackend.get_shard_iterator

    @functools.wraps(original_init)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.made_at = clock()

    @functools.wraps(original_record_init)
    def record_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_record_init(self, *args, **kwargs)
        self.made_at = clock()

    @functools.wraps(original_add)
    def add(self: Any, old: Any, new: Any) -> None:
        _trim(self)
        if not getattr(self, _TRIMMED, 0):
            original_add(self, old, new)
            return
        with _counting_dropped(self):
            original_add(self, old, new)

    @functools.wraps(original_get_records)
    def get_records(self: Any, iterator_arn: str, limit: int) -> Any:
        _expire(self.shard_iterators)
        iterator = self.shard_iterators.get(iterator_arn)
        if iterator is None:
            raise _error(
                "ExpiredIteratorException", "The shard iterator has expired or is not known"
            )
        shard = iterator.stream_shard
        _trim(shard)
        _refuse_if_trimmed(shard, iterator.sequence_number)
        with _counting_dropped(shard):
            return original_get_records(self, iterator_arn, limit)

    @functools.wraps(original_get_iterator)
    def get_shard_iterator(self: Any, arn: str, *args: Any, **kwargs: Any) -> Any:
        _expire(self.shard_iterators)
        shard = self._get_table_from_arn(arn).stream_shard
        if shard is None:
            return original_get_iterator(self, arn, *args, **kwargs)
        _trim(shard)
        with _counting_dropped(shard):
            iterator = original_get_iterator(self, arn, *args, **kwargs)
        try:
            _refuse_if_trimmed(shard, iterator.sequence_number)
        except Exception:
            self.shard_iterators.pop(iterator.arn, None)
            raise
        return iterator

    wrappers = (init, record_init, add, get_records, get_shard_iterator)
    for wrapper in wrappers:
        setattr(wrapper, _MARK, True)
    ShardIterator.__init__ = init  # type: ignore[method-assign]
    StreamRecord.__init__ = record_init  # type: ignore[method-assign]
    StreamShard.add = add  # type: ignore[method-assign]
    DynamoDBStreamsBackend.get_records = get_records  # type: ignore[method-assign]
    DynamoDBStreamsBackend.get_shard_iterator = get_shard_iterator  # type: ignore[method-assign]


def uninstall() -> None:
    """Put moto's own methods back (tests)."""
    from moto.dynamodb.models.table import StreamRecord, StreamShard
    from moto.dynamodbstreams.models import DynamoDBStreamsBackend, ShardIterator

    if not getattr(DynamoDBStreamsBackend.get_records, _MARK, False):
        return
    owners: tuple[tuple[Any, str], ...] = (
        (ShardIterator, "__init__"),
        (StreamRecord, "__init__"),
        (StreamShard, "add"),
        (DynamoDBStreamsBackend, "get_records"),
        (DynamoDBStreamsBackend, "get_shard_iterator"),
    )
    for owner, name in owners:
        setattr(owner, name, getattr(owner, name).__wrapped__)


def _error(code: str, message: str) -> Exception:
    from moto.core.exceptions import JsonRESTError

    return JsonRESTError(code, message)


def _trim(shard: Any) -> None:
    """Drop the records past their retention from the front of `shard`."""
    records = shard.items
    if not records:
        return
    oldest_allowed = clock() - RECORD_RETENTION_S
    if getattr(records[0], "made_at", oldest_allowed + 1) > oldest_allowed:
        return  # the oldest is young: nothing to drop (the usual case)
    gone = 0
    for record in records:
        if getattr(record, "made_at", oldest_allowed + 1) > oldest_allowed:
            break
        gone += 1
    if gone:
        del records[:gone]
        setattr(shard, _TRIMMED, getattr(shard, _TRIMMED, 0) + gone)


@contextlib.contextmanager
def _counting_dropped(shard: Any) -> Iterator[None]:
    """Run moto's own code with the shard's start moved past the records dropped, so a
    place in `items` gives the number it had (moto numbers records by place)."""
    dropped = getattr(shard, _TRIMMED, 0)
    if not dropped:
        yield
        return
    shard.starting_sequence_number += dropped
    try:
        yield
    finally:
        shard.starting_sequence_number -= dropped


def _refuse_if_trimmed(shard: Any, position: Any) -> None:
    """`TrimmedDataAccessException` for a read from a record that was dropped (moto's
    own answer for a position before the shard's start, or not a number)."""
    start = shard.starting_sequence_number
    if type(position) is int and start <= position < start + getattr(shard, _TRIMMED, 0):
        raise _error(
            "TrimmedDataAccessException",
            "The operation attempted to read past the oldest stream record in a shard",
        )


def _expire(iterators: dict[str, Any]) -> None:
    """Drop iterators past their lifetime, oldest first, stopping at the first live one."""
    oldest_allowed = clock() - ITERATOR_LIFETIME_S
    while iterators:
        arn = next(iter(iterators))
        if getattr(iterators[arn], "made_at", oldest_allowed) > oldest_allowed:
            return
        del iterators[arn]
