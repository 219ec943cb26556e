"""The three DynamoDB tables the program declares (DESIGN §6)."""

from __future__ import annotations

from typing import Any

import pytest
from deploy_harness import Deployment

from adapters.dynamodb import table_specs
from streamer.settings import Settings

TABLE = "aws:dynamodb/table:Table"
KEYS = ("connections", "requests", "subscriptions")


def _table(deployment: Deployment, key: str) -> dict[str, Any]:
    return deployment.one(TABLE, f"{key}-table").inputs


def test_exactly_the_three_tables_are_declared(deployment: Deployment) -> None:
    names = sorted(r.inputs["name"] for r in deployment.all(TABLE))
    assert names == [f"streamer-{key}-prod" for key in KEYS]


@pytest.mark.parametrize("key", KEYS)
def test_table_is_on_demand_with_ttl_and_point_in_time_recovery(
    deployment: Deployment, key: str
) -> None:
    table = _table(deployment, key)
    assert table["billingMode"] == "PAY_PER_REQUEST"
    assert table["ttl"] == {"attributeName": "TTL", "enabled": True}
    assert table["pointInTimeRecovery"] == {"enabled": True}


def test_only_the_requests_table_streams_new_and_old_images(deployment: Deployment) -> None:
    requests = _table(deployment, "requests")
    assert requests["streamEnabled"] is True
    assert requests["streamViewType"] == "NEW_AND_OLD_IMAGES"
    for key in ("connections", "subscriptions"):
        assert "streamEnabled" not in _table(deployment, key)


def _schema_of_declared(table: dict[str, Any]) -> dict[str, Any]:
    keys = [(table["hashKey"], "HASH")]
    if "rangeKey" in table:
        keys.append((table["rangeKey"], "RANGE"))
    return {
        "keys": keys,
        "attributes": sorted((a["name"], a["type"]) for a in table["attributes"]),
        "indexes": sorted(
            (
                index["name"],
                tuple((k["attributeName"], k["keyType"]) for k in index["keySchemas"]),
                index["projectionType"],
            )
            for index in table["globalSecondaryIndexes"]
        ),
    }


def _schema_of_spec(spec: Any) -> dict[str, Any]:
    return {
        "keys": [(k["AttributeName"], k["KeyType"]) for k in spec["KeySchema"]],
        "attributes": sorted(
            (a["AttributeName"], a["AttributeType"]) for a in spec["AttributeDefinitions"]
        ),
        "indexes": sorted(
            (
                index["IndexName"],
                tuple((k["AttributeName"], k["KeyType"]) for k in index["KeySchema"]),
                index["Projection"]["ProjectionType"],
            )
            for index in spec["GlobalSecondaryIndexes"]
        ),
    }


def test_keys_and_indexes_match_what_streamer_tables_create_makes(
    deployment: Deployment,
) -> None:
    """The deployed schema and the one the stores are tested against never drift apart."""
    settings = Settings(
        connections_table="streamer-connections-prod",
        requests_table="streamer-requests-prod",
        subscriptions_table="streamer-subscriptions-prod",
    )
    specs = {spec["TableName"]: spec for spec in table_specs(settings)}
    for key in KEYS:
        declared = _table(deployment, key)
        assert _schema_of_declared(declared) == _schema_of_spec(specs[declared["name"]]), key
