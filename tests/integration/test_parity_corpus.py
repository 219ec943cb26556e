"""Parity: the same frames give byte-identical replies and close codes from the
emulator (over a real socket) and from the Lambda handlers (API Gateway-shaped
events, management API captured), after normalising ids and timestamps.

The corpus is data, one case a line, in `parity_corpus.jsonl`:
`{"name", "as": "alice"|"bob", "kind": "text"|"fragmented"|"binary", "send": <text
or JSON object>, "pad_to"?, "nest"?, "expect"?}`. `@PAD@` (`@PADU@` for two-byte
characters) pads the frame to exactly `pad_to` bytes; `@NEST@` / `@LNEST@` become
an object / a list that makes the whole message `nest` levels deep. `expect`
("response", "error CODE", "close 1009", ...) pins the first outcome as well, so
both runtimes agreeing on a wrong answer fails too. Bob is another user in
another tenant: his ids are foreign to Alice and hers to him.

Each runtime sees the whole corpus in order over one connection per user (a new
one after a close); an async request is run to its end before the next case
(the emulator's poller; for Lambda, the new stream records go through the
processor handler), so `status`/`subscribe`/`cancel` of earlier ids are
deterministic.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import json
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
import pytest_asyncio
from aiohttp import web
from lambda_events import LambdaContext as Context
from lambda_events import ManagementApiStub, connect_event, disconnect_event, message_event
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import streamer.demo
from adapters.aws_lambda import connect as lambda_connect
from adapters.aws_lambda import disconnect, processor, router, runtime
from adapters.dynamodb import create_tables, delete_tables
from emulator.server import Emulator, EmulatorConfig
from emulator.testing import recv_json
from streamer.frames import split_into_frames
from streamer.settings import Settings
from streamer.tokens import generate_rsa_key_pair, mint_token

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "parity_corpus.jsonl"
PARITY_CONTEXT = Context(function_name="streamer-parity")
USERS = {"alice": "tenant-a", "bob": "tenant-b"}
API_GATEWAY_FRAME_BYTES = 32 * 1024
"""API Gateway's documented frame limit, restated here as the test's own oracle:
a single frame over it never reaches Lambda (API Gateway closes with 1009)."""
REPLY_TIMEOUT_S = 20.0
T = TypeVar("T")


# -- the corpus ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One corpus line, with its frame built."""

    name: str
    user: str
    kind: str
    text: str
    expect: str | None

    @property
    def data(self) -> str | bytes:
        return self.text.encode("utf-8", "surrogatepass") if self.kind == "binary" else self.text


def _nest(depth: int, *, as_list: bool) -> str:
    return (
        ("[" * depth + "]" * depth)
        if as_list
        else ('{"a":' * (depth - 1) + "{}" + "}" * (depth - 1))
    )


def _build(line: dict[str, Any]) -> Case:
    send = line["send"]
    text = send if isinstance(send, str) else json.dumps(send, ensure_ascii=False)
    if "nest" in line:
        depth = int(line["nest"])
        text = text.replace("@NEST@", _nest(depth - 1, as_list=False))
        text = text.replace("@LNEST@", _nest(depth - 2, as_list=True))
    if "pad_to" in line:
        target = int(line["pad_to"])
        marker = "@PADU@" if "@PADU@" in text else "@PAD@"
        missing = target - len(text.replace(marker, "").encode("utf-8"))
        pad = "x" * missing if marker == "@PAD@" else "é" * (missing // 2) + "x" * (missing % 2)
        text = text.replace(marker, pad)
        assert len(text.encode("utf-8")) == target, line["name"]
    return Case(
        line["name"], line.get("as", "alice"), line.get("kind", "text"), text, line.get("expect")
    )


def load_corpus() -> list[Case]:
    lines = CORPUS.read_text(encoding="utf-8").split("\n")  # not splitlines: U+2028 is data
    return [_build(json.loads(line)) for line in lines if line.strip()]


Outcome = tuple[str, ...]
"""("close", code) or the normalised JSON texts the connection received."""


_TIMESTAMP_FIELDS = {"timestamp", "created_at", "updated_at", "received_at"}


def _normalise(text: str, replacements: dict[str, str]) -> str:
    for real, token in replacements.items():
        text = text.replace(json.dumps(real)[1:-1], token)
    body = json.loads(text)

    def scrub(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ("<ts>" if k in _TIMESTAMP_FIELDS else scrub(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    return json.dumps(scrub(body), ensure_ascii=False, sort_keys=True)


def _replacements(connection_id: str, messages: list[str], case: Case) -> dict[str, str]:
    """The connection id, and a server-made request id when the frame had none."""
    found = {connection_id: "<cid>"}
    sent = _loads_or_none(case.text)
    if not (sent and isinstance(sent.get("id"), str)) and messages:
        request_id = json.loads(messages[0]).get("request_id")
        if isinstance(request_id, str) and request_id:
            found[request_id] = "<rid>"
    return found


def _first(outcome: Outcome) -> str:
    if outcome[0] == "close":
        return f"close {outcome[1]}"
    body = json.loads(outcome[0])
    return f"error {body['error']['code']}" if body["type"] == "error" else str(body["type"])


def _waits_for_processing(first: dict[str, Any]) -> bool:
    return first.get("type") == "acknowledgment" and first.get("status") == "queued"


def _is_final(request_id: str, message: dict[str, Any]) -> bool:
    return message.get("request_id") == request_id and message["type"] in ("complete", "error")


# -- runtime (a): the emulator over real sockets -----------------------------------------------


class EmulatorSide:
    """One emulator, one socket per user (reopened after a close)."""

    def __init__(self, emulator: Emulator, private_pem: str) -> None:
        self.emulator = emulator
        self.private_pem = private_pem
        self.sockets: dict[str, ClientConnection] = {}
        self.connection_ids: dict[str, str] = {}

    async def open(self, user: str) -> None:
        token = mint_token(self.private_pem, sub=user, tenant_id=USERS[user], ttl_s=3600)
        url = f"{self.emulator.ws_url}/?Authorization={token}"
        ws = await connect(url, open_timeout=REPLY_TIMEOUT_S, max_size=None)
        self.sockets[user] = ws
        await ws.send(json.dumps({"action": "ping"}))
        pong = await recv_json(ws, timeout_s=REPLY_TIMEOUT_S)
        self.connection_ids[user] = pong["data"]["connection_id"]

    async def run(self, case: Case) -> Outcome:
        ws = self.sockets[case.user]
        connection_id = self.connection_ids[case.user]
        try:
            if case.kind == "fragmented":
                size = len(case.text.encode("utf-8"))
                await ws.send(split_into_frames(case.text, max(1, min(16 * 1024, size // 2))))
            else:
                await ws.send(case.data)
            messages = [await self._recv(ws)]
            first = json.loads(messages[0])
            if _waits_for_processing(first):
                async with asyncio.timeout(REPLY_TIMEOUT_S):
                    while not _is_final(first["request_id"], json.loads(messages[-1])):
                        messages.append(await self._recv(ws))
        except ConnectionClosed:
            code = ws.close_code
            gateway = self.emulator.gateway
            assert gateway is not None
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                await gateway.wait_disconnected(connection_id)
            await self.open(case.user)
            return ("close", str(code))
        replacements = _replacements(connection_id, messages, case)
        return tuple(_normalise(m, replacements) for m in messages)

    @staticmethod
    async def _recv(ws: ClientConnection) -> str:
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            frame = await ws.recv()
        assert isinstance(frame, str)
        return frame

    async def close(self) -> None:
        for ws in self.sockets.values():
            await ws.close()


# -- runtime (b): the Lambda handlers with API Gateway-shaped events -----------------------------


class ManagementApi(ManagementApiStub):
    """A loopback management API in its own thread: records every POST and
    DELETE per connection, in order."""

    client_max_size = 4 * 1024 * 1024

    def __init__(self) -> None:
        super().__init__()
        self._calls: dict[str, list[tuple[str, str]]] = {}
        self._lock = threading.Lock()

    def take(self, connection_id: str) -> list[tuple[str, str]]:
        with self._lock:
            return self._calls.pop(connection_id, [])

    async def answer(self, request: web.Request) -> web.Response:
        body = (await request.read()).decode("utf-8")
        with self._lock:
            self._calls.setdefault(request.match_info["id"], []).append((request.method, body))
        return web.Response(status=200 if request.method == "POST" else 204)


@dataclass
class LambdaSide:
    """The connect/router/disconnect/processor handlers on one thread (one warm
    container), the management API captured, the stream read after each request."""

    settings: Settings
    endpoint: str
    private_pem: str
    api: ManagementApi
    pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="lambda")
    )
    connection_ids: dict[str, str] = field(default_factory=dict)
    stream_arn: str | None = None
    iterator: str = ""

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, function, *args)

    async def open(self, user: str) -> None:
        connection_id = base64.b64encode(uuid.uuid4().bytes[:12]).decode()
        token = mint_token(self.private_pem, sub=user, tenant_id=USERS[user], ttl_s=3600)
        event = connect_event(connection_id, token)
        result = await self.call(lambda_connect.handler, event, PARITY_CONTEXT)
        assert result == {"statusCode": 200}, result
        self.connection_ids[user] = connection_id

    async def run(self, case: Case) -> Outcome:
        connection_id = self.connection_ids[case.user]
        if case.kind == "text" and len(case.text.encode("utf-8")) > API_GATEWAY_FRAME_BYTES:
            # API Gateway closes on a single frame over 32 KB: no Lambda runs.
            return await self._closed(case, connection_id, "1009")
        if case.kind == "binary":
            event = message_event(connection_id, case.data if isinstance(case.data, bytes) else b"")
        else:
            event = message_event(connection_id, case.text)
        result = await self.call(router.handler, event, PARITY_CONTEXT)
        calls = self.api.take(connection_id)
        if "closeCode" in result:
            assert calls == [("DELETE", "")], calls
            return await self._closed(case, connection_id, str(result["closeCode"]))
        assert all(method == "POST" for method, _ in calls), calls
        messages = [body for _, body in calls]
        if messages and _waits_for_processing(json.loads(messages[0])):
            records = await self.call(self._new_stream_records)
            outcome = await self.call(processor.handler, {"Records": records}, PARITY_CONTEXT)
            assert outcome == {"batchItemFailures": []}, outcome
            messages += [body for _, body in self.api.take(connection_id)]
        replacements = _replacements(connection_id, messages, case)
        return tuple(_normalise(m, replacements) for m in messages)

    async def _closed(self, case: Case, connection_id: str, code: str) -> Outcome:
        """API Gateway closed the socket: `$disconnect` runs, the client reconnects."""
        await self.call(
            disconnect.handler,
            disconnect_event(connection_id),
            PARITY_CONTEXT,
        )
        await self.open(case.user)
        return ("close", code)

    def _new_stream_records(self) -> list[dict[str, Any]]:
        """The requests table's stream records since the last call, shaped as
        Lambda delivers them (`eventSourceARN`, epoch-second creation time).
        moto has one shard and never expires iterators (DESIGN §10)."""
        options: dict[str, Any] = {"endpoint_url": self.endpoint, "region_name": "us-east-1"}
        streams = boto3.client("dynamodbstreams", **options)
        try:
            if self.stream_arn is None:
                dynamodb = boto3.client("dynamodb", **options)
                table = dynamodb.describe_table(TableName=self.settings.requests_table)["Table"]
                dynamodb.close()
                self.stream_arn = str(table["LatestStreamArn"])
                [shard] = streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"][
                    "Shards"
                ]
                self.iterator = streams.get_shard_iterator(
                    StreamArn=self.stream_arn,
                    ShardId=shard["ShardId"],
                    ShardIteratorType="TRIM_HORIZON",
                )["ShardIterator"]
            reply = streams.get_records(ShardIterator=self.iterator, Limit=1000)
            self.iterator = reply["NextShardIterator"]
            records: list[dict[str, Any]] = []
            for record in reply["Records"]:
                raw: dict[str, Any] = copy.deepcopy(dict(record))
                raw["dynamodb"]["ApproximateCreationDateTime"] = int(
                    record["dynamodb"]["ApproximateCreationDateTime"].timestamp()
                )
                raw["eventSourceARN"] = self.stream_arn
                records.append(raw)
        finally:
            streams.close()
        return records


# -- the module's two stacks -----------------------------------------------------------------


def _fresh_tables(name: str, endpoint: str) -> Settings:
    suffix = f"{name}-{uuid.uuid4().hex[:8]}"
    return dataclasses.replace(
        Settings(),
        connections_table=f"streamer-connections-{suffix}",
        requests_table=f"streamer-requests-{suffix}",
        subscriptions_table=f"streamer-subscriptions-{suffix}",
        dynamodb_endpoint_url=endpoint,
        rate_limit_per_minute=100_000,
        progress_max_per_s=0,
    )


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return generate_rsa_key_pair()


@pytest.fixture(scope="module")
def instant_demo() -> Iterator[None]:
    """The demo's simulated work takes no time (the same in both runtimes)."""

    async def no_wait(seconds: float) -> None:
        return None

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(streamer.demo, "_simulate_work", no_wait)
        yield


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def emulator_side(
    moto_endpoint: str,
    keys: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    instant_demo: None,
) -> AsyncIterator[EmulatorSide]:
    private_pem, public_pem = keys
    settings = dataclasses.replace(_fresh_tables("emu", moto_endpoint), jwt_public_key=public_pem)
    await create_tables(settings)
    config = EmulatorConfig(
        settings=settings,
        app=streamer.demo.app,
        port=0,
        http_port=0,
        state_dir=tmp_path_factory.mktemp("parity-state"),
        poll_interval_s=0.02,
        drain_timeout_s=2.0,
        create_tables=False,
    )
    try:
        async with Emulator(config) as emulator:
            side = EmulatorSide(emulator, private_pem)
            for user in USERS:
                await side.open(user)
            yield side
            await side.close()
    finally:
        await delete_tables(settings)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lambda_side(
    moto_endpoint: str, keys: tuple[str, str], instant_demo: None
) -> AsyncIterator[LambdaSide]:
    private_pem, public_pem = keys
    settings = _fresh_tables("lambda", moto_endpoint)
    await create_tables(settings)
    api = ManagementApi()
    api.start()
    environment = {
        "CONNECTIONS_TABLE": settings.connections_table,
        "REQUESTS_TABLE": settings.requests_table,
        "SUBSCRIPTIONS_TABLE": settings.subscriptions_table,
        "DYNAMODB_ENDPOINT_URL": moto_endpoint,
        "AWS_REGION": "us-east-1",
        "STREAMER_APP": "streamer.demo:app",
        "JWT_PUBLIC_KEY": public_pem,
        "WEBSOCKET_ENDPOINT": api.url,
        "PROGRESS_MAX_PER_SECOND": "0",
        "RATE_LIMIT_PER_MINUTE": "100000",
        "LOG_LEVEL": "WARNING",
    }
    side = LambdaSide(settings=settings, endpoint=moto_endpoint, private_pem=private_pem, api=api)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        await side.call(runtime.reset_for_tests)
        try:
            for user in USERS:
                await side.open(user)
            yield side
        finally:
            await side.call(runtime.reset_for_tests)
            side.pool.shutdown(wait=True)
            api.stop()
            await delete_tables(settings)


# -- the tests ---------------------------------------------------------------------------


def test_the_corpus_covers_every_action_kind_and_limit() -> None:
    cases = load_corpus()
    assert len(cases) >= 300
    assert len({c.name for c in cases}) == len(cases), "case names must be unique"
    sent_actions = {
        body["action"]
        for c in cases
        if c.kind != "binary"
        and isinstance(body := _loads_or_none(c.text), dict)
        and isinstance(body.get("action"), str)
    }
    assert (
        set(streamer.demo.app.actions) | {"ping", "status", "subscribe", "cancel"} <= sent_actions
    )
    sizes = {len(c.text.encode("utf-8")) for c in cases}
    assert {32 * 1024, 32 * 1024 + 1, 128 * 1024, 128 * 1024 + 1} <= sizes
    assert {c.kind for c in cases} == {"text", "fragmented", "binary"}
    assert {c.user for c in cases} == set(USERS)


def _loads_or_none(text: str) -> Any:
    try:
        body = json.loads(text)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.timeout(300)
async def test_every_frame_gets_the_same_bytes_from_the_emulator_and_from_lambda(
    emulator_side: EmulatorSide, lambda_side: LambdaSide
) -> None:
    differences: list[str] = []
    for case in load_corpus():
        # The two runtimes share nothing (own tables, own thread): run them side by side.
        on_emulator, on_lambda = await asyncio.gather(
            emulator_side.run(case), lambda_side.run(case)
        )
        if on_emulator != on_lambda:
            differences.append(f"{case.name}:\n  emulator {on_emulator}\n  lambda   {on_lambda}")
        elif case.expect is not None and _first(on_emulator) != case.expect:
            differences.append(
                f"{case.name}: both gave {_first(on_emulator)}, expected {case.expect}"
            )
    assert not differences, f"{len(differences)} cases differ:\n" + "\n".join(differences)
