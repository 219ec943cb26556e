"""`create_tables`, `delete_tables`, `list_tables` against a fresh moto server (DESIGN §6)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aioboto3
import boto3
import pytest

from adapters import commands
from adapters.aws import client_kwargs
from adapters.dynamodb import create_tables, delete_tables, list_tables
from streamer.settings import Settings


@pytest.fixture
def fresh_settings(moto_endpoint: str) -> Settings:
    """Settings naming three tables that do not exist yet."""
    suffix = uuid.uuid4().hex[:12]
    return dataclasses.replace(
        Settings(),
        connections_table=f"conn-{suffix}",
        requests_table=f"req-{suffix}",
        subscriptions_table=f"subs-{suffix}",
        dynamodb_endpoint_url=moto_endpoint,
    )


@pytest.fixture
async def client(fresh_settings: Settings) -> AsyncIterator[Any]:
    """A plain DynamoDB client on the moto server, to inspect what was made."""
    async with aioboto3.Session().client("dynamodb", **client_kwargs(fresh_settings)) as c:
        yield c


def _keys(schema: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(k["AttributeName"], k["KeyType"]) for k in schema]


def _indexes(table: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    return {
        index["IndexName"]: _keys(index["KeySchema"])
        for index in table.get("GlobalSecondaryIndexes", [])
    }


async def _ttl(client: Any, name: str) -> dict[str, Any]:
    response = await client.describe_time_to_live(TableName=name)
    return dict(response["TimeToLiveDescription"])


async def test_create_tables_makes_the_connections_table_of_the_design(
    fresh_settings: Settings, client: Any
) -> None:
    await create_tables(fresh_settings)

    table = (await client.describe_table(TableName=fresh_settings.connections_table))["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert _keys(table["KeySchema"]) == [("ConnectionID", "HASH")]
    assert _indexes(table) == {
        "UserIndex": [("UserID", "HASH")],
        "TenantIndex": [("TenantID", "HASH")],
    }
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert "StreamSpecification" not in table or not table["StreamSpecification"].get(
        "StreamEnabled"
    )
    ttl = await _ttl(client, fresh_settings.connections_table)
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "TTL"}


async def test_create_tables_makes_the_requests_table_with_its_stream(
    fresh_settings: Settings, client: Any
) -> None:
    await create_tables(fresh_settings)

    table = (await client.describe_table(TableName=fresh_settings.requests_table))["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert _keys(table["KeySchema"]) == [("RequestID", "HASH")]
    assert _indexes(table) == {
        "ConnectionIndex": [("ConnectionID", "HASH"), ("CreatedAt", "RANGE")],
        "StatusIndex": [("Status", "HASH"), ("CreatedAt", "RANGE")],
        "UserIndex": [("UserID", "HASH"), ("CreatedAt", "RANGE")],
    }
    assert all(
        index["Projection"]["ProjectionType"] == "ALL" for index in table["GlobalSecondaryIndexes"]
    )
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["StreamSpecification"] == {
        "StreamEnabled": True,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    assert table["LatestStreamArn"]
    ttl = await _ttl(client, fresh_settings.requests_table)
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "TTL"}


async def test_create_tables_makes_the_subscriptions_table_of_the_design(
    fresh_settings: Settings, client: Any
) -> None:
    await create_tables(fresh_settings)

    table = (await client.describe_table(TableName=fresh_settings.subscriptions_table))["Table"]
    assert _keys(table["KeySchema"]) == [("RequestID", "HASH"), ("ConnectionID", "RANGE")]
    assert _indexes(table) == {"ConnectionIndex": [("ConnectionID", "HASH")]}
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = await _ttl(client, fresh_settings.subscriptions_table)
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "TTL"}


async def test_create_tables_twice_changes_nothing_the_second_time(
    fresh_settings: Settings, client: Any
) -> None:
    first = await create_tables(fresh_settings)
    before = (await client.describe_table(TableName=fresh_settings.requests_table))["Table"]

    second = await create_tables(fresh_settings)

    after = (await client.describe_table(TableName=fresh_settings.requests_table))["Table"]
    assert sorted(first) == sorted(
        [
            fresh_settings.connections_table,
            fresh_settings.requests_table,
            fresh_settings.subscriptions_table,
        ]
    )
    assert second == []
    assert after["CreationDateTime"] == before["CreationDateTime"]
    assert after["LatestStreamArn"] == before["LatestStreamArn"]


async def test_list_tables_reports_missing_then_active(fresh_settings: Settings) -> None:
    names = [
        fresh_settings.connections_table,
        fresh_settings.requests_table,
        fresh_settings.subscriptions_table,
    ]
    assert await list_tables(fresh_settings) == dict.fromkeys(names, "MISSING")

    await create_tables(fresh_settings)

    assert await list_tables(fresh_settings) == dict.fromkeys(names, "ACTIVE")


async def test_delete_tables_removes_them_and_is_idempotent(fresh_settings: Settings) -> None:
    await create_tables(fresh_settings)

    deleted = await delete_tables(fresh_settings)
    again = await delete_tables(fresh_settings)

    assert len(deleted) == 3
    assert again == []
    assert set((await list_tables(fresh_settings)).values()) == {"MISSING"}


def test_streamer_tables_create_twice_on_a_fresh_server_yields_the_schema(
    fresh_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The `streamer tables create --endpoint-url URL` command, run twice, exits 0 both times."""
    monkeypatch.setenv("CONNECTIONS_TABLE", fresh_settings.connections_table)
    monkeypatch.setenv("REQUESTS_TABLE", fresh_settings.requests_table)
    monkeypatch.setenv("SUBSCRIPTIONS_TABLE", fresh_settings.subscriptions_table)
    argv = ["tables", "create", "--endpoint-url", str(fresh_settings.dynamodb_endpoint_url)]

    first = commands.main(argv)
    first_output = capsys.readouterr().out
    second = commands.main(argv)
    second_output = capsys.readouterr().out

    assert (first, second) == (0, 0)
    assert first_output.count("created") == 3
    assert second_output.count("exists") == 3
    client = boto3.client("dynamodb", **client_kwargs(fresh_settings))
    requests = client.describe_table(TableName=fresh_settings.requests_table)["Table"]
    assert {index["IndexName"] for index in requests["GlobalSecondaryIndexes"]} == {
        "ConnectionIndex",
        "StatusIndex",
        "UserIndex",
    }
    assert requests["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    for name in (fresh_settings.connections_table, fresh_settings.subscriptions_table):
        ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "TTL"}
