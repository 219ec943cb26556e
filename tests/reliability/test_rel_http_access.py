"""The HTTP side answers only whom it should, over real sockets: the management API
takes SigV4 signed by the dev credentials (boto3 and aioboto3 work, with and without
a stage), anything else is 403 and reaches no socket; `Host` and `Origin` are checked
(no DNS rebinding); the console's API and dev tokens answer this machine only."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import boto3
import botocore.auth
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from conftest import EmulatorStarter
from websockets.asyncio.client import ClientConnection

from adapters.apigateway import ApiGatewayNotifier, open_management_client
from adapters.sigv4 import DevCredentials
from emulator.testing import EmulatorHarness, recv_json, request
from streamer.models import ConnectionId


def _url(harness: EmulatorHarness, connection_id: str, stage: str = "") -> str:
    return f"{harness.http_url}{stage}/@connections/{quote(connection_id, safe='')}"


async def _connection_id(ws: ClientConnection) -> str:
    return str((await request(ws, {"action": "ping"}))["data"]["connection_id"])


async def _nothing_was_delivered(ws: ClientConnection) -> bool:
    """True when the next message the socket gets is the answer to a fresh ping."""
    reply = await request(ws, {"id": "probe", "action": "ping"})
    return reply.get("request_id") == "probe"


@contextlib.contextmanager
def _signing_clock(at: datetime) -> Iterator[None]:
    """botocore signs as if it were `at`."""
    saved = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda: at.replace(tzinfo=None)  # type: ignore[assignment]
    try:
        yield
    finally:
        botocore.auth.get_current_datetime = saved  # type: ignore[assignment]


def _boto3_client(harness: EmulatorHarness, endpoint: str, **credentials: Any) -> Any:
    dev = harness.emulator.management_credentials
    assert dev is not None
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=endpoint,
        region_name="us-east-1",
        **(credentials or dev.client_kwargs()),
    )


async def test_unsigned_and_badly_signed_management_calls_are_refused_and_reach_no_socket(
    emulator: EmulatorHarness,
) -> None:
    async with emulator.connect() as ws, aiohttp.ClientSession() as http:
        connection_id = await _connection_id(ws)
        url = _url(emulator, connection_id)
        statuses: dict[str, tuple[int, str]] = {}

        async def call(name: str, method: str, body: str, headers: dict[str, str]) -> None:
            async with http.request(method, url, data=body, headers=headers) as resp:
                statuses[name] = (resp.status, resp.headers.get("x-amzn-ErrorType", ""))

        for method in ("POST", "GET", "DELETE"):
            await call(f"unsigned {method}", method, "forged", {})
        signed = emulator.signed_headers("POST", url, "genuine")
        await call("body changed after signing", "POST", "forged", signed)
        await call("other path", "POST", "forged", emulator.signed_headers("POST", url + "x", ""))
        wrong = {**signed, "Authorization": signed["Authorization"][:-4] + "0000"}
        await call("signature altered", "POST", "genuine", wrong)
        with _signing_clock(datetime.now(UTC) - timedelta(minutes=10)):
            stale = emulator.signed_headers("POST", url, "genuine")
        await call("signed ten minutes ago", "POST", "genuine", stale)
        other = emulator.signed_headers("POST", url, "genuine")
        other["Authorization"] = other["Authorization"].replace(
            emulator.emulator.management_credentials.access_key_id,  # type: ignore[union-attr]
            "AKIAOTHEROTHEROTHER0",
        )
        await call("unknown access key", "POST", "genuine", other)
        untouched = await _nothing_was_delivered(ws)

    assert statuses == {
        "unsigned POST": (403, "MissingAuthenticationTokenException"),
        "unsigned GET": (403, "MissingAuthenticationTokenException"),
        "unsigned DELETE": (403, "MissingAuthenticationTokenException"),
        "body changed after signing": (403, "InvalidSignatureException"),
        "other path": (403, "InvalidSignatureException"),
        "signature altered": (403, "InvalidSignatureException"),
        "signed ten minutes ago": (403, "InvalidSignatureException"),
        "unknown access key": (403, "UnrecognizedClientException"),
    }
    assert untouched, "a refused call reached the socket or closed it"


@pytest.mark.parametrize("stage", ["", "/prod"], ids=["no-stage", "stage"])
async def test_boto3_with_the_dev_credentials_posts_reads_and_deletes(
    emulator: EmulatorHarness, stage: str
) -> None:
    endpoint = f"{emulator.http_url}{stage}"
    client = _boto3_client(emulator, endpoint)
    unsigned = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED),
    )
    strange = _boto3_client(
        emulator, endpoint, aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="nope"
    )
    try:
        async with emulator.connect() as ws:
            connection_id = await _connection_id(ws)
            await asyncio.to_thread(
                client.post_to_connection, ConnectionId=connection_id, Data=b'{"n": 1}'
            )
            delivered = await recv_json(ws)
            info = await asyncio.to_thread(client.get_connection, ConnectionId=connection_id)
            refused = []
            for other in (unsigned, strange):
                with pytest.raises(ClientError) as caught:
                    await asyncio.to_thread(
                        other.post_to_connection, ConnectionId=connection_id, Data=b"x"
                    )
                refused.append(caught.value.response["ResponseMetadata"]["HTTPStatusCode"])
            await asyncio.to_thread(client.delete_connection, ConnectionId=connection_id)
            async with asyncio.timeout(10):
                await ws.wait_closed()
    finally:
        for each in (client, unsigned, strange):
            each.close()
    assert delivered == {"n": 1}
    assert info["Identity"]["SourceIp"] == "127.0.0.1"
    assert refused == [403, 403]


@pytest.mark.parametrize("stage", ["", "/prod"], ids=["no-stage", "stage"])
async def test_the_production_notifier_signs_with_the_credentials_in_the_state_folder(
    emulator: EmulatorHarness, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    """aioboto3 through `open_management_client`, as the Lambda functions use it."""
    monkeypatch.setenv("EMULATOR_STATE_DIR", str(emulator.emulator.config.state_dir))
    settings = emulator.emulator.settings
    async with (
        emulator.connect() as ws,
        open_management_client(settings, endpoint=f"{emulator.http_url}{stage}") as client,
    ):
        connection_id = ConnectionId(await _connection_id(ws))
        info = await ApiGatewayNotifier(client).get_connection(connection_id)
        assert await ApiGatewayNotifier(client).delete_connection(connection_id)
        async with asyncio.timeout(10):
            await ws.wait_closed()
    assert info.source_ip == "127.0.0.1"


async def test_with_signatures_off_unsigned_calls_work_and_the_start_says_so(
    start_emulator: EmulatorStarter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="emulator")
    async with start_emulator(verify_signatures=False) as harness, harness.connect() as ws:
        connection_id = await _connection_id(ws)
        async with (
            aiohttp.ClientSession() as http,
            http.post(_url(harness, connection_id), data="plain") as resp,
        ):
            status = resp.status
        async with asyncio.timeout(10):
            delivered = await ws.recv()
    assert (status, delivered) == (200, "plain")
    assert any("does not check signatures" in r.getMessage() for r in caplog.records)


async def test_shared_credentials_given_to_the_emulator_are_the_ones_it_accepts(
    start_emulator: EmulatorStarter,
) -> None:
    shared = DevCredentials("AKIASHAREDSHAREDSHAR", uuid.uuid4().hex)
    async with start_emulator(management_credentials=shared) as harness:
        assert harness.emulator.management_credentials == shared
        client = _boto3_client(harness, harness.http_url, **shared.client_kwargs())
        try:
            with pytest.raises(ClientError) as caught:
                await asyncio.to_thread(client.get_connection, ConnectionId="AAAAAAAAAAAAAAAA")
        finally:
            client.close()
    assert caught.value.response["Error"]["Code"] == "GoneException"


# -- Host, Origin and callers ----------------------------------------------------------


async def test_a_foreign_host_is_refused_everywhere_so_dns_rebinding_reads_nothing(
    emulator: EmulatorHarness,
) -> None:
    """A page of `evil.example` rebound to 127.0.0.1 sends `Host: evil.example:PORT`."""
    port = emulator.emulator.http.port  # type: ignore[union-attr]
    results: dict[tuple[str, str], int] = {}
    async with aiohttp.ClientSession() as http:
        for host in (f"evil.example:{port}", "evil.example", f"localhost:{port}", "127.0.0.1"):
            for path in ("/health", "/api/dev-token", "/api/connections", "/"):
                async with http.get(f"{emulator.http_url}{path}", headers={"Host": host}) as resp:
                    results[(host, path)] = resp.status
    foreign = {k: v for k, v in results.items() if k[0].startswith("evil")}
    served = {k: v for k, v in results.items() if not k[0].startswith("evil")}
    assert set(foreign.values()) == {403}
    assert served[(f"localhost:{port}", "/health")] == 200
    assert served[("127.0.0.1", "/api/connections")] == 200
    assert served[(f"localhost:{port}", "/")] == 200


async def test_the_console_api_refuses_a_foreign_origin(emulator: EmulatorHarness) -> None:
    port = emulator.emulator.http.port  # type: ignore[union-attr]
    statuses = {}
    async with aiohttp.ClientSession() as http:
        for origin in (
            "http://evil.example",
            f"http://evil.example:{port}",
            "http://localhost:8080",
            "null",
            f"http://localhost:{port}",
            f"http://127.0.0.1:{port}",
        ):
            url = f"{emulator.http_url}/api/connections"
            async with http.get(url, headers={"Origin": origin}) as resp:
                statuses[origin] = resp.status
    assert statuses == {
        "http://evil.example": 403,
        f"http://evil.example:{port}": 403,
        "http://localhost:8080": 403,
        "null": 403,
        f"http://localhost:{port}": 200,
        f"http://127.0.0.1:{port}": 200,
    }


def _outside_address() -> str:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent
        return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


async def test_dev_tokens_and_the_connection_list_answer_loopback_callers_only(
    start_emulator: EmulatorStarter,
) -> None:
    outside = _outside_address()
    if outside.startswith("127."):
        pytest.skip("this machine has no non-loopback address")
    async with start_emulator(host="0.0.0.0") as harness, aiohttp.ClientSession() as http:
        port = harness.emulator.http.port  # type: ignore[union-attr]
        statuses = {}
        for path in ("/api/dev-token", "/api/connections", "/api/actions", "/health"):
            async with http.get(f"http://{outside}:{port}{path}") as resp:
                statuses[("outside", path)] = resp.status
            async with http.get(f"http://127.0.0.1:{port}{path}") as resp:
                statuses[("loopback", path)] = resp.status
    assert statuses[("outside", "/api/dev-token")] == 403
    assert statuses[("outside", "/api/connections")] == 403
    assert statuses[("outside", "/api/actions")] == 403
    assert statuses[("outside", "/health")] == 200
    assert statuses[("loopback", "/api/connections")] == 200
    assert statuses[("loopback", "/health")] == 200
