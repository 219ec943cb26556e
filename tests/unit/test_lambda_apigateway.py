"""The management-API notifier: error mapping at the edge, retries, wire shapes."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from botocore.exceptions import ClientError, EndpointConnectionError

from adapters.apigateway import (
    HANDLED_ERROR_CODES,
    ApiGatewayNotifier,
    DeliveryUnavailable,
    ErrorKind,
    RetryPolicy,
    management_endpoint,
    map_client_errors,
    open_management_client,
)
from streamer.errors import ConnectionGone, ErrorCode, StreamerError
from streamer.models import ConnectionId
from streamer.protocol import Response
from streamer.settings import Settings

CID = ConnectionId("WyHPAfymhcwCENw+/x0=")


def _client_error(code: str, status: int) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "x"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "PostToConnection")


_EXPECTED_ERROR = {
    ErrorKind.GONE: ConnectionGone,
    ErrorKind.TOO_LARGE: StreamerError,
    ErrorKind.TRANSIENT: DeliveryUnavailable,
    ErrorKind.FATAL: StreamerError,
}
_EXPECTED_CODE = {
    ErrorKind.GONE: ErrorCode.NOT_FOUND,
    ErrorKind.TOO_LARGE: ErrorCode.PAYLOAD_TOO_LARGE,
    ErrorKind.TRANSIENT: ErrorCode.INTERNAL_ERROR,
    ErrorKind.FATAL: ErrorCode.INTERNAL_ERROR,
}


@pytest.mark.parametrize(("code", "kind"), sorted(HANDLED_ERROR_CODES.items()))
def test_every_handled_error_code_is_mapped_to_a_core_error(code: str, kind: ErrorKind) -> None:
    """Each AWS code becomes the core error of its kind; no botocore type escapes."""
    with pytest.raises(StreamerError) as caught, map_client_errors(CID):
        raise _client_error(code, 400)
    assert type(caught.value) is _EXPECTED_ERROR[kind]
    assert caught.value.code is _EXPECTED_CODE[kind]
    assert isinstance(caught.value.__cause__, ClientError)


def test_the_management_api_documents_no_error_code_left_unhandled() -> None:
    """Every error shape botocore's model declares for the three operations is in the table."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("apigatewaymanagementapi")
    declared = {
        shape.name
        for name in model.operation_names
        for shape in model.operation_model(name).error_shapes
    }
    assert declared <= set(HANDLED_ERROR_CODES)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (410, ConnectionGone),
        (413, StreamerError),
        (429, DeliveryUnavailable),
        (500, DeliveryUnavailable),
        (503, DeliveryUnavailable),
        (400, StreamerError),
    ],
)
def test_an_error_without_a_known_code_is_mapped_by_its_status(
    status: int, expected: type[StreamerError]
) -> None:
    with pytest.raises(StreamerError) as caught, map_client_errors(CID):
        raise _client_error(str(status), status)
    assert type(caught.value) is expected


def test_gone_names_the_connection() -> None:
    with pytest.raises(ConnectionGone) as caught, map_client_errors(CID):
        raise _client_error("GoneException", 410)
    assert caught.value.connection_id == CID


def test_a_network_error_is_transient() -> None:
    with pytest.raises(DeliveryUnavailable), map_client_errors(CID):
        raise EndpointConnectionError(endpoint_url="https://example.invalid")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("wss://abc.execute-api.us-east-1.amazonaws.com/prod", "https://abc.execute-api.us-east-1.amazonaws.com/prod"),
        ("https://abc.execute-api.us-east-1.amazonaws.com/prod/", "https://abc.execute-api.us-east-1.amazonaws.com/prod"),
        ("ws://127.0.0.1:3002", "http://127.0.0.1:3002"),
        ("http://127.0.0.1:3002", "http://127.0.0.1:3002"),
    ],
)  # fmt: skip
def test_the_management_endpoint_is_the_https_form_of_the_websocket_url(
    given: str, expected: str
) -> None:
    assert management_endpoint(given) == expected


def test_full_jitter_stays_under_an_exponential_cap() -> None:
    policy = RetryPolicy(max_attempts=6, base_delay_s=0.1, max_delay_s=0.5)
    rng = random.Random(7)
    for retry, cap in enumerate([0.1, 0.2, 0.4, 0.5, 0.5]):
        assert all(0.0 <= policy.delay_s(retry, rng) <= cap for _ in range(50))


# --- against a real HTTP server speaking the management API --------------------------


@dataclass
class ManagementApiStub:
    """A local `@connections` server: scripted statuses, recorded posts."""

    url: str = ""
    posts: list[tuple[str, str, dict[str, object]]] = field(default_factory=list)
    script: list[tuple[int, str]] = field(default_factory=list)
    """Responses to hand out first, as (status, x-amzn-ErrorType); then 200."""
    calls: int = 0
    deleted: list[str] = field(default_factory=list)

    def _scripted(self) -> web.Response | None:
        self.calls += 1
        if not self.script:
            return None
        status, error_type = self.script.pop(0)
        headers = {"x-amzn-ErrorType": error_type} if error_type else {}
        return web.json_response({"message": None}, status=status, headers=headers)

    async def post(self, request: web.Request) -> web.Response:
        scripted = self._scripted()
        if scripted is not None:
            return scripted
        body = json.loads(await request.read())
        self.posts.append((request.match_info["stage"], request.match_info["id"], body))
        return web.Response(status=200)

    async def get(self, request: web.Request) -> web.Response:
        scripted = self._scripted()
        if scripted is not None:
            return scripted
        return web.json_response(
            {
                "connectedAt": "2026-11-25T08:00:00.000Z",
                "identity": {"sourceIp": "192.0.2.1", "userAgent": "test-agent"},
                "lastActiveAt": "2026-11-25T08:01:00.000Z",
            }
        )

    async def delete(self, request: web.Request) -> web.Response:
        scripted = self._scripted()
        if scripted is not None:
            return scripted
        self.deleted.append(request.match_info["id"])
        return web.Response(status=204)


@pytest.fixture
async def stub() -> AsyncIterator[ManagementApiStub]:
    stub = ManagementApiStub()
    app = web.Application()
    path = "/{stage}/@connections/{id}"
    app.router.add_post(path, stub.post)
    app.router.add_get(path, stub.get)
    app.router.add_delete(path, stub.delete)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    stub.url = f"http://127.0.0.1:{port}/prod"
    try:
        yield stub
    finally:
        await runner.cleanup()


@dataclass
class RecordedSleeps:
    waits: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
async def notifier(
    stub: ManagementApiStub,
) -> AsyncIterator[tuple[ApiGatewayNotifier, RecordedSleeps]]:
    settings = dataclasses.replace(Settings(), websocket_endpoint=stub.url, aws_region="us-east-1")
    sleeps = RecordedSleeps()
    async with open_management_client(settings) as client:
        yield (
            ApiGatewayNotifier(
                client, retry=RetryPolicy(max_attempts=3), sleep=sleeps, rng=random.Random(1)
            ),
            sleeps,
        )


def _pong() -> Response:
    return Response(
        timestamp=datetime(2026, 11, 25, 8, 0, tzinfo=UTC), request_id="r1", data={"pong": True}
    )


async def test_send_posts_the_encoded_message_under_the_stage(
    stub: ManagementApiStub, notifier: tuple[ApiGatewayNotifier, RecordedSleeps]
) -> None:
    """The endpoint's stage path is kept and the id with `+/=` arrives intact."""
    await notifier[0].send(CID, _pong())
    assert stub.posts == [
        (
            "prod",
            CID,
            {
                "type": "response",
                "request_id": "r1",
                "success": True,
                "data": {"pong": True},
                "timestamp": "2026-11-25T08:00:00.000Z",
            },
        )
    ]


async def test_send_to_a_gone_connection_raises_connection_gone(
    stub: ManagementApiStub, notifier: tuple[ApiGatewayNotifier, RecordedSleeps]
) -> None:
    stub.script = [(410, "GoneException")]
    with pytest.raises(ConnectionGone):
        await notifier[0].send(CID, _pong())
    assert stub.calls == 1


async def test_a_refused_oversized_post_is_payload_too_large_without_retry(
    stub: ManagementApiStub, notifier: tuple[ApiGatewayNotifier, RecordedSleeps]
) -> None:
    stub.script = [(413, "PayloadTooLargeException")]
    with pytest.raises(StreamerError) as caught:
        await notifier[0].send(CID, _pong())
    assert caught.value.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert stub.calls == 1


async def test_throttling_is_retried_with_backoff_then_delivered(
    stub: ManagementApiStub, notifier: tuple[ApiGatewayNotifier, RecordedSleeps]
) -> None:
    stub.script = [(429, "LimitExceededException"), (503, "")]
    await notifier[0].send(CID, _pong())
    assert stub.calls == 3
    assert len(stub.posts) == 1
    assert len(notifier[1].waits) == 2


async def test_persistent_5xx_gives_up_after_the_bounded_attempts_as_internal_error(
    stub: ManagementApiStub, notifier: tuple[ApiGatewayNotifier, RecordedSleeps]
) -> None:
    stub.script = [(500, "InternalServerError")] * 5
    with pytest.raises(DeliveryUnavailable) as caught:
        await notifier[0].send(CID, _pong())
    assert caught.value.code is ErrorCode.INTERNAL_ERROR
    assert stub.calls == 3
    assert len(notifier[1].waits) == 2


async def test_get_connection_reads_identity_and_times(
    notifier: tuple[ApiGatewayNotifier, RecordedSleeps],
) -> None:
    info = await notifier[0].get_connection(CID)
    assert (info.source_ip, info.user_agent) == ("192.0.2.1", "test-agent")
    assert info.connected_at == datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


async def test_delete_connection_is_idempotent(
    stub: ManagementApiStub, notifier: tuple[ApiGatewayNotifier, RecordedSleeps]
) -> None:
    assert await notifier[0].delete_connection(CID) is True
    stub.script = [(410, "GoneException")]
    assert await notifier[0].delete_connection(CID) is False
    assert stub.deleted == [CID]
