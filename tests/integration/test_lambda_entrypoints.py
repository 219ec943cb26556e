"""The Lambda entrypoints, driven with events shaped like AWS's samples, against moto
and a local server speaking the API Gateway Management API."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiohttp import web
from lambda_events import LambdaContext as Context
from lambda_events import ManagementApiStub, connect_event, gone_response, load_event, message_event

from adapters.aws_lambda import connect, disconnect, processor, router, runtime, sweeper
from streamer.app import Request, Streamer
from streamer.logs import JsonFormatter
from streamer.processor import DEADLINE_MARGIN_S
from streamer.progress import Progress
from streamer.settings import Settings, SettingsError
from streamer.tokens import generate_rsa_key_pair, mint_token

ROOT = Path(__file__).resolve().parents[2]
TENANT, USER = "tenant-1", "user-1"

app = Streamer("lambda-tests")


@app.action("echo", mode="sync")
async def echo(req: Request[dict[str, Any]]) -> dict[str, Any]:
    return {"echo": req.payload}


@app.action("work", mode="async")
async def work(req: Request[dict[str, Any]], progress: Progress) -> dict[str, Any]:
    await progress.report(50, "half way")
    return {"done": req.payload.get("n")}


@app.action("stall", mode="async", timeout=600)
async def stall(req: Request[dict[str, Any]], progress: Progress) -> None:
    """Never finishes on its own: only the invocation's deadline ends it."""
    await asyncio.Event().wait()


# --- a local management API ------------------------------------------------------------


class ManagementApi(ManagementApiStub):
    """`POST` and `DELETE /{stage}/@connections/{id}` on a loopback port, in its
    own thread: records posts and deletes, answers 410 for ids marked gone."""

    def __init__(self) -> None:
        super().__init__()
        self.gone: set[str] = set()
        self.deleted: list[str] = []
        self._posts: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def messages(self, connection_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._posts.get(connection_id, []))

    def types(self, connection_id: str) -> list[str]:
        return [m["type"] for m in self.messages(connection_id)]

    def clear(self) -> None:
        with self._lock:
            self._posts.clear()

    async def answer(self, request: web.Request) -> web.Response:
        connection_id = request.match_info["id"]
        if connection_id in self.gone:
            return gone_response()
        if request.method == "DELETE":
            with self._lock:
                self.deleted.append(connection_id)
            return web.Response(status=204)
        body = json.loads(await request.read())
        with self._lock:
            self._posts.setdefault(connection_id, []).append(body)
        return web.Response(status=200)


@pytest.fixture(scope="module")
def management_api() -> Iterator[ManagementApi]:
    api = ManagementApi()
    api.start()
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return generate_rsa_key_pair()


@dataclass
class Lambda:
    """The environment of the functions under test, and helpers to drive them."""

    settings: Settings
    private_key: str
    api: ManagementApi
    dynamodb: Any

    def token(self, *, tenant: str = TENANT, user: str = USER) -> str:
        return mint_token(self.private_key, sub=user, tenant_id=tenant)

    def connect(self, connection_id: str, token: str | None = None) -> dict[str, Any]:
        event = connect_event(connection_id, token)
        return connect.handler(event, Context(function_name="streamer-connect-test"))

    def send(self, connection_id: str, body: str | bytes | dict[str, Any]) -> dict[str, Any]:
        text = body if isinstance(body, str | bytes) else json.dumps(body)
        event = message_event(connection_id, text)
        return router.handler(event, Context(function_name="streamer-router-test"))

    def connection_item(self, connection_id: str) -> dict[str, Any] | None:
        reply = self.dynamodb.get_item(
            TableName=self.settings.connections_table,
            Key={"ConnectionID": {"S": connection_id}},
            ConsistentRead=True,
        )
        item: dict[str, Any] | None = reply.get("Item")
        return item

    def request_item(self, request_id: str) -> dict[str, Any]:
        key = f"{TENANT}#{USER}#{request_id}"
        reply = self.dynamodb.get_item(
            TableName=self.settings.requests_table,
            Key={"RequestID": {"S": key}},
            ConsistentRead=True,
        )
        item: dict[str, Any] = reply["Item"]
        return item

    def stream_record(self, request_id: str, sequence_number: str) -> dict[str, Any]:
        """The INSERT record the stream delivers for a stored request, in Lambda's shape."""
        record: dict[str, Any] = copy.deepcopy(load_event("dynamodb_stream.json")["Records"][0])
        item = self.request_item(request_id)
        record["dynamodb"]["Keys"] = {"RequestID": item["RequestID"]}
        record["dynamodb"]["NewImage"] = item
        record["dynamodb"]["SequenceNumber"] = sequence_number
        record["eventSourceARN"] = (
            f"arn:aws:dynamodb:us-east-1:123456789012:table/{self.settings.requests_table}"
            "/stream/2026-11-25T08:00:00.000"
        )
        return record

    def process(self, records: list[dict[str, Any]], *, remaining_ms: int = 60_000) -> Any:
        context = Context(remaining_ms=remaining_ms, function_name="streamer-processor-test")
        return processor.handler({"Records": records}, context)

    def status(self, request_id: str) -> str:
        return str(self.request_item(request_id)["Status"]["S"])


@pytest.fixture
def aws_lambda(
    dynamodb_settings: Settings,
    moto_endpoint: str,
    management_api: ManagementApi,
    keys: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Lambda]:
    """Environment variables as a deployed function would have them; a cold start each test."""
    private_key, public_key = keys
    environment = {
        "CONNECTIONS_TABLE": dynamodb_settings.connections_table,
        "REQUESTS_TABLE": dynamodb_settings.requests_table,
        "SUBSCRIPTIONS_TABLE": dynamodb_settings.subscriptions_table,
        "DYNAMODB_ENDPOINT_URL": moto_endpoint,
        "WEBSOCKET_ENDPOINT": management_api.url,
        "JWT_PUBLIC_KEY": public_key,
        "AWS_REGION": "us-east-1",
        "STREAMER_APP": f"{__name__}:app",
        "PROGRESS_MAX_PER_SECOND": "0",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    runtime.reset_for_tests()
    management_api.clear()
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")
    try:
        yield Lambda(dynamodb_settings, private_key, management_api, client)
    finally:
        runtime.reset_for_tests()
        client.close()


def _emf_lines(output: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if "_aws" in line]


# --- $connect --------------------------------------------------------------------------


def test_connect_with_a_valid_token_stores_the_connection(
    aws_lambda: Lambda, capsys: pytest.CaptureFixture[str]
) -> None:
    assert aws_lambda.connect("AAAAAAAAAAAAAAAA", aws_lambda.token()) == {"statusCode": 200}
    item = aws_lambda.connection_item("AAAAAAAAAAAAAAAA")
    assert item is not None
    assert item["UserID"] == {"S": USER}
    assert item["TenantID"] == {"S": TENANT}
    assert item["Endpoint"] == {"S": aws_lambda.api.url}
    [emf] = _emf_lines(capsys.readouterr().out)
    assert emf["ConnectionEstablished"] == 1
    assert emf["ActiveConnections"] == 1
    assert emf["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Streamer"


def test_connect_stores_the_domain_and_stage_endpoint_without_websocket_endpoint(
    aws_lambda: Lambda, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WEBSOCKET_ENDPOINT")
    assert aws_lambda.connect("BBBBBBBBBBBBBBBB", aws_lambda.token()) == {"statusCode": 200}
    item = aws_lambda.connection_item("BBBBBBBBBBBBBBBB")
    assert item is not None
    assert item["Endpoint"] == {"S": "https://abcd123456.execute-api.us-east-1.amazonaws.com/prod"}


@pytest.mark.parametrize(
    ("case", "status"),
    [("no token", 401), ("bad token", 401), ("other tenant", 403), ("too many", 429)],
)
def test_a_refused_connect_returns_its_status_and_stores_nothing(
    aws_lambda: Lambda,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: str,
    status: int,
) -> None:
    monkeypatch.setenv("ALLOWED_TENANTS", TENANT)
    monkeypatch.setenv("MAX_CONNECTIONS_PER_USER", "1")
    if case == "too many":
        assert aws_lambda.connect("FIRSTFIRSTFIRST0", aws_lambda.token())["statusCode"] == 200
        capsys.readouterr()
    token = {
        "no token": None,
        "bad token": "not.a.jwt",
        "other tenant": aws_lambda.token(tenant="tenant-2"),
        "too many": aws_lambda.token(),
    }[case]
    assert aws_lambda.connect("REFUSEDREFUSED00", token) == {"statusCode": status}
    assert aws_lambda.connection_item("REFUSEDREFUSED00") is None
    emf = _emf_lines(capsys.readouterr().out)
    failed_auth = [{"AuthenticationFailed": 1.0}] if status in (401, 403) else []
    assert [{k: v for k, v in line.items() if k[0].isupper()} for line in emf] == failed_auth


# --- $disconnect -----------------------------------------------------------------------


def test_two_authorization_values_in_the_query_are_refused_with_401(aws_lambda: Lambda) -> None:
    """API Gateway keeps the last value in `queryStringParameters`; the connect
    handler reads `multiValueQueryStringParameters` and refuses the ambiguity."""
    valid = aws_lambda.token()
    event = load_event("connect.json")
    event["requestContext"]["connectionId"] = "TWOTOKENSTWOTOK0"
    event["queryStringParameters"] = {"Authorization": valid}
    event["multiValueQueryStringParameters"] = {"Authorization": ["forged.token.x", valid]}
    assert connect.handler(event, Context()) == {"statusCode": 401}
    assert aws_lambda.connection_item("TWOTOKENSTWOTOK0") is None


def test_a_query_token_and_a_different_header_are_refused_with_401(aws_lambda: Lambda) -> None:
    event = load_event("connect.json")
    event["requestContext"]["connectionId"] = "QUERYANDHEADER00"
    event["queryStringParameters"] = {"Authorization": aws_lambda.token()}
    event["multiValueQueryStringParameters"] = {"Authorization": [aws_lambda.token()]}
    other = aws_lambda.token(user="user-2")
    event["headers"]["Authorization"] = f"Bearer {other}"
    event["multiValueHeaders"]["Authorization"] = [f"Bearer {other}"]
    assert connect.handler(event, Context()) == {"statusCode": 401}
    assert aws_lambda.connection_item("QUERYANDHEADER00") is None


def test_disconnect_deletes_the_record(
    aws_lambda: Lambda, capsys: pytest.CaptureFixture[str]
) -> None:
    aws_lambda.connect("CCCCCCCCCCCCCCCC", aws_lambda.token())
    event = load_event("disconnect.json")
    event["requestContext"]["connectionId"] = "CCCCCCCCCCCCCCCC"
    assert disconnect.handler(event, Context()) == {"statusCode": 200}
    assert aws_lambda.connection_item("CCCCCCCCCCCCCCCC") is None
    emf = _emf_lines(capsys.readouterr().out)[-1]
    assert emf["ConnectionClosed"] == 1
    assert emf["ActiveConnections"] == 0


# --- $default --------------------------------------------------------------------------


def test_router_posts_the_sync_reply_to_the_connection(aws_lambda: Lambda) -> None:
    aws_lambda.connect("DDDDDDDDDDDDDDDD", aws_lambda.token())
    reply = aws_lambda.send("DDDDDDDDDDDDDDDD", {"id": "e1", "action": "echo", "payload": {"a": 1}})
    assert reply == {"statusCode": 200}
    [message] = aws_lambda.api.messages("DDDDDDDDDDDDDDDD")
    assert message["type"] == "response"
    assert message["request_id"] == "e1"
    assert message["data"] == {"echo": {"a": 1}}


def test_ping_answers_with_this_connection_id(aws_lambda: Lambda) -> None:
    aws_lambda.connect("PPPPPPPPPPPPPPPP", aws_lambda.token())
    aws_lambda.send("PPPPPPPPPPPPPPPP", {"action": "ping"})
    [message] = aws_lambda.api.messages("PPPPPPPPPPPPPPPP")
    assert message["data"] == {"pong": True, "connection_id": "PPPPPPPPPPPPPPPP"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("not json", "VALIDATION_ERROR"),
        ("[1, 2]", "VALIDATION_ERROR"),
        ('{"payload": {}}', "INVALID_ACTION"),
        ('{"action": "no_such_action"}', "INVALID_ACTION"),
    ],
)
def test_a_bad_body_gets_the_typed_error(aws_lambda: Lambda, body: str, code: str) -> None:
    aws_lambda.connect("EEEEEEEEEEEEEEEE", aws_lambda.token())
    assert aws_lambda.send("EEEEEEEEEEEEEEEE", body) == {"statusCode": 200}
    [message] = aws_lambda.api.messages("EEEEEEEEEEEEEEEE")
    assert message["type"] == "error"
    assert message["error"]["code"] == code


def test_a_binary_message_is_closed_with_1003_through_the_management_api(
    aws_lambda: Lambda,
) -> None:
    """API Gateway closes on a binary frame itself; if one reaches the router, it
    obeys the same verdict: DeleteConnection, nothing posted."""
    aws_lambda.connect("BINARYBINARY0000", aws_lambda.token())
    reply = aws_lambda.send("BINARYBINARY0000", b'{"action": "ping"}')
    assert reply == {"statusCode": 200, "closeCode": 1003}
    assert "BINARYBINARY0000" in aws_lambda.api.deleted
    assert aws_lambda.api.messages("BINARYBINARY0000") == []


def test_a_message_over_128_kb_is_closed_with_1009(aws_lambda: Lambda) -> None:
    aws_lambda.connect("HUGEHUGEHUGE0000", aws_lambda.token())
    body = json.dumps({"action": "echo", "payload": {"s": "x" * (128 * 1024)}})
    assert aws_lambda.send("HUGEHUGEHUGE0000", body) == {"statusCode": 200, "closeCode": 1009}
    assert "HUGEHUGEHUGE0000" in aws_lambda.api.deleted
    assert aws_lambda.api.messages("HUGEHUGEHUGE0000") == []


def test_a_message_over_32_kb_is_routed_as_api_gateway_assembled_it(aws_lambda: Lambda) -> None:
    """Lambda gets whole messages: over 32 KB, it came fragmented, and is answered."""
    aws_lambda.connect("FRAGFRAGFRAG0000", aws_lambda.token())
    body = {"id": "f1", "action": "echo", "payload": {"s": "x" * (40 * 1024)}}
    assert aws_lambda.send("FRAGFRAGFRAG0000", body) == {"statusCode": 200}
    [message] = aws_lambda.api.messages("FRAGFRAGFRAG0000")
    assert (message["type"], message["request_id"]) == ("response", "f1")


def test_a_message_from_an_unregistered_connection_is_unauthorized(aws_lambda: Lambda) -> None:
    assert aws_lambda.send("UNKNOWNUNKNOWN00", {"action": "ping"}) == {"statusCode": 200}
    [message] = aws_lambda.api.messages("UNKNOWNUNKNOWN00")
    assert message["type"] == "error"
    assert message["error"]["code"] == "UNAUTHORIZED"


def test_a_failing_connection_lookup_answers_internal_error(
    aws_lambda: Lambda, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONNECTIONS_TABLE", "streamer-connections-missing")
    assert aws_lambda.send("LOOKUPLOOKUP0000", {"action": "ping"}) == {"statusCode": 200}
    [message] = aws_lambda.api.messages("LOOKUPLOOKUP0000")
    assert message["error"] == {
        "code": "INTERNAL_ERROR",
        "message": "internal error; try again",
        "details": None,
    }


def test_a_reply_to_a_gone_connection_deletes_its_record(aws_lambda: Lambda) -> None:
    aws_lambda.connect("GONEGONEGONEGONE", aws_lambda.token())
    aws_lambda.api.gone.add("GONEGONEGONEGONE")
    assert aws_lambda.send("GONEGONEGONEGONE", {"action": "ping"}) == {"statusCode": 410}
    assert aws_lambda.connection_item("GONEGONEGONEGONE") is None


def test_an_async_action_is_acknowledged_and_queued(
    aws_lambda: Lambda, capsys: pytest.CaptureFixture[str]
) -> None:
    aws_lambda.connect("FFFFFFFFFFFFFFFF", aws_lambda.token())
    capsys.readouterr()
    aws_lambda.send("FFFFFFFFFFFFFFFF", {"id": "w1", "action": "work", "payload": {"n": 1}})
    [ack] = aws_lambda.api.messages("FFFFFFFFFFFFFFFF")
    assert (ack["type"], ack["request_id"], ack["status"]) == ("acknowledgment", "w1", "queued")
    assert aws_lambda.status("w1") == "PENDING"
    [emf] = _emf_lines(capsys.readouterr().out)
    assert emf["RequestsQueued"] == 1


# --- the stream ------------------------------------------------------------------------


def _queue(aws_lambda: Lambda, connection_id: str, *requests: tuple[str, str]) -> None:
    aws_lambda.connect(connection_id, aws_lambda.token())
    for request_id, action in requests:
        aws_lambda.send(connection_id, {"id": request_id, "action": action, "payload": {"n": 7}})
    aws_lambda.api.clear()


def test_the_processor_runs_the_request_and_posts_progress_and_completion(
    aws_lambda: Lambda, capsys: pytest.CaptureFixture[str]
) -> None:
    _queue(aws_lambda, "HHHHHHHHHHHHHHHH", ("w1", "work"))
    capsys.readouterr()
    result = aws_lambda.process([aws_lambda.stream_record("w1", "100")])
    assert result == {"batchItemFailures": []}
    assert aws_lambda.api.types("HHHHHHHHHHHHHHHH") == ["progress", "complete"]
    assert aws_lambda.api.messages("HHHHHHHHHHHHHHHH")[-1]["result"] == {"done": 7}
    assert aws_lambda.status("w1") == "COMPLETED"
    [emf] = _emf_lines(capsys.readouterr().out)
    assert emf["RequestsCompleted"] == 1
    assert emf["ProcessingLatency"] >= 0
    assert {"Name": "ProcessingLatency", "Unit": "Milliseconds"} in (
        emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]
    )


def test_a_poisoned_record_is_reported_with_every_later_one(aws_lambda: Lambda) -> None:
    """The checkpoint stays before the poison, so the record before it is not replayed;
    the one after it ran too, and its replay is skipped."""
    _queue(aws_lambda, "IIIIIIIIIIIIIIII", ("a", "work"), ("c", "work"))
    poison = aws_lambda.stream_record("a", "201")
    poison["dynamodb"]["Keys"] = {"RequestID": {"N": "1"}}
    records = [
        aws_lambda.stream_record("a", "200"),
        poison,
        aws_lambda.stream_record("c", "202"),
    ]
    result = aws_lambda.process(records)
    assert result == {"batchItemFailures": [{"itemIdentifier": "201"}, {"itemIdentifier": "202"}]}
    assert (aws_lambda.status("a"), aws_lambda.status("c")) == ("COMPLETED", "COMPLETED")
    delivered = aws_lambda.api.messages("IIIIIIIIIIIIIIII")
    assert aws_lambda.process(records[2:]) == {"batchItemFailures": []}
    assert aws_lambda.api.messages("IIIIIIIIIIIIIIII") == delivered


@pytest.mark.parametrize("created", [1e300, 10**17, float("nan")], ids=["overflow", "ms", "nan"])
def test_a_creation_time_out_of_range_is_a_batch_item_failure_not_a_failed_batch(
    aws_lambda: Lambda, created: float
) -> None:
    """`datetime.fromtimestamp` raised OverflowError past the parser before: the
    whole invocation failed. Now the record and those after it are reported, and
    the record before it ran."""
    _queue(aws_lambda, "IIIIIIIIIIIIIIIJ", ("o1", "work"), ("o2", "work"))
    poison = aws_lambda.stream_record("o2", "251")
    poison["dynamodb"]["ApproximateCreationDateTime"] = created
    records = [aws_lambda.stream_record("o1", "250"), poison, aws_lambda.stream_record("o2", "252")]

    result = aws_lambda.process(records)

    assert result == {"batchItemFailures": [{"itemIdentifier": "251"}, {"itemIdentifier": "252"}]}
    assert aws_lambda.status("o1") == "COMPLETED"


def test_records_that_are_not_claimable_are_skipped(aws_lambda: Lambda) -> None:
    _queue(aws_lambda, "JJJJJJJJJJJJJJJJ", ("j1", "work"))
    aws_lambda.process([aws_lambda.stream_record("j1", "300")])
    aws_lambda.api.clear()
    modify = aws_lambda.stream_record("j1", "301")
    modify["eventName"] = "MODIFY"
    remove = aws_lambda.stream_record("j1", "302")
    remove["eventName"] = "REMOVE"
    del remove["dynamodb"]["NewImage"]
    assert aws_lambda.process([modify, remove]) == {"batchItemFailures": []}
    assert aws_lambda.api.messages("JJJJJJJJJJJJJJJJ") == []


def test_a_replayed_batch_does_nothing_twice(aws_lambda: Lambda) -> None:
    _queue(aws_lambda, "KKKKKKKKKKKKKKKK", ("k1", "work"), ("k2", "work"))
    batch = [aws_lambda.stream_record("k1", "400"), aws_lambda.stream_record("k2", "401")]
    assert aws_lambda.process(batch) == {"batchItemFailures": []}
    first = aws_lambda.api.messages("KKKKKKKKKKKKKKKK")
    assert sorted(m["type"] for m in first) == ["complete", "complete", "progress", "progress"]
    assert aws_lambda.process(batch) == {"batchItemFailures": []}
    assert aws_lambda.api.messages("KKKKKKKKKKKKKKKK") == first


def test_at_the_deadline_running_requests_are_handed_back_not_reported(
    aws_lambda: Lambda,
) -> None:
    """Both stalled requests ran at once and went back to PENDING; their own
    stream records re-queue them, so the batch reports nothing."""
    _queue(aws_lambda, "LLLLLLLLLLLLLLLL", ("s1", "stall"), ("s2", "stall"))
    batch = [aws_lambda.stream_record("s1", "500"), aws_lambda.stream_record("s2", "501")]
    remaining_ms = int(DEADLINE_MARGIN_S * 1000) + 300
    result = aws_lambda.process(batch, remaining_ms=remaining_ms)
    assert result == {"batchItemFailures": []}
    assert [aws_lambda.status(r) for r in ("s1", "s2")] == ["PENDING", "PENDING"]
    assert [aws_lambda.request_item(r)["Attempt"] for r in ("s1", "s2")] == [{"N": "1"}] * 2


def test_with_no_time_left_the_whole_batch_is_reported_untouched(aws_lambda: Lambda) -> None:
    _queue(aws_lambda, "MMMMMMMMMMMMMMMM", ("m1", "work"))
    result = aws_lambda.process([aws_lambda.stream_record("m1", "600")], remaining_ms=1000)
    assert result == {"batchItemFailures": [{"itemIdentifier": "600"}]}
    assert aws_lambda.status("m1") == "PENDING"


# --- the sweeper -----------------------------------------------------------------------


def test_the_sweeper_requeues_an_expired_lease_and_counts_connections(
    aws_lambda: Lambda, capsys: pytest.CaptureFixture[str]
) -> None:
    _queue(aws_lambda, "NNNNNNNNNNNNNNNN", ("n1", "work"))
    aws_lambda.dynamodb.update_item(
        TableName=aws_lambda.settings.requests_table,
        Key={"RequestID": {"S": f"{TENANT}#{USER}#n1"}},
        UpdateExpression="SET #s = :p, LeaseUntil = :past, Attempt = :one",
        ExpressionAttributeNames={"#s": "Status"},
        ExpressionAttributeValues={
            ":p": {"S": "PROCESSING"},
            ":past": {"S": "2020-01-01T00:00:00.000Z"},
            ":one": {"N": "1"},
        },
    )
    capsys.readouterr()
    assert sweeper.handler(load_event("scheduled.json"), Context()) == {
        "requeued": 1,
        "failed": 0,
        "kicked": 0,
    }
    assert aws_lambda.status("n1") == "PENDING"
    [emf] = _emf_lines(capsys.readouterr().out)
    assert emf["ActiveConnections"] == 1


# --- the container ---------------------------------------------------------------------


def test_warm_invocations_reuse_the_loop_and_the_clients(aws_lambda: Lambda) -> None:
    aws_lambda.connect("WWWWWWWWWWWWWWWW", aws_lambda.token())
    runner = runtime.get_runner()
    loop = runner.get_loop()
    first = runtime.current_runtime()
    assert first is not None
    aws_lambda.send("WWWWWWWWWWWWWWWW", {"action": "ping"})
    aws_lambda.send("WWWWWWWWWWWWWWWW", {"action": "ping"})
    second = runtime.current_runtime()
    assert runtime.get_runner() is runner
    assert runner.get_loop() is loop
    assert not loop.is_closed()
    assert second is first
    assert second.stores.client is first.stores.client
    assert second.management is first.management is not None
    assert aws_lambda.api.types("WWWWWWWWWWWWWWWW") == ["response", "response"]


def test_a_missing_setting_fails_the_cold_start_with_one_clear_line(
    aws_lambda: Lambda, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("REQUESTS_TABLE")
    with caplog.at_level(logging.INFO), pytest.raises(SettingsError, match="REQUESTS_TABLE"):
        aws_lambda.send("XXXXXXXXXXXXXXXX", {"action": "ping"})
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert json.loads(line)["msg"] == (
        "invalid configuration for the router function: REQUESTS_TABLE is required"
    )
    assert runtime.current_runtime() is None


def test_log_lines_carry_the_lambda_request_id(
    aws_lambda: Lambda, caplog: pytest.LogCaptureFixture
) -> None:
    aws_lambda.connect("YYYYYYYYYYYYYYYY", aws_lambda.token())
    with caplog.at_level(logging.INFO, logger="streamer"):
        aws_lambda.send("YYYYYYYYYYYYYYYY", {"id": "y1", "action": "echo"})
    [line] = [
        json.loads(JsonFormatter().format(r)) for r in caplog.records if r.msg == "message handled"
    ]
    assert line["aws_request_id"] == Context.aws_request_id
    assert line["connection_id"] == "YYYYYYYYYYYYYYYY"
    assert (line["request_id"], line["action"], line["outcome"]) == ("y1", "echo", "response")
    assert line["duration_ms"] >= 0


# --- cold start ------------------------------------------------------------------------

_COLD_START = """
import sys
from adapters.aws_lambda import {module}, runtime

async def nothing(built):
    return None

runtime.invoke({function!r}, None, nothing)
print(" ".join(sorted(m for m in ("jwt", "cryptography") if m in sys.modules)))
"""


@pytest.mark.parametrize(
    ("module", "function", "environment", "loaded"),
    [
        ("router", "router", {}, ""),
        ("processor", "processor", {}, ""),
        ("connect", "connect", {"JWT_PUBLIC_KEY": "key"}, "cryptography"),
    ],
)
def test_only_the_function_that_verifies_tokens_loads_the_jwt_libraries(
    module: str,
    function: str,
    environment: dict[str, str],
    loaded: str,
    keys: tuple[str, str],
    moto_endpoint: str,
) -> None:
    """PyJWT itself waits for the first token; cryptography comes with the key."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "CONNECTIONS_TABLE": "cold-connections",
        "REQUESTS_TABLE": "cold-requests",
        "WEBSOCKET_ENDPOINT": "https://abc123.execute-api.us-east-1.amazonaws.com/prod",
        "DYNAMODB_ENDPOINT_URL": moto_endpoint,
        "LOG_LEVEL": "WARNING",
    } | {name: keys[1] if value == "key" else value for name, value in environment.items()}
    done = subprocess.run(
        [sys.executable, "-c", _COLD_START.format(module=module, function=function)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == loaded
