"""The `ActiveConnections` counter item on DynamoDB (moto): kept by put and delete,
never listed as a connection, corrected by a recount."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from adapters.aws_lambda.runtime import ActiveConnectionsGauge
from adapters.dynamodb import DynamoDBStores
from adapters.dynamodb.connections import COUNTER_ID, DynamoDBConnectionStore
from adapters.dynamodb.items import connection_item
from streamer.errors import StoreUnavailable
from streamer.models import Connection, ConnectionId, TenantId, UserId
from streamer.ports import ConnectionStore
from streamer.settings import Settings
from streamer.testing import ManualClock

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def a_connection(
    cid: str, *, user: str = "u1", tenant: str = "t1", ttl_s: int = 86_400
) -> Connection:
    return Connection(
        connection_id=ConnectionId(cid),
        user_id=UserId(user),
        tenant_id=TenantId(tenant),
        endpoint="https://abc.execute-api.us-east-1.amazonaws.com/prod",
        connected_at=NOW,
        last_ping=NOW,
        expires_at=int(NOW.timestamp()) + ttl_s,
    )


async def count(stores: DynamoDBStores) -> int:
    return (await stores.connections.count()).count


async def test_the_counter_starts_at_zero_and_follows_puts_and_deletes(
    dynamodb_stores: DynamoDBStores,
) -> None:
    connections = dynamodb_stores.connections
    assert await count(dynamodb_stores) == 0
    await connections.put(a_connection("a"))
    await connections.put(a_connection("b"))
    assert await count(dynamodb_stores) == 2
    await connections.delete(ConnectionId("a"))
    assert await count(dynamodb_stores) == 1


async def test_putting_the_same_record_again_or_deleting_twice_counts_once(
    dynamodb_stores: DynamoDBStores,
) -> None:
    connections = dynamodb_stores.connections
    await connections.put(a_connection("a"))
    await connections.put(a_connection("a"))
    assert await count(dynamodb_stores) == 1
    await connections.delete(ConnectionId("a"))
    assert await connections.delete(ConnectionId("a")) is None
    assert await count(dynamodb_stores) == 0


async def test_the_counter_item_is_never_a_connection(dynamodb_stores: DynamoDBStores) -> None:
    """Not in either index, not readable, deletable or touchable by id."""
    connections: ConnectionStore = dynamodb_stores.connections
    await connections.put(a_connection("a", user="u1", tenant="t1"))
    assert [c.connection_id for c in await connections.list_by_tenant(TenantId("t1"))] == ["a"]
    assert [c.connection_id for c in await connections.list_by_user(UserId("u1"))] == ["a"]
    paged = [c async for page in connections.pages_by_tenant(TenantId("t1")) for c in page]
    assert [c.connection_id for c in paged] == ["a"]
    assert await connections.get(ConnectionId(COUNTER_ID)) is None
    assert await connections.touch(ConnectionId(COUNTER_ID), NOW) is False
    assert await connections.delete(ConnectionId(COUNTER_ID)) is None
    assert await count(dynamodb_stores) == 1


async def test_recount_corrects_drift_and_skips_expired_records(
    dynamodb_stores: DynamoDBStores, dynamodb_settings: Settings
) -> None:
    """Records written without the counter (a crash in between) and one past its TTL."""
    connections = dynamodb_stores.connections
    await connections.put(a_connection("counted"))
    for record in (a_connection("uncounted"), a_connection("expired", ttl_s=-60)):
        await dynamodb_stores.client.put_item(
            TableName=dynamodb_settings.connections_table, Item=connection_item(record)
        )
    assert await count(dynamodb_stores) == 1

    assert await connections.recount(NOW) == 2

    counted = await connections.count()
    assert (counted.count, counted.counted_at) == (2, NOW)
    await connections.delete(ConnectionId("uncounted"))
    assert await count(dynamodb_stores) == 1


async def test_a_failed_counter_write_never_fails_the_connect(
    dynamodb_stores: DynamoDBStores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record is what matters; the next recount fixes the count."""
    connections = dynamodb_stores.connections
    client = dynamodb_stores.client
    real_update = client.update_item

    async def throttled_counter(**kwargs: Any) -> Any:
        if kwargs.get("Key") == {"ConnectionID": {"S": COUNTER_ID}}:
            error = {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}
            raise ClientError({"Error": error}, "UpdateItem")
        return await real_update(**kwargs)

    monkeypatch.setattr(client, "update_item", throttled_counter)
    await connections.put(a_connection("a"))
    monkeypatch.undo()

    assert await connections.get(ConnectionId("a")) is not None
    assert await count(dynamodb_stores) == 0
    assert await connections.recount(NOW) == 1


async def test_the_sweepers_gauge_recounts_at_most_hourly(
    dynamodb_stores: DynamoDBStores, dynamodb_settings: Settings
) -> None:
    """A first sweep recounts; ten minutes later it reads the counter; an hour on it
    recounts again, fixing a drift that appeared meanwhile."""
    clock = ManualClock(NOW)
    gauge = ActiveConnectionsGauge(dynamodb_stores.connections, clock=clock)
    await dynamodb_stores.connections.put(a_connection("a"))
    assert await gauge.refresh() == 1
    await dynamodb_stores.client.put_item(
        TableName=dynamodb_settings.connections_table, Item=connection_item(a_connection("b"))
    )

    clock.advance(600)
    assert await gauge.refresh() == 1
    clock.advance(3000)
    assert await gauge.refresh() == 2
    assert await gauge.current() == 2


class _CountingClient:
    """The real client, counting the counter's `ADD`s. With `puts_wait_for_an_add`,
    a `PutItem` starts only once an `ADD` is on its way: a store that counts after
    the put never gets there."""

    def __init__(self, client: Any, *, puts_wait_for_an_add: bool = False) -> None:
        self._client = client
        self._puts_wait = puts_wait_for_an_add
        self._added = asyncio.Event()
        self.adds = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def update_item(self, **kwargs: Any) -> Any:
        if kwargs.get("UpdateExpression") == "ADD #n :d":
            self.adds += 1
            self._added.set()
        return await self._client.update_item(**kwargs)

    async def put_item(self, **kwargs: Any) -> Any:
        if self._puts_wait:
            await asyncio.wait_for(self._added.wait(), 5)
        return await self._client.put_item(**kwargs)


async def test_concurrent_connects_share_counter_writes_and_each_sees_its_own(
    dynamodb_stores: DynamoDBStores, dynamodb_settings: Settings
) -> None:
    client = _CountingClient(dynamodb_stores.client)
    store = DynamoDBConnectionStore(client, dynamodb_settings.connections_table)  # type: ignore[arg-type]
    seen: list[int] = []

    async def connect(cid: str) -> None:
        await store.put(a_connection(cid))
        seen.append(await count(dynamodb_stores))

    await asyncio.gather(*(connect(f"c{i}") for i in range(40)))
    assert await count(dynamodb_stores) == 40
    # Each connect returned only once the counter included it.
    assert all(n >= index + 1 for index, n in enumerate(sorted(seen)))
    assert 1 <= client.adds < 40

    await asyncio.gather(
        *(store.delete(ConnectionId(f"c{i}")) for i in range(20)),
        *(connect(f"d{i}") for i in range(20)),
    )
    assert await count(dynamodb_stores) == 40
    assert client.adds < 80


async def test_a_connects_count_goes_out_with_its_put(
    dynamodb_stores: DynamoDBStores, dynamodb_settings: Settings
) -> None:
    """One round trip for a `$connect`, not two, and the count still includes it."""
    client = _CountingClient(dynamodb_stores.client, puts_wait_for_an_add=True)
    store = DynamoDBConnectionStore(client, dynamodb_settings.connections_table)  # type: ignore[arg-type]
    await store.put(a_connection("a"))
    assert await count(dynamodb_stores) == 1
    assert await store.get(ConnectionId("a")) is not None


async def test_a_put_that_fails_takes_its_count_back(
    dynamodb_stores: DynamoDBStores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's error reaches the caller, and no record is counted that is not there."""
    connections = dynamodb_stores.connections
    client = dynamodb_stores.client

    async def refused_put(**kwargs: Any) -> Any:
        error = {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}
        raise ClientError({"Error": error}, "PutItem")

    monkeypatch.setattr(client, "put_item", refused_put)
    with pytest.raises(StoreUnavailable):
        await connections.put(a_connection("a"))
    monkeypatch.undo()

    assert await connections.get(ConnectionId("a")) is None
    assert await count(dynamodb_stores) == 0
