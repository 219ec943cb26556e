"""Bad input at the core: any frame at all gets exactly one verdict from
`Router.route` (a typed reply, or a close for a binary or oversized frame),
never an exception, never a stored item when it is refused, and never a side
effect on another connection."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from core_harness import Core, make_core, wire
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rel_support import CORE_EXAMPLES, KNOWN_CODES, REPLY_TYPES, SOAK, frames

from streamer.demo import app as demo_app
from streamer.frames import Close, Send, Verdict
from streamer.models import ConnectionId

_EXAMPLES = CORE_EXAMPLES * (10 if SOAK else 1)


async def _route_one(rig: Core, frame: str | bytes) -> dict[str, Any]:
    attacker = await rig.connect("attacker", user="mallory", tenant="t-evil")
    async with asyncio.timeout(10):
        verdict = await rig.router.route(attacker, frame)
    return _body_of(verdict, frame)


def _body_of(verdict: Verdict, frame: str | bytes) -> dict[str, Any]:
    """The reply as the client sees it; a close as `{"close": code}`, checked to
    be the one API Gateway gives for that frame."""
    if isinstance(verdict, Close):
        size = (
            len(frame) if isinstance(frame, bytes) else len(frame.encode("utf-8", "surrogatepass"))
        )
        expected = 1003 if isinstance(frame, bytes) and size <= 128 * 1024 else 1009
        assert verdict.code == expected, (verdict, len(frame))
        return {"close": int(verdict.code)}
    assert not isinstance(frame, bytes), "a binary frame was answered instead of closed"
    return wire(verdict)


def _assert_typed(body: dict[str, Any]) -> None:
    assert body["type"] in REPLY_TYPES
    assert isinstance(body["timestamp"], str)
    if body["type"] == "error":
        assert body["error"]["code"] in KNOWN_CODES
        assert isinstance(body["error"]["message"], str)
        assert "Traceback" not in json.dumps(body)


@settings(
    max_examples=_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(frame=frames)
@example(frame=b"\xff\xfe\x00")
@example(frame='{"action": "echo", "payload": {"x": "\\ud800"}}')
@example(frame='{"action": "echo", "payload": {"x": NaN}}')
@example(frame="[" * 200_000)
async def test_any_frame_gets_exactly_one_typed_reply_and_refusals_store_nothing(
    frame: str | bytes,
) -> None:
    rig = make_core(demo_app)
    bystander = await rig.connect("bystander", user="alice", tenant="t1")

    body = await _route_one(rig, frame)

    if "close" not in body:
        _assert_typed(body)
    items = rig.store.items
    if body.get("type") == "acknowledgment":
        assert len(items) == 1
        (stored,) = items.values()
        assert stored.user_id == "mallory"
        assert stored.tenant_id == "t-evil"
    else:
        assert items == {}, "a frame that was not queued stored a request"
    if body.get("type") != "response":
        assert rig.subscriptions.subscriptions == []
    # Another connection is untouched and still served.
    assert rig.notifier.messages(ConnectionId("bystander")) == []
    pong = wire(await rig.router.route(bystander, '{"action": "ping", "id": "p"}'))
    assert pong["type"] == "response"
    assert pong["data"] == {"pong": True, "connection_id": "bystander"}


@settings(max_examples=_EXAMPLES // 4, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(frames, min_size=1, max_size=8))
async def test_a_burst_of_bad_frames_gets_one_reply_each_and_the_connection_keeps_working(
    batch: list[str | bytes],
) -> None:
    rig = make_core(demo_app, rate_limit_per_minute=0)
    attacker = await rig.connect("attacker", user="mallory", tenant="t-evil")

    async with asyncio.timeout(20):
        replies = await asyncio.gather(*(rig.router.route(attacker, f) for f in batch))
        for reply, frame in zip(replies, batch, strict=True):
            body = _body_of(reply, frame)
            if "close" not in body:
                _assert_typed(body)
        pong = wire(await rig.router.route(attacker, '{"action": "ping"}'))

    assert len(replies) == len(batch)
    assert pong["type"] == "response"
    assert pong["data"]["pong"] is True
    acked = sum(1 for r in replies if isinstance(r, Send) and r.message.type == "acknowledgment")
    assert len(rig.store.items) <= acked


async def test_a_frame_over_the_size_limit_is_closed_with_1009_before_parsing() -> None:
    """Before, it was answered PAYLOAD_TOO_LARGE; API Gateway closes the socket."""
    rig = make_core(demo_app)
    frame = '{"action": "echo", "payload": {"x": "' + "y" * (128 * 1024) + '"}}'

    body = await _route_one(rig, frame)

    assert body == {"close": 1009}
    assert rig.store.items == {}


async def test_an_oversized_client_id_is_refused_and_nothing_is_queued() -> None:
    rig = make_core(demo_app)
    frame = json.dumps({"id": "i" * 129, "action": "echo_async", "payload": {}})

    body = await _route_one(rig, frame)

    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert rig.store.items == {}
