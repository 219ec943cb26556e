"""The production notifier against a management API that misbehaves, over a real
HTTP socket: Gone is never retried and cleans up, throttling and 5xx are retried
a bounded number of times, and the request still completes."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from core_harness import Core

from adapters.apigateway import (
    ApiGatewayNotifier,
    DeliveryUnavailable,
    RetryPolicy,
    open_management_client,
)
from streamer import Progress, Request, Streamer
from streamer.errors import ConnectionGone
from streamer.models import ConnectionId, RequestStatus
from streamer.processor import Outcome
from streamer.protocol import Response
from streamer.settings import Settings
from streamer.testing import DEFAULT_START

_ERRORS = {
    410: "GoneException",
    429: "LimitExceededException",
    500: "InternalServerErrorException",
    503: "ServiceUnavailableException",
}


class FakeManagementApi:
    """`POST /{stage}/@connections/{id}` answering from a per-connection script."""

    def __init__(self) -> None:
        self.posts: Counter[str] = Counter()
        self.bodies: dict[str, list[Any]] = {}
        self.scripts: dict[str, list[int]] = {}
        """Statuses to answer, in order; the last one repeats."""

    async def handle(self, request: web.Request) -> web.Response:
        connection_id = request.match_info["id"]
        self.posts[connection_id] += 1
        script = self.scripts.get(connection_id, [200])
        status = script.pop(0) if len(script) > 1 else script[0]
        if status == 200:
            self.bodies.setdefault(connection_id, []).append(json.loads(await request.read()))
            return web.Response(status=200)
        return web.json_response(
            {"message": _ERRORS[status]},
            status=status,
            headers={"x-amzn-ErrorType": _ERRORS[status]},
        )


@pytest.fixture
async def management_api() -> AsyncIterator[tuple[FakeManagementApi, str]]:
    api = FakeManagementApi()
    application = web.Application()
    application.router.add_post("/{stage}/@connections/{id}", api.handle)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield api, f"http://127.0.0.1:{port}/prod"
    finally:
        await runner.cleanup()


@pytest.fixture
async def notifier(
    management_api: tuple[FakeManagementApi, str],
) -> AsyncIterator[tuple[ApiGatewayNotifier, FakeManagementApi, list[float]]]:
    api, endpoint = management_api
    settings = dataclasses.replace(Settings(), websocket_endpoint=endpoint)
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with open_management_client(settings) as client:
        yield (
            ApiGatewayNotifier(client, retry=RetryPolicy(max_attempts=4), sleep=sleep),
            api,
            sleeps,
        )


def _hello() -> Response:
    return Response(timestamp=DEFAULT_START, request_id="r", data={"hello": 1})


async def test_gone_is_not_retried(
    notifier: tuple[ApiGatewayNotifier, FakeManagementApi, list[float]],
) -> None:
    sender, api, sleeps = notifier
    api.scripts["c1"] = [410]

    with pytest.raises(ConnectionGone):
        await sender.send(ConnectionId("c1"), _hello())

    assert api.posts["c1"] == 1
    assert sleeps == []


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_throttling_and_server_errors_are_retried_a_bounded_number_of_times(
    notifier: tuple[ApiGatewayNotifier, FakeManagementApi, list[float]], status: int
) -> None:
    sender, api, sleeps = notifier
    api.scripts["c1"] = [status]

    with pytest.raises(DeliveryUnavailable):
        await sender.send(ConnectionId("c1"), _hello())

    assert api.posts["c1"] == 4
    assert len(sleeps) == 3
    assert all(0 <= s <= 1.0 for s in sleeps)


async def test_a_transient_failure_that_clears_is_delivered_once(
    notifier: tuple[ApiGatewayNotifier, FakeManagementApi, list[float]],
) -> None:
    sender, api, _ = notifier
    api.scripts["c1"] = [503, 429, 200]

    await sender.send(ConnectionId("c1"), _hello())

    assert api.posts["c1"] == 3
    assert [b["data"] for b in api.bodies["c1"]] == [{"hello": 1}]


async def test_a_request_completes_whatever_the_management_api_answers(
    notifier: tuple[ApiGatewayNotifier, FakeManagementApi, list[float]],
) -> None:
    """Three followers: one gone (cleaned up), one failing with 5xx for good (kept,
    skipped), one fine (gets every message once)."""
    sender, api, _ = notifier
    app = Streamer()

    @app.action("work", mode="async", timeout=30)
    async def work(req: Request[dict[str, Any]], progress: Progress) -> str:
        await progress.report(50, "half")
        return "done"

    rig = Core(app=app, notifier=sender)
    origin = await rig.connect("gone")
    for follower in ("broken", "fine"):
        await rig.connect(follower)
    api.scripts.update({"gone": [410], "broken": [500], "fine": [200]})
    ack = await rig.send(origin, "work", {}, id="r1")
    assert ack["type"] == "acknowledgment"
    for follower in ("broken", "fine"):
        connection = rig.connections.records[ConnectionId(follower)]
        await rig.send(connection, "subscribe", {"request_id": "r1"}, id=f"s-{follower}")

    outcome = await rig.processor.run(rig.key("r1"))

    assert outcome is Outcome.COMPLETED
    assert rig.store.items[rig.key("r1")].status is RequestStatus.COMPLETED
    assert ConnectionId("gone") not in rig.connections.records
    assert ConnectionId("broken") in rig.connections.records
    assert api.posts["gone"] == 1, "posted again to a gone connection"
    assert api.posts["broken"] == 4 * 2, "progress and complete: four tries each"
    assert [b["type"] for b in api.bodies["fine"]] == ["progress", "complete"]
