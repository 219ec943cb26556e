"""`adapters.moto_http`: moto's answers without Flask, over keep-alive HTTP/1.1."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.test import Client

from adapters.moto_http import MotoProtocol
from adapters.moto_server import LocalMotoServer

AUTH = (
    "AWS4-HMAC-SHA256 Credential=testing/20261201/us-east-1/{service}/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=0"
)


@pytest.fixture(scope="module")
def front() -> Iterator[LocalMotoServer]:
    server = LocalMotoServer()
    server.start()
    yield server
    server.stop()


def _headers(target: str) -> dict[str, str]:
    return {
        "X-Amz-Target": target,
        "Content-Type": "application/x-amz-json-1.0",
        "Authorization": AUTH.format(service="dynamodb"),
        "Host": "localhost",
    }


def _calls(table: str) -> list[tuple[str, dict[str, Any]]]:
    """A run of calls: item writes and reads, conditions that fail, and refusals."""
    key = {"pk": {"S": "a"}}
    return [
        (
            "CreateTable",
            {
                "TableName": table,
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "BillingMode": "PAY_PER_REQUEST",
            },
        ),
        ("PutItem", {"TableName": table, "Item": {**key, "n": {"N": "1"}, "b": {"B": "AAE="}}}),
        ("GetItem", {"TableName": table, "Key": key}),
        (
            "UpdateItem",
            {
                "TableName": table,
                "Key": key,
                "UpdateExpression": "ADD n :one SET s = :s",
                "ExpressionAttributeValues": {":one": {"N": "1"}, ":s": {"SS": ["x", "y"]}},
                "ReturnValues": "ALL_NEW",
            },
        ),
        (
            "PutItem",
            {
                "TableName": table,
                "Item": key,
                "ConditionExpression": "attribute_not_exists(pk)",
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            },
        ),
        (
            "Query",
            {
                "TableName": table,
                "KeyConditionExpression": "pk = :a",
                "ExpressionAttributeValues": {":a": {"S": "a"}},
            },
        ),
        ("GetItem", {"TableName": "no-such-table", "Key": key}),
        ("PutItem", {"TableName": table, "Item": {"pk": {"S": ""}}}),
        ("UpdateItem", {"TableName": table, "Key": key, "UpdateExpression": "SET = :x"}),
        ("DeleteItem", {"TableName": table, "Key": key, "ReturnValues": "ALL_OLD"}),
        ("DeleteTable", {"TableName": table}),
    ]


def _normal(body: bytes, table: str) -> Any:
    text = body.decode().replace(table, "TABLE")
    parsed = json.loads(text)
    if isinstance(parsed, dict):
        parsed.pop("TableDescription", None)  # creation times, ARNs
    return parsed


def test_every_answer_is_the_one_moto_s_flask_app_gives(front: LocalMotoServer) -> None:
    flask = Client(DomainDispatcherApplication(create_backend_app))
    host, port = front.get_host_and_port()
    connection = http.client.HTTPConnection(host, port, timeout=10)
    mine_table, theirs_table = f"front-{uuid.uuid4().hex[:8]}", f"flask-{uuid.uuid4().hex[:8]}"
    statuses: list[int] = []
    for (operation, mine), (_, theirs) in zip(
        _calls(mine_table), _calls(theirs_table), strict=True
    ):
        target = f"DynamoDB_20120810.{operation}"
        connection.request("POST", "/", body=json.dumps(mine), headers=_headers(target))
        answer = connection.getresponse()
        body = answer.read()
        expected = flask.post("/", data=json.dumps(theirs), headers=_headers(target))

        assert answer.status == expected.status_code, operation
        assert _normal(body, mine_table) == _normal(expected.data, theirs_table), operation
        # botocore checks the CRC of DynamoDB answers.
        assert answer.getheader("x-amz-crc32") is not None
        assert answer.getheader("x-amzn-requestid") is not None
        statuses.append(answer.status)
    connection.close()
    assert statuses.count(200) >= 7
    assert statuses.count(400) >= 4


def test_what_is_not_dynamodb_goes_through_moto_s_app(front: LocalMotoServer) -> None:
    connection = http.client.HTTPConnection(*front.get_host_and_port(), timeout=10)
    connection.request("GET", "/moto-api/data.json")
    answer = connection.getresponse()
    assert answer.status == 200
    assert isinstance(json.loads(answer.read()), dict)
    # The same keep-alive connection then serves a DynamoDB call.
    connection.request("POST", "/", body="{}", headers=_headers("DynamoDB_20120810.ListTables"))
    listed = connection.getresponse()
    assert listed.status == 200
    assert "TableNames" in json.loads(listed.read())
    connection.close()


def _raw(front: LocalMotoServer, data: bytes) -> bytes:
    """Send `data` on a fresh socket; everything the server sends until it closes."""
    with socket.create_connection(front.get_host_and_port(), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def _request(target: str, body: bytes, *, close: bool = False) -> bytes:
    head = f"POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Target: {target}\r\n"
    head += f"Content-Length: {len(body)}\r\n"
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


def test_pipelined_requests_are_answered_in_order_then_close_is_honoured(
    front: LocalMotoServer,
) -> None:
    list_tables = _request("DynamoDB_20120810.ListTables", b"{}")
    bad = _request("DynamoDB_20120810.GetItem", b'{"TableName": "missing", "Key": {}}')
    last = _request("DynamoDB_20120810.ListTables", b"{}", close=True)

    received = _raw(front, list_tables + bad + last + list_tables)

    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", received)
    assert statuses == [b"200", b"400", b"200"]  # nothing after the close
    assert received.count(b"Connection: close") == 1


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"not http at all\r\n\r\n", b"400"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"411"),
        (b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", b"413"),
        (b"POST / HTTP/1.1\r\nX: " + b"y" * 70_000, b"431"),
    ],
    ids=["garbage", "chunked", "negative-length", "huge-head"],
)
def test_a_request_it_cannot_read_is_refused_and_closed(
    front: LocalMotoServer, data: bytes, status: bytes
) -> None:
    received = _raw(front, data)
    assert received.split(b"\r\n", 1)[0].split()[1] == status
    assert b"Connection: close" in received


def test_moto_failing_is_a_500_that_quotes_nothing(
    front: LocalMotoServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from moto.dynamodb.responses import DynamoHandler

    secret = "-".join(("secret", "item", "value"))  # the traceback shows source lines

    def broken(self: Any) -> Any:
        raise RuntimeError(secret)

    monkeypatch.setattr(DynamoHandler, "list_tables", broken)
    received = _raw(front, _request("DynamoDB_20120810.ListTables", b"{}", close=True))

    head, _, body = received.partition(b"\r\n\r\n")
    assert head.split()[1] == b"500"
    assert json.loads(body)["__type"].endswith("#InternalFailure")
    assert b"secret" not in received
    assert "RuntimeError" in caplog.text
    assert secret not in caplog.text


class _Transport(asyncio.Transport):
    """Collects what a protocol writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


def test_moto_s_app_failing_is_a_500_too(caplog: pytest.LogCaptureFixture) -> None:
    def broken(environ: Any, start_response: Any) -> Any:
        raise RuntimeError("-".join(("secret", "path")))

    protocol = MotoProtocol(broken, ("127.0.0.1", 1), set())
    transport = _Transport()
    protocol.connection_made(transport)
    protocol.data_received(b"GET /moto-api/x?token=t HTTP/1.1\r\nHost: h\r\n\r\n")

    assert transport.written.startswith(b"HTTP/1.1 500 ")
    assert not transport.closed  # keep-alive: the next request is still read
    assert "RuntimeError on GET /moto-api/x" in caplog.text
    assert "secret-path" not in caplog.text
    assert "token" not in caplog.text


def test_stop_closes_open_keep_alive_connections() -> None:
    server = LocalMotoServer()
    server.start()
    with socket.create_connection(server.get_host_and_port(), timeout=10) as sock:
        sock.sendall(_request("DynamoDB_20120810.ListTables", b"{}"))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        server.stop()
        assert sock.recv(1) == b""
    server.stop()  # idempotent


async def test_it_starts_and_stops_from_inside_a_running_loop() -> None:
    server = LocalMotoServer()
    server.start()
    try:
        reader, writer = await asyncio.open_connection(*server.get_host_and_port())
        writer.write(_request("DynamoDB_20120810.ListTables", b"{}", close=True))
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 ")
    finally:
        server.stop()
