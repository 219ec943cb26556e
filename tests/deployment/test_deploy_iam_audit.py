"""The declared IAM policies against the calls the real Lambda handlers make.

Every handler is driven through a session that takes every path (connect, sync
and async actions, subscribe, status, cancel, processing, a sweep that requeues
and one that fails, gone followers, a gone client, pushes from a function of the
user's own, a disconnect) on moto and a local management API, each function in
containers of its own, while every
DynamoDB and management API call is recorded with the function that made it.
Each call must be allowed by that function's policy as the stack declares it,
and every table, index and management API grant must be used by some call:
nothing missing, nothing spare. Run with and without CANCEL_ON_DISCONNECT.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from aiohttp import web
from deploy_harness import ACCOUNT, API_ID, REGION, Deployment
from lambda_events import LambdaContext as Context
from lambda_events import (
    ManagementApiStub,
    connect_event,
    disconnect_event,
    gone_response,
    load_event,
    message_event,
)

import adapters.aws
from adapters.aws_lambda import connect, disconnect, processor, pusher, router, runtime, sweeper
from adapters.dynamodb import format_time
from streamer.settings import Settings
from streamer.tokens import generate_rsa_key_pair, mint_token

TENANT, USER = "tenant-1", "user-1"
STAGE_ARN = f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}/prod"

Call = tuple[str, str, str]
"""(function, IAM action, resource ARN in the deployed account)."""


@dataclass
class Recorder:
    """Which function is running, and every AWS call made while it ran."""

    function: str | None = None
    function_last: str | None = None
    calls: set[Call] = field(default_factory=set)
    table_keys: dict[str, str] = field(default_factory=dict)
    """Test table name → `connections` / `requests` / `subscriptions`."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def dynamodb(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        """botocore `before-parameter-build` hook: the operation, its table and index."""
        if self.function is None:
            return
        arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/streamer-"
        arn += f"{self.table_keys[params['TableName']]}-prod"
        if "IndexName" in params:
            arn += f"/index/{params['IndexName']}"
        with self.lock:
            self.calls.add((self.function, f"dynamodb:{model.name}", arn))

    def management(self, method: str) -> None:
        if self.function is None:
            return
        resource = f"{STAGE_ARN}/{method}/@connections/*"
        with self.lock:
            self.calls.add((self.function, "execute-api:ManageConnections", resource))


class ManagementApi(ManagementApiStub):
    """The `@connections` API on a loopback port, in its own thread; ids in `gone` get 410."""

    methods = ("*",)

    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder
        self.gone: set[str] = set()

    async def answer(self, request: web.Request) -> web.Response:
        self.recorder.management(request.method)
        if request.match_info["id"] in self.gone:
            return gone_response()
        await request.read()
        return web.Response(status=200)


class Session:
    """Drives the handlers like API Gateway, the stream and EventBridge would."""

    def __init__(
        self, recorder: Recorder, api: ManagementApi, settings: Settings, private_key: str
    ) -> None:
        self.recorder = recorder
        self.api = api
        self.settings = settings
        self.private_key = private_key
        self.dynamodb = boto3.client(
            "dynamodb", endpoint_url=settings.dynamodb_endpoint_url, region_name="us-east-1"
        )
        self.sequence = 100

    def _as(self, function: str, call: Callable[[], Any]) -> Any:
        if self.recorder.function_last != function:
            # Each function has containers of its own: a cold start, as on Lambda.
            runtime.reset_for_tests()
            self.recorder.function_last = function
        self.recorder.function = function
        try:
            return call()
        finally:
            self.recorder.function = None

    def connect(self, connection_id: str) -> None:
        token = mint_token(self.private_key, sub=USER, tenant_id=TENANT)
        event = connect_event(connection_id, token)
        context = Context("streamer-connect-prod")
        reply = self._as("connect", lambda: connect.handler(event, context))
        assert reply == {"statusCode": 200}

    def send(self, connection_id: str, body: dict[str, Any]) -> dict[str, Any]:
        event = message_event(connection_id, json.dumps(body))
        context = Context("streamer-router-prod")
        reply: dict[str, Any] = self._as("router", lambda: router.handler(event, context))
        return reply

    def disconnect(self, connection_id: str) -> None:
        event = disconnect_event(connection_id)
        context = Context("streamer-disconnect-prod")
        assert (
            self._as("disconnect", lambda: disconnect.handler(event, context))["statusCode"] == 200
        )

    def item(self, request_id: str) -> dict[str, Any]:
        reply = self.dynamodb.get_item(
            TableName=self.settings.requests_table,
            Key={"RequestID": {"S": f"{TENANT}#{USER}#{request_id}"}},
            ConsistentRead=True,
        )
        item: dict[str, Any] = reply["Item"]
        return item

    def process(self, request_id: str, *, without: tuple[str, ...] = ()) -> None:
        """Hand the processor the request's stream record (minus the `without`
        attributes, as an image written by an older version would be)."""
        record: dict[str, Any] = copy.deepcopy(load_event("dynamodb_stream.json")["Records"][0])
        item = {k: v for k, v in self.item(request_id).items() if k not in without}
        self.sequence += 1
        record["dynamodb"].update(
            Keys={"RequestID": item["RequestID"]},
            NewImage=item,
            SequenceNumber=str(self.sequence),
        )
        record["eventSourceARN"] = (
            f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/{self.settings.requests_table}"
            "/stream/2026-01-01T00:00:00.000"
        )
        context = Context("streamer-processor-prod")
        reply = self._as("processor", lambda: processor.handler({"Records": [record]}, context))
        assert reply == {"batchItemFailures": []}

    def expire_lease(self, request_id: str, *, attempt: int) -> None:
        """What a processor that died mid-run leaves behind."""
        past = format_time(datetime.now(UTC) - timedelta(hours=1))
        self.dynamodb.update_item(
            TableName=self.settings.requests_table,
            Key={"RequestID": {"S": f"{TENANT}#{USER}#{request_id}"}},
            UpdateExpression="SET #s = :p, LeaseUntil = :past, Attempt = :a, "
            "ProcessingStarted = :past",
            ExpressionAttributeNames={"#s": "Status"},
            ExpressionAttributeValues={
                ":p": {"S": "PROCESSING"},
                ":past": {"S": past},
                ":a": {"N": str(attempt)},
            },
        )

    def sweep(self) -> dict[str, Any]:
        context = Context("streamer-sweeper-prod")
        reply: dict[str, Any] = self._as(
            "sweeper", lambda: sweeper.handler(load_event("scheduled.json"), context)
        )
        return reply

    def push(self, *, user: str | None = None) -> dict[str, int]:
        """What a function of the user's own does with `adapters.aws_lambda.pusher`."""
        context = Context("streamer-pusher-prod")

        def work(to: Any) -> Any:
            if user is None:
                return to.to_tenant(TENANT, {"hello": 1}, topic="news")
            return to.to_user(TENANT, user, {"hello": 1})

        summary = self._as("pusher", lambda: pusher.push(context, work))
        result: dict[str, int] = summary.as_dict()
        return result

    def status(self, request_id: str) -> str:
        return str(self.item(request_id)["Status"]["S"])


@pytest.fixture
def recorded_calls(
    request: pytest.FixtureRequest,
    dynamodb_settings: Settings,
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> set[Call]:
    """Run the whole session once (`request.param`: CANCEL_ON_DISCONNECT); the calls
    each function made."""
    cancel_on_disconnect: bool = request.param
    recorder = Recorder(
        table_keys={
            dynamodb_settings.connections_table: "connections",
            dynamodb_settings.requests_table: "requests",
            dynamodb_settings.subscriptions_table: "subscriptions",
        }
    )
    # The functions' clients come from the process's ThreadedSession (botocore's own).
    session = adapters.aws.ThreadedSession()
    session.botocore_session.register("before-parameter-build.dynamodb", recorder.dynamodb)
    monkeypatch.setattr(adapters.aws, "_threaded_session", session)
    private_key, public_key = generate_rsa_key_pair()
    with ManagementApi(recorder) as api:
        environment = {
            "CONNECTIONS_TABLE": dynamodb_settings.connections_table,
            "REQUESTS_TABLE": dynamodb_settings.requests_table,
            "SUBSCRIPTIONS_TABLE": dynamodb_settings.subscriptions_table,
            "DYNAMODB_ENDPOINT_URL": moto_endpoint,
            "WEBSOCKET_ENDPOINT": api.url,
            "JWT_PUBLIC_KEY": public_key,
            "AWS_REGION": "us-east-1",
            "STREAMER_APP": "streamer.demo:app",
            "CANCEL_ON_DISCONNECT": "true" if cancel_on_disconnect else "false",
            "PROGRESS_MAX_PER_SECOND": "0",
        }
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        runtime.reset_for_tests()
        session_ = Session(recorder, api, dynamodb_settings, private_key)
        try:
            _walk_every_path(session_, cancel_on_disconnect=cancel_on_disconnect)
        finally:
            runtime.reset_for_tests()
            session_.dynamodb.close()
    return recorder.calls


def _walk_every_path(s: Session, *, cancel_on_disconnect: bool) -> None:
    origin, follower, watcher, leaver, pushee = (
        "ORIGINORIGINORI=",
        "FOLLOWERFOLLOWE=",
        "WATCHERWATCHERW=",
        "LEAVERLEAVERLEA=",
        "PUSHEEPUSHEEPUS=",
    )
    for connection_id in (origin, follower, watcher, leaver):
        s.connect(connection_id)
    # A sync action, then async ones: to run, to cancel, to sweep, to leave behind.
    assert s.send(origin, {"id": "e1", "action": "echo", "payload": {"a": 1}})["statusCode"] == 200
    for request_id in ("run", "legacy", "cancel", "requeue", "fail", "queued"):
        s.send(origin, {"id": request_id, "action": "echo_async", "payload": {"n": 1}})
    for connection_id, request_id in (
        (follower, "run"),
        (follower, "cancel"),
        (watcher, "fail"),
        (watcher, "queued"),
        (origin, "queued"),
    ):
        s.send(connection_id, {"action": "subscribe", "payload": {"request_id": request_id}})
    s.send(origin, {"action": "status", "payload": {"request_id": "run"}})
    # Followers that have gone by delivery time are cleaned up, whoever delivers.
    s.api.gone.update({follower, watcher})
    s.process("run")
    assert s.status("run") == "COMPLETED"
    # An image without TimeoutSeconds (written before it existed): read, then claim.
    s.process("legacy", without=("TimeoutSeconds",))
    assert s.status("legacy") == "COMPLETED"
    s.send(origin, {"action": "cancel", "payload": {"request_id": "cancel"}})
    assert s.status("cancel") == "CANCELLED"
    s.expire_lease("requeue", attempt=1)
    s.expire_lease("fail", attempt=99)
    assert s.sweep() == {"requeued": 1, "failed": 1, "kicked": 0}
    # A reply that finds its client gone disconnects it (cancelling its requests).
    s.send(leaver, {"id": "left", "action": "echo_async", "payload": {}})
    s.send(leaver, {"action": "subscribe", "payload": {"request_id": "left"}})
    s.api.gone.add(leaver)
    assert s.send(leaver, {"action": "ping"}) == {"statusCode": 410}
    left_behind = "CANCELLED" if cancel_on_disconnect else "PENDING"
    assert s.status("left") == left_behind
    # A pushing function of the user's own reaches the tenant (a gone client with a
    # subscription is cleaned up), then one user.
    s.connect(pushee)
    s.send(pushee, {"action": "subscribe", "payload": {"request_id": "queued"}})
    s.api.gone.add(pushee)
    assert s.push() == {"sent": 1, "gone": 1, "failed": 0}
    assert s.push(user=USER) == {"sent": 1, "gone": 0, "failed": 0}
    # A disconnect drops the client's subscriptions (and cancels what it queued).
    s.disconnect(origin)
    assert (s.status("requeue"), s.status("queued")) == (left_behind, left_behind)


@pytest.mark.parametrize(
    "recorded_calls", [True, False], ids=["cancel-on-disconnect", "default"], indirect=True
)
def test_each_policy_allows_exactly_the_dynamodb_calls_its_function_makes(
    request: pytest.FixtureRequest, recorded_calls: set[Call]
) -> None:
    """Every call allowed; every table, index and management API grant used."""
    cancels = request.node.callspec.params["recorded_calls"]
    deployment: Deployment = request.getfixturevalue(
        "deployment" if cancels else "minimal_deployment"
    )
    denied = sorted(
        (function, action, resource)
        for function, action, resource in recorded_calls
        if (action, resource) not in _granted(deployment, function)
    )
    assert denied == [], "\n".join(map(str, denied))
    spare = sorted(
        (function, action, resource)
        for function in ("connect", "disconnect", "router", "processor", "sweeper", "pusher")
        for action, resource in _granted(deployment, function)
        if action.startswith(("dynamodb:", "execute-api:"))
        and "/stream/" not in resource
        and (function, action, resource) not in recorded_calls
    )
    assert spare == [], "\n".join(map(str, spare))


def _granted(deployment: Deployment, function: str) -> set[tuple[str, str]]:
    return {
        (action, resource)
        for statement in deployment.statements(function).values()
        for action in statement["Action"]
        for resource in statement["Resource"]
    }
