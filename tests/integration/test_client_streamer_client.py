"""`StreamerClient` against a running emulator: answers, progress, errors, many
requests on one socket, heartbeat, and resuming after the socket drops."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import pytest

from emulator.testing import EmulatorHarness
from streamer.client import (
    ConnectionState,
    RequestTimeout,
    StreamerClient,
    StreamerConnectionError,
)
from streamer.errors import ErrorCode, StreamerError
from streamer.protocol import ProgressUpdate, Response, ServerMessage

if TYPE_CHECKING:
    from conftest import Steering

WAIT_S = 15.0


def _client(harness: EmulatorHarness, **options: Any) -> StreamerClient:
    return StreamerClient(harness.ws_url, token=harness.mint_token(), **options)


async def _drop_from_the_server(harness: EmulatorHarness, connection_id: str) -> None:
    """Close a socket the way API Gateway's management API does: DELETE @connections."""
    url = f"{harness.http_url}/@connections/{quote(connection_id, safe='')}"
    signed = harness.signed_headers("DELETE", url)
    async with aiohttp.ClientSession() as session, session.delete(url, headers=signed) as response:
        assert response.status == 204


async def test_sync_action_returns_its_data(emulator: EmulatorHarness) -> None:
    async with _client(emulator) as client:
        data = await client.request("echo", {"hello": "world"}, timeout=WAIT_S)
    assert data == {"echo": {"hello": "world"}}


async def test_async_action_reports_progress_in_order_then_returns_the_result(
    emulator: EmulatorHarness,
) -> None:
    seen: list[ProgressUpdate] = []
    async with _client(emulator) as client:
        result = await client.request(
            "count", {"steps": 5}, on_progress=seen.append, timeout=WAIT_S
        )
    assert result == {"steps": 5, "user": "user-1"}
    percentages = [update.percentage for update in seen]
    assert percentages == sorted(percentages)
    assert percentages[-1] == 100
    assert seen[-1].message == "step 5"


async def test_progress_callback_may_be_a_coroutine(emulator: EmulatorHarness) -> None:
    seen: list[float] = []

    async def record(update: ProgressUpdate) -> None:
        await asyncio.sleep(0)
        seen.append(update.percentage)

    async with _client(emulator) as client:
        await client.request("count", {"steps": 2}, on_progress=record, timeout=WAIT_S)
    assert seen[-1] == 100


async def test_unknown_action_raises_streamer_error_with_invalid_action(
    emulator: EmulatorHarness,
) -> None:
    async with _client(emulator) as client:
        with pytest.raises(StreamerError) as raised:
            await client.request("no_such_action", timeout=WAIT_S)
    assert raised.value.code is ErrorCode.INVALID_ACTION


async def test_invalid_payload_raises_validation_error_with_the_details(
    emulator: EmulatorHarness,
) -> None:
    async with _client(emulator) as client:
        with pytest.raises(StreamerError) as raised:
            await client.request("count", {"steps": 0}, timeout=WAIT_S)
    assert raised.value.code is ErrorCode.VALIDATION_ERROR
    assert isinstance(raised.value.details, list)
    assert raised.value.details[0]["loc"] == ["steps"]


async def test_concurrent_requests_share_one_socket(emulator: EmulatorHarness) -> None:
    async with _client(emulator) as client:
        answers = await asyncio.gather(
            *(client.request("count", {"steps": 3}, timeout=WAIT_S) for _ in range(6)),
            *(client.request("echo", {"n": n}, timeout=WAIT_S) for n in range(6)),
        )
        assert len(emulator.emulator.registry) == 1
    assert answers[:6] == [{"steps": 3, "user": "user-1"}] * 6
    assert answers[6:] == [{"echo": {"n": n}} for n in range(6)]


async def test_ping_reports_this_connection_id(emulator: EmulatorHarness) -> None:
    async with _client(emulator) as client:
        connection_id = await client.ping()
        assert [socket.connection_id for socket in emulator.emulator.registry] == [connection_id]
        assert client.connection_id == connection_id


async def test_heartbeat_sends_ping_on_its_interval(emulator: EmulatorHarness) -> None:
    pongs = 0
    two_pongs = asyncio.Event()

    def tap(message: ServerMessage) -> None:
        nonlocal pongs
        if isinstance(message, Response) and isinstance(message.data, dict):
            pongs += bool(message.data.get("pong"))
            if pongs >= 2:
                two_pongs.set()

    async with _client(emulator, heartbeat_interval_s=0.05, on_message=tap):
        async with asyncio.timeout(WAIT_S):
            await two_pongs.wait()


async def test_status_and_cancel_of_a_running_request(
    emulator: EmulatorHarness, steering: Steering
) -> None:
    async with _client(emulator) as client:
        running = asyncio.create_task(
            client.request("until_cancelled", request_id="job-1", timeout=WAIT_S)
        )
        async with asyncio.timeout(WAIT_S):
            await steering.started_event("job-1").wait()
        assert (await client.status("job-1")).status == "PROCESSING"

        answer = await client.cancel("job-1")

        assert answer.status == "CANCELLED"
        with pytest.raises(StreamerError) as raised:
            await running
        assert raised.value.code is ErrorCode.CANCELLED
        assert (await client.status("job-1")).status == "CANCELLED"


async def test_status_of_an_unknown_request_is_not_found(emulator: EmulatorHarness) -> None:
    async with _client(emulator) as client:
        with pytest.raises(StreamerError) as raised:
            await client.status("never-sent")
    assert raised.value.code is ErrorCode.NOT_FOUND


async def test_a_refused_token_raises_a_connection_error_with_401(
    emulator: EmulatorHarness,
) -> None:
    client = StreamerClient(emulator.ws_url, token="not-a-jwt")
    with pytest.raises(StreamerConnectionError) as raised:
        await client.connect()
    assert raised.value.status_code == 401
    assert raised.value.code is ErrorCode.UNAUTHORIZED
    assert "not-a-jwt" not in raised.value.message
    assert client.state is ConnectionState.CLOSED


async def test_the_token_may_travel_in_the_authorization_header(
    emulator: EmulatorHarness,
) -> None:
    async with _client(emulator, token_in="header") as client:
        assert await client.request("echo", {}, timeout=WAIT_S) == {"echo": {}}


async def test_client_timeout_raises_request_timeout_naming_the_request(
    emulator: EmulatorHarness, steering: Steering
) -> None:
    async with _client(emulator) as client:
        with pytest.raises(RequestTimeout) as raised:
            await client.request("wait_gate", {"gate": "never"}, request_id="slow", timeout=0.2)
    steering.gate("never").set()
    assert raised.value.code is ErrorCode.TIMEOUT
    assert raised.value.request_id == "slow"


async def test_completion_while_disconnected_is_recovered_by_subscribe(
    emulator: EmulatorHarness, steering: Steering
) -> None:
    """The request finishes while the socket is down; after the reconnect the
    `subscribe` snapshot delivers the result."""
    may_reconnect = asyncio.Event()
    connects = 0

    async def token() -> str:
        nonlocal connects
        connects += 1
        if connects > 1:
            await may_reconnect.wait()
        return emulator.mint_token()

    first_progress = asyncio.Event()
    client = StreamerClient(emulator.ws_url, token=token, backoff_initial_s=0.01)
    async with client:
        connection_id = await client.ping()
        pending = asyncio.create_task(
            client.request(
                "wait_gate",
                {"gate": "g"},
                request_id="resume-me",
                on_progress=lambda _: first_progress.set(),
                timeout=WAIT_S,
            )
        )
        async with asyncio.timeout(WAIT_S):
            await first_progress.wait()

        await _drop_from_the_server(emulator, connection_id)
        steering.gate("g").set()
        async with _client(emulator) as observer:
            # Another connection of the same user sees it finish.
            assert await observer.follow("resume-me", timeout=WAIT_S) == {"gate": "g"}
        may_reconnect.set()

        assert await pending == {"gate": "g"}
        assert client.reconnects == 1
        assert await client.ping() != connection_id


async def test_progress_after_a_reconnect_reaches_the_resumed_request(
    emulator: EmulatorHarness, steering: Steering
) -> None:
    """Dropped mid-request, the client resubscribes and gets the rest live."""
    seen: list[float] = []
    first_progress = asyncio.Event()
    resubscribed = asyncio.Event()

    def record(update: ProgressUpdate) -> None:
        seen.append(update.percentage)
        first_progress.set()

    def tap(message: ServerMessage) -> None:
        data = message.data if isinstance(message, Response) else None
        if isinstance(data, dict) and data.get("subscribed"):
            resubscribed.set()

    async with _client(emulator, backoff_initial_s=0.01, on_message=tap) as client:
        connection_id = await client.ping()
        pending = asyncio.create_task(
            client.request(
                "wait_gate", {"gate": "h"}, request_id="live", on_progress=record, timeout=WAIT_S
            )
        )
        async with asyncio.timeout(WAIT_S):
            await first_progress.wait()
        await _drop_from_the_server(emulator, connection_id)
        async with asyncio.timeout(WAIT_S):
            await resubscribed.wait()
        steering.gate("h").set()

        assert await pending == {"gate": "h"}
        assert client.reconnects == 1
    assert seen == [10, 90]


async def test_requests_after_close_fail_with_a_connection_error(
    emulator: EmulatorHarness,
) -> None:
    client = _client(emulator)
    async with client:
        pass
    with pytest.raises(StreamerConnectionError):
        await client.request("echo", {})


async def test_an_oversized_payload_is_refused_before_it_is_sent(
    emulator: EmulatorHarness,
) -> None:
    """API Gateway would close the socket (1009); the client refuses it locally."""
    async with _client(emulator) as client:
        with pytest.raises(StreamerError) as raised:
            await client.request("echo", {"blob": "x" * 200_000})
        assert raised.value.code is ErrorCode.PAYLOAD_TOO_LARGE
        assert await client.request("echo", {}, timeout=WAIT_S) == {"echo": {}}
        assert client.reconnects == 0


async def test_a_refused_reconnect_fails_the_waiting_requests(
    emulator: EmulatorHarness, steering: Steering
) -> None:
    tokens = iter([emulator.mint_token(), "revoked"])
    first_progress = asyncio.Event()
    client = StreamerClient(emulator.ws_url, token=lambda: next(tokens), backoff_initial_s=0.01)
    async with client:
        connection_id = await client.ping()
        pending = asyncio.create_task(
            client.request("wait_gate", {"gate": "r"}, on_progress=lambda _: first_progress.set())
        )
        async with asyncio.timeout(WAIT_S):
            await first_progress.wait()
        await _drop_from_the_server(emulator, connection_id)

        with pytest.raises(StreamerConnectionError) as raised:
            await pending
        steering.gate("r").set()
        assert raised.value.status_code == 401
        assert client.state is ConnectionState.CLOSED


async def test_a_token_function_failing_on_reconnect_fails_the_waiting_requests(
    emulator: EmulatorHarness, steering: Steering
) -> None:
    """A token function that raises while reconnecting closes the client and the
    waiting request raises, instead of waiting forever."""
    calls = 0

    def token() -> str:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("the token service is down")
        return emulator.mint_token()

    first_progress = asyncio.Event()
    client = StreamerClient(
        emulator.ws_url, token=token, backoff_initial_s=0.01, max_reconnect_attempts=2
    )
    async with client:
        connection_id = await client.ping()
        pending = asyncio.create_task(
            client.request("wait_gate", {"gate": "t"}, on_progress=lambda _: first_progress.set())
        )
        async with asyncio.timeout(WAIT_S):
            await first_progress.wait()
        await _drop_from_the_server(emulator, connection_id)

        with pytest.raises(StreamerConnectionError) as raised:
            async with asyncio.timeout(WAIT_S):
                await pending
        steering.gate("t").set()
        assert client.state is ConnectionState.CLOSED
        assert calls == 3
        cause = raised.value.__cause__
        assert isinstance(cause, StreamerConnectionError)
        assert isinstance(cause.__cause__, RuntimeError)
