"""What only the DynamoDB adapters promise: stored attribute names and types, TTL,
error translation, retries, client settings and value conversion."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from adapters.aws import DUMMY_CREDENTIALS, client_config, client_kwargs
from adapters.dynamodb import (
    ERROR_CODES,
    MAX_ITEM_BYTES,
    DynamoDBStores,
    create_tables,
    delete_tables,
    format_time,
    from_attribute_value,
    item_size,
    list_tables,
    map_client_errors,
    open_stores,
    parse_time,
    to_attribute_value,
)
from adapters.dynamodb.items import REQUEST_ATTRIBUTES
from adapters.dynamodb.requests import compile_transition
from streamer import transitions
from streamer.errors import ItemTooLarge, StoreUnavailable, UnstorableValue
from streamer.models import (
    AsyncRequest,
    Connection,
    ConnectionId,
    ConnectionMetadata,
    RequestError,
    RequestId,
    RequestStatus,
    Subscription,
    TenantId,
    UserId,
    request_key,
)
from streamer.settings import Settings

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EXPIRES = 1_773_000_000


def a_request() -> AsyncRequest:
    return AsyncRequest(
        key=request_key("acme", "alice", "req-1"),
        request_id=RequestId("req-1"),
        connection_id=ConnectionId("c1"),
        user_id=UserId("alice"),
        tenant_id=TenantId("acme"),
        action="generate_report",
        payload={"n": 1.5},
        status=RequestStatus.PENDING,
        created_at=T0,
        updated_at=T0,
    )


async def raw_item(stores: DynamoDBStores, table: str, key: dict[str, Any]) -> dict[str, Any]:
    response = await stores.client.get_item(TableName=table, Key=key, ConsistentRead=True)
    return dict(response["Item"])


# --- stored shape ----------------------------------------------------------------------


async def test_connection_item_uses_the_original_attribute_names_and_a_numeric_ttl(
    dynamodb_settings: Settings, dynamodb_stores: DynamoDBStores
) -> None:
    connection = Connection(
        connection_id=ConnectionId("WyHPAfymhcwCENw="),
        user_id=UserId("alice"),
        tenant_id=TenantId("acme"),
        endpoint="https://x.execute-api.us-east-1.amazonaws.com/prod",
        connected_at=T0,
        last_ping=T0,
        expires_at=EXPIRES,
        metadata=ConnectionMetadata("ua", "203.0.113.7", ("read",)),
    )
    await dynamodb_stores.connections.put(connection)

    item = await raw_item(
        dynamodb_stores,
        dynamodb_settings.connections_table,
        {"ConnectionID": {"S": "WyHPAfymhcwCENw="}},
    )

    assert set(item) == {
        "ConnectionID",
        "UserID",
        "TenantID",
        "Endpoint",
        "ConnectedAt",
        "LastPing",
        "Metadata",
        "TTL",
    }
    assert item["TTL"] == {"N": str(EXPIRES)}
    assert item["ConnectedAt"] == {"S": "2026-03-01T12:00:00.000000Z"}
    assert from_attribute_value(item["Metadata"]) == {
        "user_agent": "ua",
        "ip_address": "203.0.113.7",
        "permissions": ["read"],
    }


async def test_pending_request_has_no_ttl_and_a_completed_one_has_a_numeric_ttl(
    dynamodb_settings: Settings, dynamodb_stores: DynamoDBStores
) -> None:
    request = a_request()
    key = {"RequestID": {"S": request.key}}
    await dynamodb_stores.requests.enqueue(request)
    pending = await raw_item(dynamodb_stores, dynamodb_settings.requests_table, key)
    await dynamodb_stores.requests.apply(
        request.key, transitions.claim(now=T0, lease_until=T0 + timedelta(seconds=60))
    )
    await dynamodb_stores.requests.apply(
        request.key,
        transitions.complete(attempt=1, result={"ok": True}, now=T0, expires_at=EXPIRES),
    )

    completed = await raw_item(dynamodb_stores, dynamodb_settings.requests_table, key)

    assert "TTL" not in pending
    assert pending["RequestID"] == {"S": "acme#alice#req-1"}
    assert pending["ClientRequestID"] == {"S": "req-1"}
    assert pending["Payload"] == {"M": {"n": {"N": "1.5"}}}
    assert completed["TTL"] == {"N": str(EXPIRES)}
    assert completed["Status"] == {"S": "COMPLETED"}
    assert completed["Attempt"] == {"N": "1"}
    assert {"Result", "CompletedAt", "ProcessingStarted", "UpdatedAt", "CreatedAt"} <= set(
        completed
    )


async def test_the_follow_mark_is_a_boolean_and_an_item_without_it_reads_as_followed(
    dynamodb_settings: Settings, dynamodb_stores: DynamoDBStores
) -> None:
    table = dynamodb_settings.requests_table
    request = replace(a_request(), followed=False)
    key = {"RequestID": {"S": request.key}}
    await dynamodb_stores.requests.enqueue(request)
    assert (await raw_item(dynamodb_stores, table, key))["Followed"] == {"BOOL": False}
    await dynamodb_stores.requests.apply(request.key, transitions.follow())
    assert (await raw_item(dynamodb_stores, table, key))["Followed"] == {"BOOL": True}

    # An item written before the mark existed: its subscribers are looked up.
    await dynamodb_stores.client.update_item(
        TableName=table, Key=key, UpdateExpression="REMOVE Followed"
    )
    stored = await dynamodb_stores.requests.get(request.key)
    assert stored is not None
    assert stored.followed is True


async def test_failed_request_keeps_error_as_a_map_of_code_message_details(
    dynamodb_settings: Settings, dynamodb_stores: DynamoDBStores
) -> None:
    request = a_request()
    await dynamodb_stores.requests.enqueue(request)
    await dynamodb_stores.requests.apply(request.key, transitions.claim(now=T0, lease_until=T0))
    error = RequestError("PROCESSING_FAILED", "boom", {"attempts": 3})
    await dynamodb_stores.requests.apply(
        request.key, transitions.fail(attempt=1, error=error, now=T0, expires_at=EXPIRES)
    )

    item = await raw_item(
        dynamodb_stores, dynamodb_settings.requests_table, {"RequestID": {"S": request.key}}
    )

    assert from_attribute_value(item["Error"]) == {
        "code": "PROCESSING_FAILED",
        "message": "boom",
        "details": {"attempts": 3},
    }
    assert item["TTL"] == {"N": str(EXPIRES)}


async def test_subscription_item_has_a_numeric_ttl(
    dynamodb_settings: Settings, dynamodb_stores: DynamoDBStores
) -> None:
    subscription = Subscription(
        key=request_key("acme", "alice", "r"),
        connection_id=ConnectionId("c1"),
        created_at=T0,
        expires_at=EXPIRES,
    )
    await dynamodb_stores.subscriptions.add(subscription)

    item = await raw_item(
        dynamodb_stores,
        dynamodb_settings.subscriptions_table,
        {"RequestID": {"S": "acme#alice#r"}, "ConnectionID": {"S": "c1"}},
    )

    assert item["TTL"] == {"N": str(EXPIRES)}


async def test_moto_size_refusal_is_mapped_to_item_too_large(
    dynamodb_settings: Settings, dynamodb_stores: DynamoDBStores
) -> None:
    """DynamoDB's own refusal (not our pre-check) becomes `ItemTooLarge` too."""
    item = {"RequestID": {"S": "k"}, "Blob": {"S": "x" * (MAX_ITEM_BYTES + 10)}}

    with pytest.raises(ItemTooLarge), map_client_errors():
        await dynamodb_stores.client.put_item(TableName=dynamodb_settings.requests_table, Item=item)


async def test_a_missing_table_is_a_store_error_not_a_botocore_one(
    dynamodb_settings: Settings, dynamodb_session: Any
) -> None:
    settings = replace(dynamodb_settings, requests_table="no-such-table")

    async with open_stores(settings, session=dynamodb_session) as stores:
        with pytest.raises(StoreUnavailable, match="ResourceNotFoundException"):
            await stores.requests.get(request_key("a", "b", "c"))


async def test_stores_can_be_opened_and_closed_explicitly(dynamodb_settings: Settings) -> None:
    stores = await DynamoDBStores.open(dynamodb_settings)
    try:
        assert await stores.connections.get(ConnectionId("x")) is None
    finally:
        await stores.aclose()
    await stores.aclose()


# --- error translation -----------------------------------------------------------------


def client_error(code: str, message: str = "nope", status: int = 400) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "UpdateItem")


@pytest.mark.parametrize("code", sorted(ERROR_CODES))
def test_every_handled_aws_error_code_is_mapped(code: str) -> None:
    with pytest.raises(ERROR_CODES[code]) as raised, map_client_errors():
        raise client_error(code)

    assert isinstance(raised.value.__cause__, ClientError)


@pytest.mark.parametrize(
    "message",
    [
        "Item size has exceeded the maximum allowed size",
        "Item size to update has exceeded the maximum allowed size",
    ],
)
def test_validation_errors_about_item_size_are_item_too_large(message: str) -> None:
    with pytest.raises(ItemTooLarge), map_client_errors():
        raise client_error("ValidationException", message)


def test_other_validation_errors_are_store_errors_naming_the_code() -> None:
    with pytest.raises(StoreUnavailable, match="ValidationException"), map_client_errors():
        raise client_error("ValidationException", "Invalid UpdateExpression")


def test_unknown_error_codes_are_store_errors() -> None:
    with pytest.raises(StoreUnavailable, match="SomethingNew"), map_client_errors():
        raise client_error("SomethingNew", status=500)


@pytest.mark.parametrize(
    "error",
    [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
    ],
    ids=["connection", "read-timeout"],
)
def test_connection_errors_are_store_unavailable(error: Exception) -> None:
    with pytest.raises(StoreUnavailable, match=type(error).__name__), map_client_errors():
        raise error


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_an_unreachable_endpoint_is_store_unavailable(
    dynamodb_settings: Settings, closed_port: int, dynamodb_session: Any
) -> None:
    settings = replace(dynamodb_settings, dynamodb_endpoint_url=f"http://127.0.0.1:{closed_port}")
    config = client_config(max_attempts=1)

    async with open_stores(settings, session=dynamodb_session, config=config) as stores:
        with pytest.raises(StoreUnavailable, match="unreachable"):
            await stores.connections.get(ConnectionId("x"))


@contextlib.asynccontextmanager
async def scripted_dynamodb(
    responses: list[tuple[int, dict[str, Any]]],
) -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback HTTP server answering DynamoDB calls with `responses` in turn
    (the last one repeats); yields its URL and the targets it was called with."""
    calls: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        calls.append(request.headers.get("X-Amz-Target", ""))
        status, body = responses[min(len(calls), len(responses)) - 1]
        return web.json_response(body, status=status, content_type="application/x-amz-json-1.0")

    app = web.Application()
    app.router.add_post("/", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", calls
    finally:
        await runner.cleanup()


THROTTLED = (400, {"__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException"})
UNAVAILABLE = (503, {"__type": "com.amazonaws.dynamodb#ServiceUnavailable"})


async def test_throttling_is_retried_by_the_client_then_succeeds(
    dynamodb_settings: Settings, dynamodb_session: Any
) -> None:
    async with scripted_dynamodb([THROTTLED, (200, {})]) as (url, calls):
        settings = replace(dynamodb_settings, dynamodb_endpoint_url=url)
        config = client_config(max_attempts=2)
        async with open_stores(settings, session=dynamodb_session, config=config) as stores:
            assert await stores.connections.get(ConnectionId("x")) is None

    assert calls == ["DynamoDB_20120810.GetItem"] * 2


async def test_5xx_that_outlive_the_retries_are_store_unavailable(
    dynamodb_settings: Settings, dynamodb_session: Any
) -> None:
    async with scripted_dynamodb([UNAVAILABLE]) as (url, calls):
        settings = replace(dynamodb_settings, dynamodb_endpoint_url=url)
        config = client_config(max_attempts=2)
        async with open_stores(settings, session=dynamodb_session, config=config) as stores:
            with pytest.raises(StoreUnavailable, match="ServiceUnavailable"):
                await stores.connections.get(ConnectionId("x"))

    assert len(calls) == 2


# --- client settings -------------------------------------------------------------------


def test_client_config_retries_in_standard_mode_with_timeouts() -> None:
    config: Any = client_config(max_attempts=4, connect_timeout_s=2, read_timeout_s=7)

    assert config.retries == {"mode": "standard", "total_max_attempts": 4}
    assert (config.connect_timeout, config.read_timeout) == (2, 7)
    assert config.max_pool_connections == 50


def test_client_kwargs_use_region_and_endpoint_from_settings() -> None:
    settings = replace(Settings(), aws_region="eu-west-1", dynamodb_endpoint_url="http://moto:5000")

    kwargs = client_kwargs(settings)

    assert kwargs["region_name"] == "eu-west-1"
    assert kwargs["endpoint_url"] == "http://moto:5000"


def test_configured_credentials_are_never_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "real-looking")
    settings = replace(Settings(), dynamodb_endpoint_url="http://moto:5000")

    assert "aws_access_key_id" not in client_kwargs(settings)


def test_dummy_credentials_only_for_a_local_endpoint_without_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "absent"))

    local = client_kwargs(replace(Settings(), dynamodb_endpoint_url="http://moto:5000"))
    aws = client_kwargs(Settings())

    assert {k: local[k] for k in DUMMY_CREDENTIALS} == DUMMY_CREDENTIALS
    assert "endpoint_url" not in aws
    assert "aws_access_key_id" not in aws


# --- values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [0.1, 3.0, 1e100, -1e-30, 2**62, -7, 10**30, "ü", "", True, None, {}, [], {"a": [{}]}],
)
def test_values_round_trip_through_attribute_values(value: Any) -> None:
    back = from_attribute_value(to_attribute_value(value))

    assert back == value
    assert not isinstance(back, Decimal)


def test_floats_are_stored_as_their_shortest_decimal() -> None:
    assert to_attribute_value(0.1) == {"N": "0.1"}
    assert to_attribute_value({"x": 2.5}) == {"M": {"x": {"N": "2.5"}}}


def test_integral_numbers_come_back_as_int_and_others_as_float() -> None:
    assert from_attribute_value({"N": "42"}) == 42
    assert isinstance(from_attribute_value({"N": "42"}), int)
    assert isinstance(from_attribute_value({"N": "42.5"}), float)


def test_nan_cannot_be_stored() -> None:
    with pytest.raises(UnstorableValue, match="NaN"):
        to_attribute_value({"x": float("nan")})


def test_item_size_counts_names_and_utf8_values() -> None:
    item: dict[str, dict[str, Any]] = {
        "Name": {"S": "ü" * 10},
        "Flag": {"BOOL": True},
        "Nothing": {"NULL": True},
    }

    assert item_size(item) == (4 + 20) + (4 + 1) + (7 + 1)


def test_times_are_fixed_width_utc_strings_that_sort_as_times() -> None:
    early = datetime(2026, 1, 1, 0, 0, 0, 5, tzinfo=UTC)
    late = datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)

    assert format_time(early) == "2026-01-01T00:00:00.000005Z"
    assert format_time(early) < format_time(late)
    assert parse_time(format_time(early)) == early


async def test_concurrent_claims_on_the_local_moto_server_have_one_winner_each(
    dynamodb_stores: DynamoDBStores,
) -> None:
    """The shared server applies calls one at a time, so conditional writes are atomic
    (moto's stock threaded server lets two concurrent claims both win)."""
    keys = []
    for i in range(20):
        request = replace(a_request(), key=request_key("acme", "alice", f"r{i}"))
        await dynamodb_stores.requests.enqueue(request)
        keys.append(request.key)

    results = await asyncio.gather(
        *(
            dynamodb_stores.requests.apply(key, transitions.claim(now=T0, lease_until=T0))
            for key in keys
            for _ in range(4)
        )
    )

    winners = [result for result in results if result is not None]
    assert sorted(w.key for w in winners) == sorted(keys)
    assert {w.attempt for w in winners} == {1}


async def test_the_user_index_lists_a_users_requests_oldest_first(
    dynamodb_settings: Settings, dynamodb_stores: DynamoDBStores
) -> None:
    """No port query reads `UserIndex` (DESIGN §6 keeps it for operators); the table
    answers it as the deployment guide promises."""

    def owned(rid: str, user: str, created: datetime) -> AsyncRequest:
        return replace(
            a_request(),
            key=request_key("acme", user, rid),
            request_id=RequestId(rid),
            user_id=UserId(user),
            created_at=created,
            updated_at=created,
        )

    second = owned("2", "alice", T0 + timedelta(seconds=2))
    first = owned("1", "alice", T0 + timedelta(seconds=1))
    for request in (second, first, owned("3", "bob", T0)):
        await dynamodb_stores.requests.enqueue(request)

    async def by_user(user: str) -> list[str]:
        response = await dynamodb_stores.client.query(
            TableName=dynamodb_settings.requests_table,
            IndexName="UserIndex",
            KeyConditionExpression="UserID = :u",
            ExpressionAttributeValues={":u": {"S": user}},
        )
        return [item["RequestID"]["S"] for item in response["Items"]]

    assert await by_user("alice") == [first.key, second.key]
    assert await by_user("nobody") == []


def test_every_request_field_has_an_attribute_name() -> None:
    assert set(REQUEST_ATTRIBUTES) == {f.name for f in fields(AsyncRequest)}
    assert len(set(REQUEST_ATTRIBUTES.values())) == len(REQUEST_ATTRIBUTES)


def test_a_transition_compiles_into_one_conditional_update() -> None:
    compiled = compile_transition(
        transitions.requeue_expired(attempt=2, now=T0 + timedelta(seconds=5))
    )

    assert compiled.condition == (
        "#status = :from0 AND #attempt = :attempt AND #lease_until < :lease_expired_before"
    )
    assert compiled.update == (
        "SET #status = :set_status, #kicks = :set_kicks, #updated_at = :set_updated_at"
        " REMOVE #lease_until"
    )
    assert compiled.names == {
        "#status": "Status",
        "#attempt": "Attempt",
        "#lease_until": "LeaseUntil",
        "#kicks": "Kicks",
        "#updated_at": "UpdatedAt",
    }
    assert compiled.values[":from0"] == {"S": "PROCESSING"}
    assert compiled.values[":lease_expired_before"] == {"S": "2026-03-01T12:00:05.000000Z"}


def test_increments_start_from_zero_on_an_item_without_the_counter() -> None:
    compiled = compile_transition(transitions.claim(now=T0, lease_until=T0))

    assert "#attempt = if_not_exists(#attempt, :zero) + :one" in compiled.update
    assert (compiled.values[":zero"], compiled.values[":one"]) == ({"N": "0"}, {"N": "1"})


async def test_a_request_id_holding_hashes_is_read_back_from_its_key(
    dynamodb_settings: Settings, dynamodb_stores: DynamoDBStores
) -> None:
    """An item without `ClientRequestID` (written by an older version) still yields
    the client's id, `#` and all."""
    rid = "a#b#ü"
    request = replace(a_request(), key=request_key("acme", "alice", rid), request_id=RequestId(rid))
    await dynamodb_stores.requests.enqueue(request)
    await dynamodb_stores.client.update_item(
        TableName=dynamodb_settings.requests_table,
        Key={"RequestID": {"S": request.key}},
        UpdateExpression="REMOVE ClientRequestID",
    )

    stored = await dynamodb_stores.requests.get(request.key)

    assert stored is not None
    assert stored.request_id == rid


async def test_table_admin_refusals_are_typed_store_errors(dynamodb_settings: Settings) -> None:
    """The emulator and the `streamer tables` command get the core's error, never botocore's."""
    denied = (400, {"__type": "com.amazonaws.dynamodb.v20120810#AccessDeniedException"})
    async with scripted_dynamodb([denied]) as (url, calls):
        settings = replace(dynamodb_settings, dynamodb_endpoint_url=url)
        for admin in (create_tables, delete_tables, list_tables):
            with pytest.raises(StoreUnavailable, match="AccessDeniedException"):
                await admin(settings)
    assert calls[0].endswith("CreateTable")
