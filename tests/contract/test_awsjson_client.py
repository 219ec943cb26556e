"""`AwsJsonClient` gives what botocore gives: the same values, errors and retries, over
its own pool of keep-alive connections."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import dataclasses
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ParamValidationError,
    ReadTimeoutError,
)
from botocore.parsers import create_parser
from botocore.serialize import create_serializer

from adapters.aws import client_config, client_kwargs, get_session
from adapters.awsjson import AwsJsonClient, AwsJsonSession, under_way_context
from adapters.awsjson.shapes import compile_input, compile_output
from adapters.awsjson.signing import SigV4Signer, StaticCredentials
from adapters.dynamodb import create_tables
from adapters.dynamodb.errors import ConditionFailed, map_client_errors
from adapters.moto_server import LocalMotoServer
from streamer.errors import StoreUnavailable
from streamer.settings import Settings

ITEM: dict[str, Any] = {
    "RequestID": {"S": "tenant#user#r1"},
    "Blob": {"B": b"\x00\x01\xffbinary"},
    "Blobs": {"BS": [b"x", b"\x00y"]},
    "Number": {"N": "1.50"},
    "Numbers": {"NS": ["1", "-2.5e3"]},
    "Strings": {"SS": ["a", "ü"]},
    "Flag": {"BOOL": False},
    "Nothing": {"NULL": True},
    "Nested": {
        "M": {
            "list": {"L": [{"NULL": True}, {"BOOL": True}, {"M": {}}, {"L": []}, {"B": b"\x7f"}]},
            "deeper": {"M": {"s": {"S": ""}, "n": {"N": "-0.001"}}},
        }
    },
}
"""An item with every kind of attribute value, binary ones nested."""


def _wire(value: Any) -> Any:
    """`value` as it travels: bytes base64-encoded."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {key: _wire(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_wire(item) for item in value]
    return value


# --- the walks give botocore's values ------------------------------------------------------

REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("dynamodb", "PutItem", {"TableName": "t", "Item": ITEM, "ConditionExpression": "a = :a"}),
    ("dynamodb", "PutItem", {"TableName": "t", "Item": {"k": {"B": "text blob"}}}),
    (
        "dynamodb",
        "PutItem",
        {"TableName": "t", "Item": {"k": {"S": "v"}, "m": {"M": {"b": {"L": [{"B": "x"}]}}}}},
    ),
    ("dynamodb", "GetItem", {"TableName": "t", "Key": {"k": {"S": "v"}}, "ConsistentRead": True}),
    (
        "dynamodb",
        "UpdateItem",
        {
            "TableName": "t",
            "Key": {"k": {"B": b"\x00"}},
            "UpdateExpression": "SET #a = :a",
            "ExpressionAttributeNames": {"#a": "a"},
            "ExpressionAttributeValues": {":a": {"M": {"x": {"BS": [b"1"]}}}},
            "ReturnValues": "ALL_NEW",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        },
    ),
    (
        "dynamodb",
        "Query",
        {
            "TableName": "t",
            "KeyConditionExpression": "k = :k",
            "ExpressionAttributeValues": {":k": {"S": "v"}},
            "ExclusiveStartKey": {"k": {"S": "v"}, "s": {"B": b"\x01"}},
            "Limit": 10,
        },
    ),
    ("dynamodb", "Scan", {"TableName": "t", "Segment": 0, "TotalSegments": 2}),
    (
        "dynamodb",
        "BatchWriteItem",
        {
            "RequestItems": {
                "t": [
                    {"PutRequest": {"Item": ITEM}},
                    {"DeleteRequest": {"Key": {"k": {"B": b"\xff"}}}},
                ]
            }
        },
    ),
    ("dynamodb", "DescribeTable", {"TableName": "t"}),
    ("dynamodbstreams", "GetRecords", {"ShardIterator": "it", "Limit": 1000}),
    (
        "dynamodbstreams",
        "GetShardIterator",
        {
            "StreamArn": "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2026-12-01T00",
            "ShardId": "shardId-00000001764590400000-abcdef12",
            "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
            "SequenceNumber": "000000000000000000001",
        },
    ),
]

RESPONSES: list[tuple[str, str, dict[str, Any]]] = [
    ("dynamodb", "GetItem", {"Item": _wire(ITEM)}),
    ("dynamodb", "GetItem", {}),
    (
        "dynamodb",
        "GetItem",
        {
            "Item": {
                "nulled": {"S": "a", "NULL": None},
                "unknown": {"S": "b", "Later": 1},
                "nested": {"M": {"m": {"B": "AA==", "S": None}, "l": {"L": [{"X": 1, "N": "1"}]}}},
            },
            "ConsumedCapacity": {"TableName": "t", "CapacityUnits": 1.0, "Unmodelled": None},
        },
    ),
    ("dynamodb", "UpdateItem", {"Attributes": _wire(ITEM), "Unmodelled": {"x": 1}}),
    (
        "dynamodb",
        "Query",
        {
            "Items": [_wire(ITEM), {"k": {"S": "v"}}],
            "Count": 2,
            "ScannedCount": 2,
            "LastEvaluatedKey": {"k": {"B": "AA=="}},
            "ConsumedCapacity": None,
        },
    ),
    (
        "dynamodb",
        "BatchWriteItem",
        {"UnprocessedItems": {"t": [{"PutRequest": {"Item": _wire(ITEM)}}]}},
    ),
    (
        "dynamodb",
        "DescribeTable",
        {
            "Table": {
                "TableName": "t",
                "CreationDateTime": 1764590400.123,
                "TableStatus": "ACTIVE",
                "KeySchema": [{"AttributeName": "k", "KeyType": "HASH"}],
                "LatestStreamArn": "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x",
                "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
            }
        },
    ),
    (
        "dynamodbstreams",
        "GetRecords",
        {
            "Records": [
                {
                    "eventID": "1",
                    "eventName": "MODIFY",
                    "eventSource": "aws:dynamodb",
                    "awsRegion": "us-east-1",
                    "dynamodb": {
                        "ApproximateCreationDateTime": 1764590400.5,
                        "Keys": {"k": {"S": "v"}},
                        "NewImage": _wire(ITEM),
                        "OldImage": {"k": {"S": "v"}, "b": {"BS": ["AA==", "/w=="]}},
                        "SequenceNumber": "000001",
                        "SizeBytes": 12,
                        "StreamViewType": "NEW_AND_OLD_IMAGES",
                    },
                }
            ],
            "NextShardIterator": "next",
        },
    ),
    (
        "dynamodbstreams",
        "DescribeStream",
        {
            "StreamDescription": {
                "StreamArn": "arn",
                "CreationRequestDateTime": 1764590400,
                "Shards": [
                    {
                        "ShardId": "s",
                        "SequenceNumberRange": {"StartingSequenceNumber": "1"},
                        "ParentShardId": None,
                    }
                ],
            }
        },
    ),
]


def _operation(service: str, name: str) -> Any:
    return botocore.session.get_session().get_service_model(service).operation_model(name)


@pytest.mark.parametrize(("service", "name", "params"), REQUESTS)
def test_a_request_body_is_botocores(service: str, name: str, params: dict[str, Any]) -> None:
    operation = _operation(service, name)
    theirs = create_serializer("json").serialize_to_request(params, operation)

    assert compile_input(operation.input_shape)(params) == json.loads(theirs["body"])


@pytest.mark.parametrize(("service", "name", "body"), RESPONSES)
def test_a_parsed_answer_is_botocores(service: str, name: str, body: dict[str, Any]) -> None:
    operation = _operation(service, name)
    raw = json.dumps(body).encode()
    theirs = create_parser("json").parse(
        {"status_code": 200, "headers": {}, "body": raw}, operation.output_shape
    )
    theirs.pop("ResponseMetadata")

    assert compile_output(operation.output_shape)(json.loads(raw)) == theirs


@pytest.mark.parametrize(("service", "name", "params"), REQUESTS)
def test_the_callers_parameters_are_never_changed(
    service: str, name: str, params: dict[str, Any]
) -> None:
    before = copy.deepcopy(params)

    compile_input(_operation(service, name).input_shape)(params)

    assert params == before


def test_an_unknown_parameter_is_refused_before_sending() -> None:
    walk = compile_input(_operation("dynamodb", "GetItem").input_shape)

    with pytest.raises(ParamValidationError, match="Consistent"):
        walk({"TableName": "t", "Key": {}, "Consistent": True})


def test_a_missing_required_parameter_is_refused_before_sending() -> None:
    walk = compile_input(_operation("dynamodb", "GetItem").input_shape)

    with pytest.raises(ParamValidationError, match="Key"):
        walk({"TableName": "t"})


def test_the_signature_is_botocores(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto reads region and account from this header, as from botocore's."""
    at = datetime(2026, 12, 1, 23, 59, 58, tzinfo=UTC)
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: at.replace(tzinfo=None))
    body = b'{"TableName":"t"}'
    target = "DynamoDB_20120810.DescribeTable"
    content_type = "application/x-amz-json-1.0"
    request = AWSRequest(
        method="POST",
        url="http://127.0.0.1:5000/",
        data=body,
        headers={"Content-Type": content_type, "X-Amz-Target": target},
    )
    SigV4Auth(Credentials("AKID", "secret", "token"), "dynamodb", "eu-west-1").add_auth(request)
    signer = SigV4Signer(
        StaticCredentials("AKID", "secret", "token"),
        region="eu-west-1",
        service="dynamodb",
        host="127.0.0.1:5000",
        path="/",
    )

    block = signer.headers(target=target, content_type=content_type, body=body, now=at.timestamp())
    ours = dict(line.split(": ", 1) for line in block.strip().split("\r\n"))

    assert ours["Authorization"] == request.headers["Authorization"]
    assert ours["X-Amz-Date"] == request.headers["X-Amz-Date"]
    assert ours["X-Amz-Security-Token"] == "token"


# --- against moto: the same answers as aioboto3's --------------------------------------------


@pytest.fixture
def settings(dynamodb_settings: Settings) -> Settings:
    """Settings naming fresh tables on the shared moto server, created by aioboto3."""
    return dynamodb_settings


@pytest.fixture
async def clients(settings: Settings) -> AsyncIterator[tuple[AwsJsonClient, Any]]:
    """An `AwsJsonClient` and an aioboto3 client of the same endpoint."""
    async with (
        AwsJsonSession().client("dynamodb", **client_kwargs(settings)) as lean,
        get_session().client("dynamodb", **client_kwargs(settings)) as botocore_client,
    ):
        yield lean, botocore_client


def _comparable(response: dict[str, Any]) -> dict[str, Any]:
    """A response without what differs between two calls (request id, date, checksum)."""
    kept = dict(response)
    metadata = dict(kept.pop("ResponseMetadata"))
    headers = metadata.pop("HTTPHeaders")
    metadata.pop("RequestId", None)
    kept["ResponseMetadata"] = metadata
    kept["header names"] = sorted(headers)
    return kept


async def test_every_operation_the_stores_use_answers_as_aioboto3s(
    clients: tuple[AwsJsonClient, Any], settings: Settings
) -> None:
    lean, theirs = clients
    table = settings.requests_table
    key = {"RequestID": ITEM["RequestID"]}
    calls: list[tuple[str, dict[str, Any]]] = [
        ("put_item", {"TableName": table, "Item": ITEM}),
        ("get_item", {"TableName": table, "Key": key, "ConsistentRead": True}),
        (
            "update_item",
            {
                "TableName": table,
                "Key": key,
                "UpdateExpression": "SET #b = :b",
                "ExpressionAttributeNames": {"#b": "Extra"},
                "ExpressionAttributeValues": {":b": {"B": b"\x00more"}},
                "ReturnValues": "ALL_NEW",
            },
        ),
        (
            "query",
            {
                "TableName": table,
                "KeyConditionExpression": "RequestID = :k",
                "ExpressionAttributeValues": {":k": ITEM["RequestID"]},
            },
        ),
        ("scan", {"TableName": table}),
        ("describe_table", {"TableName": table}),
        ("delete_item", {"TableName": table, "Key": key, "ReturnValues": "ALL_OLD"}),
        (
            "batch_write_item",
            {"RequestItems": {table: [{"PutRequest": {"Item": ITEM}}]}},
        ),
    ]
    for method, params in calls:
        ours = await getattr(lean, method)(**params)
        if method == "delete_item":
            await theirs.put_item(TableName=table, Item=ours["Attributes"])  # back again
        expected = await getattr(theirs, method)(**params)

        assert _comparable(ours) == _comparable(expected), method


async def test_stream_records_read_as_aioboto3_reads_them(settings: Settings) -> None:
    """Binary images, `ApproximateCreationDateTime` as a datetime: the one record parser
    sees the same values from either client (moto's stream images carry a binary value
    base64-encoded twice; both clients read the same bytes)."""
    async with (
        AwsJsonSession().client("dynamodb", **client_kwargs(settings)) as dynamodb,
        AwsJsonSession().client("dynamodbstreams", **client_kwargs(settings)) as lean,
        get_session().client("dynamodbstreams", **client_kwargs(settings)) as theirs,
    ):
        await dynamodb.put_item(TableName=settings.requests_table, Item=ITEM)
        described = await dynamodb.describe_table(TableName=settings.requests_table)
        arn = described["Table"]["LatestStreamArn"]
        stream = await lean.describe_stream(StreamArn=arn)
        shard_id = stream["StreamDescription"]["Shards"][0]["ShardId"]
        position = {"StreamArn": arn, "ShardId": shard_id, "ShardIteratorType": "TRIM_HORIZON"}
        ours = await lean.get_records(
            ShardIterator=(await lean.get_shard_iterator(**position))["ShardIterator"]
        )
        expected = await theirs.get_records(
            ShardIterator=(await theirs.get_shard_iterator(**position))["ShardIterator"]
        )

    assert ours["Records"] == expected["Records"]
    record = ours["Records"][0]["dynamodb"]
    assert record["Keys"] == {"RequestID": ITEM["RequestID"]}
    assert isinstance(record["NewImage"]["Blob"]["B"], bytes)
    assert isinstance(record["ApproximateCreationDateTime"], datetime)


async def test_a_failed_condition_raises_botocores_error_with_the_stored_item(
    clients: tuple[AwsJsonClient, Any], settings: Settings
) -> None:
    lean, theirs = clients
    stored = {"RequestID": {"S": "k"}, "Status": {"S": "DONE"}}
    await lean.put_item(TableName=settings.requests_table, Item=stored)
    refused = {
        "TableName": settings.requests_table,
        "Item": {"RequestID": {"S": "k"}},
        "ConditionExpression": "attribute_not_exists(RequestID)",
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }

    with pytest.raises(lean.exceptions.ConditionalCheckFailedException) as ours:
        await lean.put_item(**refused)
    with pytest.raises(theirs.exceptions.ConditionalCheckFailedException) as expected:
        await theirs.put_item(**refused)

    assert isinstance(ours.value, ClientError)
    assert ours.value.response["Item"] == stored
    assert ours.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert _comparable(ours.value.response) == _comparable(expected.value.response)
    assert str(ours.value) == str(expected.value)
    with pytest.raises(ConditionFailed), map_client_errors():
        await lean.put_item(**refused)


async def test_a_missing_table_is_the_modelled_error(clients: tuple[AwsJsonClient, Any]) -> None:
    lean, theirs = clients
    call = {"TableName": "no-such-table", "Key": {"RequestID": {"S": "k"}}}

    with pytest.raises(lean.exceptions.ResourceNotFoundException) as ours:
        await lean.get_item(**call)
    with pytest.raises(theirs.exceptions.ResourceNotFoundException) as expected:
        await theirs.get_item(**call)

    assert _comparable(ours.value.response) == _comparable(expected.value.response)
    assert ours.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(StoreUnavailable, match="ResourceNotFoundException"), map_client_errors():
        await lean.get_item(**call)


async def test_the_region_chooses_the_tables(settings: Settings) -> None:
    """The credential scope carries the region: a table made in us-east-1 is not in
    eu-west-1 (moto keeps a backend per region, and account, as DynamoDB does)."""
    elsewhere = dataclasses.replace(settings, aws_region="eu-west-1")
    async with AwsJsonSession().client("dynamodb", **client_kwargs(elsewhere)) as client:
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            await client.describe_table(TableName=settings.requests_table)
        assert client.meta.region_name == "eu-west-1"


async def test_only_operations_are_offered(clients: tuple[AwsJsonClient, Any]) -> None:
    lean, _ = clients

    with pytest.raises(AttributeError):
        lean.get_waiter  # noqa: B018
    assert lean.meta.method_to_api_mapping["put_item"] == "PutItem"


# --- connections ---------------------------------------------------------------------------


async def test_sequential_calls_reuse_one_connection(
    clients: tuple[AwsJsonClient, Any], settings: Settings
) -> None:
    lean, _ = clients
    for _ in range(20):
        await lean.get_item(TableName=settings.requests_table, Key={"RequestID": {"S": "k"}})

    assert lean.pool.connections_made == 1
    assert lean.pool.idle_connections == 1


async def test_concurrent_calls_open_at_most_the_pool_size(settings: Settings) -> None:
    kwargs = client_kwargs(settings, config=client_config(max_pool_connections=3))
    async with AwsJsonSession().client("dynamodb", **kwargs) as lean:
        answers = await asyncio.gather(
            *(
                lean.get_item(TableName=settings.requests_table, Key={"RequestID": {"S": "k"}})
                for _ in range(12)
            )
        )

        assert len(answers) == 12
        assert lean.pool.connections_made <= 3


@pytest.fixture
def free_port() -> int:
    """A loopback port nothing listens on (yet)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_refused_connection_is_an_endpoint_connection_error(free_port: int) -> None:
    url = f"http://127.0.0.1:{free_port}"
    settings = dataclasses.replace(Settings(), dynamodb_endpoint_url=url)
    kwargs = client_kwargs(settings, config=client_config(max_attempts=1))
    async with AwsJsonSession().client("dynamodb", **kwargs) as lean:
        with pytest.raises(EndpointConnectionError, match=str(free_port)):
            await lean.describe_table(TableName="t")


async def test_calls_ride_out_a_server_restart_on_the_same_port(
    free_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pooled connection the stopped server closed is replaced, and a call made
    while the server is down is retried until it is back."""
    # start and stop block (and run a loop of their own): on a thread, not this loop.
    server = LocalMotoServer(port=free_port)
    await asyncio.to_thread(server.start)
    settings = dataclasses.replace(
        Settings(), dynamodb_endpoint_url=server.endpoint, aws_region="us-east-1"
    )
    await create_tables(settings)
    try:
        async with AwsJsonSession().client("dynamodb", **client_kwargs(settings)) as lean:
            await lean.describe_table(TableName=settings.requests_table)
            await asyncio.to_thread(server.stop)
            refused = asyncio.Event()
            connect = lean.pool._connect

            async def watched() -> Any:
                try:
                    return await connect()
                except EndpointConnectionError:
                    refused.set()
                    raise

            monkeypatch.setattr(lean.pool, "_connect", watched)
            call = asyncio.create_task(lean.describe_table(TableName=settings.requests_table))
            await asyncio.wait_for(refused.wait(), 10)
            server = LocalMotoServer(port=free_port)
            await asyncio.to_thread(server.start)
            answer = await asyncio.wait_for(call, 30)

            assert answer["Table"]["TableName"] == settings.requests_table
            assert answer["ResponseMetadata"]["RetryAttempts"] >= 1
            assert lean.pool.connections_made == 2
    finally:
        await asyncio.to_thread(server.stop)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(handle: Handler) -> AsyncIterator[str]:
    """A loopback TCP server running `handle` per connection; yields its URL."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return await reader.readexactly(length)


def _answer(body: bytes, *extra: bytes) -> bytes:
    head = [b"HTTP/1.1 200 OK", b"Content-Type: application/x-amz-json-1.0", *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def _lean_client(url: str, **config: Any) -> contextlib.AbstractAsyncContextManager[Any]:
    settings = dataclasses.replace(Settings(), dynamodb_endpoint_url=url)
    return AwsJsonSession().client(
        "dynamodb", **client_kwargs(settings, config=client_config(**config))
    )


async def test_a_server_closing_each_kept_alive_connection_is_followed() -> None:
    """A server that ends every connection after one answer (no `Connection: close`):
    each call finds its pooled connection gone and opens another, no retry spent."""
    body = b'{"TableNames":[]}'

    async def one_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_answer(body, b"Content-Length: %d" % len(body)))
        await writer.drain()
        writer.close()

    async with raw_server(one_answer) as url, _lean_client(url) as lean:
        for _ in range(5):
            answer = await lean.list_tables()
            assert answer["TableNames"] == []
            assert answer["ResponseMetadata"]["RetryAttempts"] == 0

        assert lean.pool.connections_made == 5


async def test_connection_close_and_chunked_answers_are_read_whole() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        chunks = b'7\r\n{"Table\r\n9\r\nNames":[]\r\n1\r\n}\r\n0\r\n\r\n'
        writer.write(_answer(chunks, b"Transfer-Encoding: chunked", b"Connection: close"))
        await writer.drain()
        writer.close()

    async with raw_server(chunked) as url, _lean_client(url) as lean:
        answer = await lean.list_tables()

        assert answer["TableNames"] == []
        assert lean.pool.idle_connections == 0


async def test_a_silent_server_is_a_read_timeout() -> None:
    hold = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await hold.wait()
        writer.close()

    async with raw_server(silent) as url:
        async with _lean_client(url, max_attempts=1, read_timeout_s=0.2) as lean:
            with pytest.raises(ReadTimeoutError):
                await lean.list_tables()
        hold.set()


async def test_an_answer_cut_short_is_a_closed_connection_after_the_retries() -> None:
    tries = 0

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal tries
        await _read_request(reader)
        tries += 1
        writer.write(_answer(b'{"Tab', b"Content-Length: 50"))
        await writer.drain()
        writer.close()

    async with raw_server(cut) as url, _lean_client(url, max_attempts=2) as lean:
        with pytest.raises(ConnectionClosedError):
            await lean.list_tables()

    assert tries == 2


async def test_a_full_pool_serves_work_under_way_first_and_a_cancelled_wait_frees_nothing() -> None:
    """One connection, held by a first call: the calls waiting for it are served in
    turn, those made under way (`UNDER_WAY`: the emulator's processor) before the others;
    a waiter cancelled takes no turn with it."""
    served: list[str] = []
    first_in = asyncio.Event()
    release_first = asyncio.Event()

    async def in_order(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError):
            while True:
                name = json.loads(await _read_request(reader))["ExclusiveStartTableName"]
                served.append(name)
                if name == "first":
                    first_in.set()
                    await release_first.wait()
                body = b'{"TableNames":[]}'
                writer.write(_answer(body, b"Content-Length: %d" % len(body)))
                await writer.drain()

    async with raw_server(in_order) as url, _lean_client(url, max_pool_connections=1) as lean:

        def call(name: str) -> asyncio.Task[Any]:
            return asyncio.create_task(lean.list_tables(ExclusiveStartTableName=name))

        def call_under_way(name: str) -> asyncio.Task[Any]:
            return asyncio.create_task(
                lean.list_tables(ExclusiveStartTableName=name), context=under_way_context()
            )

        first = call("first")
        async with asyncio.timeout(5):
            await first_in.wait()
        tasks = [call("new-1"), call_under_way("claim"), call("new-2"), call_under_way("gone")]
        await asyncio.sleep(0)  # one turn of the loop: each call runs up to its wait
        assert lean.pool.waiting == 4
        tasks[3].cancel()
        await asyncio.sleep(0)
        assert lean.pool.waiting == 3
        release_first.set()
        async with asyncio.timeout(5):
            await asyncio.gather(first, *tasks[:3])
            await lean.list_tables(ExclusiveStartTableName="after")

    assert served == ["first", "claim", "new-1", "new-2", "after"]
    assert tasks[3].cancelled()
    assert lean.pool.waiting == 0


async def test_a_turn_given_to_a_waiter_cancelled_before_it_runs_is_handed_on() -> None:
    from adapters.awsjson.http import _Slots

    slots = _Slots(1)
    await slots.acquire()
    waiter = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    assert slots.waiting == 1
    slots.release()  # the turn goes to the waiter...
    waiter.cancel()  # ...cancelled before it runs
    await asyncio.gather(waiter, return_exceptions=True)
    assert waiter.cancelled()
    async with asyncio.timeout(5):
        await slots.acquire()  # the turn was handed on, not lost


async def test_new_work_gets_a_turn_after_every_streak_of_work_under_way() -> None:
    from adapters.awsjson.http import _UNDER_WAY_STREAK, _Slots

    slots = _Slots(1)
    await slots.acquire()
    order: list[str] = []

    async def wait_turn(name: str) -> None:
        await slots.acquire()
        order.append(name)
        slots.release()

    def waiter(name: str, *, under_way: bool) -> asyncio.Task[None]:
        return asyncio.create_task(wait_turn(name), context=under_way_context(under_way))

    streak = _UNDER_WAY_STREAK
    tasks = [waiter(f"new-{i}", under_way=False) for i in range(2)]
    tasks += [waiter(f"claim-{i}", under_way=True) for i in range(streak + 2)]
    await asyncio.sleep(0)
    slots.release()
    async with asyncio.timeout(5):
        await asyncio.gather(*tasks)

    claims = [f"claim-{i}" for i in range(streak + 2)]
    assert order == [*claims[:streak], "new-0", *claims[streak:], "new-1"]
