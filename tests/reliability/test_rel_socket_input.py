"""Bad input over real sockets: hypothesis frames to the emulator's WebSocket API
(one typed reply each, or the close API Gateway gives: 1003 for a binary frame,
1009 over 32 KB; the server and a second connection unaffected) and
arbitrary paths, methods and bodies to its `@connections` API (never a 5xx)."""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from conftest import EmulatorStarter
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from rel_support import KNOWN_CODES, REPLY_TYPES, SOAK, SOCKET_EXAMPLES, frames
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from yarl import URL

from emulator.testing import EmulatorHarness, recv_json, request

_EXAMPLES = SOCKET_EXAMPLES * (5 if SOAK else 1)
_FRAME_LIMIT_BYTES = 32 * 1024
_MAX_BYTES = 128 * 1024


class Session:
    """An attacker's socket (reopened when the server closes it) and a bystander."""

    def __init__(self, harness: EmulatorHarness, stack: AsyncExitStack) -> None:
        self.harness = harness
        self.stack = stack
        self.attacker: ClientConnection | None = None
        self.bystander: ClientConnection | None = None
        self.acked: set[str] = set()
        self.sentinel = 0

    async def open(self) -> None:
        self.bystander = await self.stack.enter_async_context(
            self.harness.connect("bystander", "tenant-1")
        )
        await self.reopen()

    async def reopen(self) -> None:
        token = self.harness.mint_token("mallory", "tenant-evil")
        self.attacker = await self.stack.enter_async_context(
            connect(f"{self.harness.ws_url}/?Authorization={token}", max_size=None)
        )

    def is_push(self, message: dict[str, Any]) -> bool:
        """Progress and outcomes of requests this session had acknowledged."""
        return message.get("request_id") in self.acked and message["type"] in (
            "progress",
            "complete",
            "error",
        )

    async def replies_to(self, frame: str | bytes) -> list[dict[str, Any]] | int:
        """Every reply to `frame` (pushes left out), or the close code when the
        server closed the socket instead (1003 or 1009)."""
        assert self.attacker is not None
        try:
            await self.attacker.send(frame)
            first = await self._next_reply()
            self.sentinel += 1
            sentinel = f"sentinel-{self.sentinel}"
            await self.attacker.send(json.dumps({"id": sentinel, "action": "ping"}))
            replies = [first]
            async with asyncio.timeout(10):
                while True:
                    message = await self._next_reply()
                    if message.get("request_id") == sentinel:
                        return replies
                    replies.append(message)
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else None
            if code not in (1003, 1009):
                raise AssertionError(f"socket closed with {code}, not 1003/1009") from closed
            await self.reopen()
            return code

    async def _next_reply(self) -> dict[str, Any]:
        assert self.attacker is not None
        while True:
            message = await recv_json(self.attacker, timeout_s=10)
            if not self.is_push(message):
                if message["type"] == "acknowledgment":
                    self.acked.add(message["request_id"])
                return message


def _sendable(frame: str | bytes) -> bool:
    if isinstance(frame, bytes):
        return True
    try:
        frame.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@pytest.fixture
async def session(start_emulator: EmulatorStarter) -> Any:
    async with (
        start_emulator(app="streamer.demo:app", settings={"rate_limit_per_minute": 0}) as harness,
        AsyncExitStack() as stack,
    ):
        opened = Session(harness, stack)
        await opened.open()
        yield opened


@settings(
    max_examples=_EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(frame=frames)
@example(frame='{"action": "echo", "payload": {"x": "\\ud800"}}')
@example(frame='{"action": "echo_async", "id": "a1", "payload": {"x": "\\udfff"}}')
@example(frame=b"\x00\xff")
@example(frame="[" * 100_000)
@example(frame='{"action": "echo", "payload": {"x": "' + "y" * (130 * 1024) + '"}}')
async def test_any_frame_over_a_socket_gets_one_typed_reply_and_the_server_keeps_serving(
    session: Session, frame: str | bytes
) -> None:
    assume(_sendable(frame))

    replies = await session.replies_to(frame)

    size = len(frame) if isinstance(frame, bytes) else len(frame.encode("utf-8"))
    if isinstance(frame, bytes):
        expected = 1009 if size > _MAX_BYTES else 1003
        assert replies == expected, "a binary frame was not closed as API Gateway does"
    elif isinstance(replies, int):
        assert replies == 1009
        assert size > _FRAME_LIMIT_BYTES, "closed the socket for a frame within the limit"
    else:
        assert len(replies) == 1, replies
        (reply,) = replies
        assert reply["type"] in REPLY_TYPES
        if reply["type"] == "error":
            assert reply["error"]["code"] in KNOWN_CODES
    assert session.bystander is not None
    pong = await request(session.bystander, {"id": "still-there", "action": "ping"})
    assert pong["data"]["pong"] is True


def _nested_payload(levels: int) -> str:
    """A message `levels` deep (the message object is level 1)."""
    return (
        '{"action": "echo_async", "id": "deep", "payload": '
        + ('{"a":' * (levels - 2) + "{}" + "}" * (levels - 2))
        + "}"
    )


@pytest.mark.parametrize(
    "frame",
    [
        _nested_payload(33),
        _nested_payload(200),
        _nested_payload(900),
        '{"action": "echo_async", "id": "s1", "payload": {"x": "\\ud800"}}',
        '{"action": "echo_async", "id": "s2", "payload": {"\\udfff": "key"}}',
        '{"action": "echo", "metadata": {"m": ["\\udc00"]}}',
        '{"action": "echo_async", "id": "' + "i" * 129 + '"}',
        '{"action": "status", "payload": {"request_id": "' + "r" * 129 + '"}}',
        '{"action": "echo_async", "id": "e1", "payload": {"": 1}}',
    ],
)
async def test_what_dynamodb_could_not_store_is_a_validation_error_and_never_an_error_log(
    emulator: EmulatorHarness, caplog: pytest.LogCaptureFixture, frame: str
) -> None:
    """Before, nesting of 200-900 levels and lone surrogates answered INTERNAL_ERROR
    with a traceback in the log, and 40 levels were acknowledged."""
    async with emulator.connect("mallory", "tenant-evil") as ws:
        await ws.send(frame)
        reply = await recv_json(ws)
        pong = await request(ws, {"id": "after", "action": "ping"})

    assert reply["type"] == "error"
    assert reply["error"]["code"] == "VALIDATION_ERROR"
    assert pong["data"]["pong"] is True
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert not any(r.exc_info for r in caplog.records)


async def test_invalid_utf8_in_a_text_frame_closes_only_that_socket(
    emulator: EmulatorHarness,
) -> None:
    async with (
        emulator.connect("mallory", "tenant-evil") as attacker,
        emulator.connect("bystander", "tenant-1") as bystander,
    ):
        await attacker.send(b'{"action": "ping", "x": "\xff\xfe"}', text=True)
        with pytest.raises(ConnectionClosed) as closed:
            await recv_json(attacker)
        pong = await request(bystander, {"id": "p", "action": "ping"})

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1007
    assert pong["data"]["pong"] is True


# -- the @connections management API --------------------------------------------------

_METHODS = ["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"]
_PREFIXES = ["", "/prod", "/a/b/c", "//", "/%2e%2e", "/..", "/@connections"]

weird_ids = (
    st.text(st.characters(codec="utf-8"), max_size=60).map(lambda t: quote(t, safe=""))
    | st.text(st.characters(codec="utf-8"), max_size=30).map(lambda t: quote(t, safe="/%"))
    | st.sampled_from(
        [
            "",
            "%00",
            "%ff%fe",
            "..%2f..%2fetc%2fpasswd",
            "../../etc/passwd",
            "x" * 5000,
            "id/extra/segments",
            "%",
            "%zz",
            "WyHPAfymhcwCENw=",
            "WyHPAfymhcwCENw%3D",
        ]
    )
)
weird_paths = st.builds(
    lambda prefix, ident, tail: f"{prefix}/@connections/{ident}{tail}",
    st.sampled_from(_PREFIXES),
    weird_ids,
    st.sampled_from(["", "/", "?x=1", "#frag", "?%00"]),
) | st.sampled_from(
    [
        "/%00",
        "/%00/index.html",
        "/..%2f..%2fetc%2fpasswd",
        "/" + "a/" * 500,
        "/%ff",
        "/@connections",
    ]
)
bodies = st.binary(max_size=2048) | st.sampled_from(
    [b"", b"\x00" * 10, b"{}", "\U0001f600".encode(), b"y" * (_MAX_BYTES + 1)]
)


@pytest.fixture
async def http(emulator: EmulatorHarness) -> Any:
    async with aiohttp.ClientSession() as client:
        yield emulator, client


async def _call(
    client: aiohttp.ClientSession,
    harness: EmulatorHarness,
    method: str,
    path: str,
    body: bytes,
) -> int:
    """The status of one call, signed with the dev credentials as boto3 would sign it."""
    url = URL(harness.http_url + path, encoded=True)
    data = body if method != "GET" else None
    headers = harness.signed_headers(method, str(url), data or b"")
    async with client.request(method, url, data=data, headers=headers) as response:
        await response.read()
        return response.status


@settings(
    max_examples=_EXAMPLES * 2,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(method=st.sampled_from(_METHODS), path=weird_paths, body=bodies)
@example(method="GET", path="/%00", body=b"")
@example(method="POST", path="/@connections/%00", body=b"x")
@example(method="GET", path="/%00/index.html", body=b"")
async def test_any_management_api_call_is_answered_without_a_server_error(
    http: tuple[EmulatorHarness, aiohttp.ClientSession], method: str, path: str, body: bytes
) -> None:
    harness, client = http

    status = await _call(client, harness, method, path, body)

    assert status < 500, f"{method} {path} -> {status}"


async def test_posts_over_the_limit_are_413_and_the_connection_stays_usable(
    emulator: EmulatorHarness,
) -> None:
    async with emulator.connect("alice") as ws, aiohttp.ClientSession() as client:
        pong = await request(ws, {"id": "who", "action": "ping"})
        connection_id = pong["data"]["connection_id"]
        path = f"/@connections/{quote(connection_id, safe='')}"
        just_over = await _call(client, emulator, "POST", path, b"y" * (_MAX_BYTES + 1))
        far_over = await _call(client, emulator, "POST", path, b"y" * (3 * 1024 * 1024))
        staged = await _call(client, emulator, "POST", f"/prod{path}", b'{"hello": 1}')
        delivered = await recv_json(ws)
        unknown = await _call(
            client, emulator, "POST", "/@connections/bm90LWEtY29ubmVjdGlvbg%3D", b"x"
        )
        still = await request(ws, {"id": "again", "action": "ping"})

    assert (just_over, far_over) == (413, 413)
    assert staged == 200
    assert delivered == {"hello": 1}
    assert unknown == 410
    assert still["data"]["pong"] is True
