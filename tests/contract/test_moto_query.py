"""`adapters.moto_query` gives the answers moto gives, page by page, only faster."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto_answers import assert_installs_once

from adapters import moto_query

KEYS = [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
ATTRIBUTES = [
    {"AttributeName": "pk", "AttributeType": "S"},
    {"AttributeName": "sk", "AttributeType": "S"},
    {"AttributeName": "tenant", "AttributeType": "S"},
    {"AttributeName": "rank", "AttributeType": "N"},
]
INDEXES = [
    {
        "IndexName": "TenantRank",
        "KeySchema": [
            {"AttributeName": "tenant", "KeyType": "HASH"},
            {"AttributeName": "rank", "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "ALL"},
    },
    {
        "IndexName": "TenantOnly",
        "KeySchema": [{"AttributeName": "tenant", "KeyType": "HASH"}],
        "Projection": {"ProjectionType": "KEYS_ONLY"},
    },
    {
        "IndexName": "RankOnly",
        "KeySchema": [{"AttributeName": "rank", "KeyType": "HASH"}],
        "Projection": {"ProjectionType": "ALL"},
    },
]


@pytest.fixture
def client() -> Iterator[Any]:
    """A moto DynamoDB with 150 items over two tables; moto's query restored after."""
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        dynamodb.create_table(
            TableName="ranged",
            KeySchema=KEYS,
            AttributeDefinitions=ATTRIBUTES,
            GlobalSecondaryIndexes=INDEXES,
            BillingMode="PAY_PER_REQUEST",
        )
        dynamodb.create_table(
            TableName="plain",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        for i in range(150):
            item: dict[str, Any] = {
                "pk": {"S": f"p{i % 7}"},
                "sk": {"S": f"s{(i * 37) % 150:03d}"},
                "body": {"M": {"n": {"N": str(i)}, "tags": {"SS": ["a", f"t{i % 3}"]}}},
            }
            if i % 5:  # some items are in no index
                item["tenant"] = {"S": f"t{i % 3}"}
                item["rank"] = {"N": ("1.0", "1", "2", "10", "-3.5")[i % 5]}
            dynamodb.put_item(TableName="ranged", Item=item)
            dynamodb.put_item(TableName="plain", Item={"pk": {"S": f"k{i}"}, "v": {"N": str(i)}})
        yield dynamodb
    moto_query.install()


def _all_pages(client: Any, **query: Any) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    start: dict[str, Any] = {}
    while True:
        page = client.query(**query, **start)
        page.pop("ResponseMetadata")
        pages.append(page)
        if "LastEvaluatedKey" not in page:
            return pages
        start = {"ExclusiveStartKey": page["LastEvaluatedKey"]}


QUERIES: list[dict[str, Any]] = [
    {"TableName": "ranged", "KeyConditionExpression": "pk = :v", "V": {"S": "p3"}},
    {"TableName": "ranged", "KeyConditionExpression": "pk = :v", "V": {"S": "none"}},
    {
        "TableName": "ranged",
        "KeyConditionExpression": "pk = :v AND begins_with(sk, :b)",
        "V": {"S": "p1"},
        "B": {"S": "s1"},
    },
    {"TableName": "ranged", "KeyConditionExpression": "pk = :v", "V": {"S": "p2"}, "Limit": 7},
    {
        "TableName": "ranged",
        "KeyConditionExpression": "pk = :v",
        "V": {"S": "p2"},
        "Limit": 5,
        "ScanIndexForward": False,
    },
    {
        "TableName": "ranged",
        "KeyConditionExpression": "pk = :v",
        "V": {"S": "p4"},
        "FilterExpression": "contains(body.tags, :b)",
        "B": {"S": "t1"},
        "ProjectionExpression": "sk, body.n",
    },
    {
        "TableName": "ranged",
        "IndexName": "TenantRank",
        "KeyConditionExpression": "tenant = :v",
        "V": {"S": "t1"},
        "Limit": 9,
    },
    {
        "TableName": "ranged",
        "IndexName": "TenantRank",
        "KeyConditionExpression": "tenant = :v",
        "V": {"S": "t0"},
        "Limit": 4,
        "ScanIndexForward": False,
    },
    {
        "TableName": "ranged",
        "IndexName": "TenantRank",
        "KeyConditionExpression": "tenant = :v AND #r BETWEEN :b AND :c",
        "V": {"S": "t2"},
        "B": {"N": "1"},
        "C": {"N": "5"},
        "Names": {"#r": "rank"},
    },
    {
        "TableName": "ranged",
        "IndexName": "TenantOnly",
        "KeyConditionExpression": "tenant = :v",
        "V": {"S": "t2"},
        "Limit": 11,
    },
    {
        "TableName": "ranged",
        "IndexName": "RankOnly",
        "KeyConditionExpression": "#r = :v",
        "V": {"N": "1"},
        "Names": {"#r": "rank"},
        "Limit": 6,
    },
    {"TableName": "plain", "KeyConditionExpression": "pk = :v", "V": {"S": "k42"}},
    {"TableName": "plain", "KeyConditionExpression": "pk = :v", "V": {"S": "k999"}},
]


def _request(spec: dict[str, Any]) -> dict[str, Any]:
    query = {k: v for k, v in spec.items() if k not in {"V", "B", "C", "Names"}}
    query["ExpressionAttributeValues"] = {
        f":{k.lower()}": spec[k] for k in ("V", "B", "C") if k in spec
    }
    if "Names" in spec:
        query["ExpressionAttributeNames"] = spec["Names"]
    return query


@pytest.mark.parametrize("spec", QUERIES, ids=lambda s: s["KeyConditionExpression"][:24])
def test_every_page_is_the_one_moto_gives(client: Any, spec: dict[str, Any]) -> None:
    query = _request(spec)
    moto_query.uninstall()
    expected = _all_pages(client, **query)
    moto_query.install()
    assert _all_pages(client, **query) == expected


def test_install_is_idempotent_and_uninstall_restores() -> None:
    from moto.dynamodb.models.table import Table

    assert_installs_once(moto_query, Table, "query")
