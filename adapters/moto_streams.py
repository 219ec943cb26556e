"""moto's DynamoDB Streams iterators, expired after 15 minutes as DynamoDB's are.

moto keeps every shard iterator it ever handed out: each `GetRecords` answer
carries a new one (a 632-character id) that stays in a dict for the life of the
server. A poller reading every 0.5 s while idle leaves about 170,000 of them a
day, some 250 MB of an embedded moto that `make run` keeps up for days.
`install` stamps each iterator when it is made and, on every `GetRecords` and
`GetShardIterator`, drops the ones older than DynamoDB's 15-minute lifetime
(oldest first: the dict is in creation order). A `GetRecords` on a dropped one
is answered `ExpiredIteratorException`, as DynamoDB answers it, and a reader
gets a fresh iterator after its last record, as after any expiry.

Used by `LocalMotoServer`, which applies one request at a time.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ITERATOR_LIFETIME_S", "install", "uninstall"]

ITERATOR_LIFETIME_S = 15 * 60
"""How long DynamoDB Streams honours a shard iterator."""
_MARK = "_streamer_expiring"

clock: Callable[[], float] = time.monotonic
"""The time source (a test moves it)."""


def install() -> None:
    """Wrap moto's iterator creation and the two calls that touch iterators (idempotent)."""
    from moto.dynamodbstreams.models import DynamoDBStreamsBackend, ShardIterator

    if getattr(DynamoDBStreamsBackend.get_records, _MARK, False):
        return
    original_init = ShardIterator.__init__
    original_get_records = DynamoDBStreamsBackend.get_records
    original_get_iterator = DynamoDBStreamsBackend.get_shard_iterator

    @functools.wraps(original_init)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.made_at = clock()

    @functools.wraps(original_get_records)
    def get_records(self: Any, iterator_arn: str, limit: int) -> Any:
        _expire(self.shard_iterators)
        if iterator_arn not in self.shard_iterators:
            from moto.core.exceptions import JsonRESTError

            raise JsonRESTError(
                "ExpiredIteratorException", "The shard iterator has expired or is not known"
            )
        return original_get_records(self, iterator_arn, limit)

    @functools.wraps(original_get_iterator)
    def get_shard_iterator(self: Any, *args: Any, **kwargs: Any) -> Any:
        _expire(self.shard_iterators)
        return original_get_iterator(self, *args, **kwargs)

    for wrapper in (init, get_records, get_shard_iterator):
        setattr(wrapper, _MARK, True)
    ShardIterator.__init__ = init  # type: ignore[method-assign]
    DynamoDBStreamsBackend.get_records = get_records  # type: ignore[method-assign]
    DynamoDBStreamsBackend.get_shard_iterator = get_shard_iterator  # type: ignore[method-assign]


def uninstall() -> None:
    """Put moto's own methods back (tests)."""
    from moto.dynamodbstreams.models import DynamoDBStreamsBackend, ShardIterator

    if not getattr(DynamoDBStreamsBackend.get_records, _MARK, False):
        return
    ShardIterator.__init__ = ShardIterator.__init__.__wrapped__  # type: ignore[attr-defined,method-assign]
    for name in ("get_records", "get_shard_iterator"):
        setattr(DynamoDBStreamsBackend, name, getattr(DynamoDBStreamsBackend, name).__wrapped__)


def _expire(iterators: dict[str, Any]) -> None:
    """Drop iterators past their lifetime, oldest first, stopping at the first live one."""
    oldest_allowed = clock() - ITERATOR_LIFETIME_S
    while iterators:
        arn = next(iter(iterators))
        if getattr(iterators[arn], "made_at", oldest_allowed) > oldest_allowed:
            return
        del iterators[arn]
