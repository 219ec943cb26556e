"""The router: one frame in, one reply out; modes, built-ins, errors, isolation."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import date
from typing import Any

import pytest
from core_harness import Core, make_core, wire, without_timestamp
from pydantic import BaseModel, Field

from streamer import Progress, Request, Streamer, StreamerError
from streamer.errors import StoreUnavailable
from streamer.frames import Close
from streamer.models import ConnectionId, RequestStatus


class Person(BaseModel):
    name: str = Field(min_length=3, max_length=100)
    email: str = Field(min_length=3, max_length=100)


def build_app() -> Streamer:
    app = Streamer()

    @app.action("echo")
    async def echo(req: Request[dict[str, Any]]) -> dict[str, Any]:
        return {
            "echo": req.payload,
            "metadata": dict(req.metadata),
            "permissions": list(req.permissions),
        }

    @app.action("greet")
    async def greet(req: Request[Person]) -> dict[str, str]:
        return {"hello": req.payload.name}

    @app.action("job", mode="async", max_retries=2, timeout=120)
    async def job(req: Request[dict[str, Any]], progress: Progress) -> dict[str, Any]:
        await progress.report(50, "half way")
        return {"done": True}

    @app.action("greet_later", mode="async")
    async def greet_later(req: Request[Person], progress: Progress) -> str:
        return req.payload.name

    @app.action("long_estimate", estimated_duration=30)
    async def long_estimate(req: Request[dict[str, Any]], progress: Progress) -> str:
        await progress.report(50)
        return "ran"

    @app.action("short_estimate", estimated_duration=1)
    async def short_estimate(req: Request[dict[str, Any]]) -> str:
        return "ran"

    @app.action("hang", timeout=0)
    async def hang(req: Request[dict[str, Any]]) -> None:
        await asyncio.Event().wait()

    @app.action("own_code")
    async def own_code(req: Request[dict[str, Any]]) -> None:
        raise StreamerError("NOT_FOUND", "no such invoice", {"invoice": 7})

    @app.action("odd_details")
    async def odd_details(req: Request[dict[str, Any]]) -> None:
        raise StreamerError("VALIDATION_ERROR", "bad day", {"day": date(2026, 1, 4), "x": object})

    @app.action("crash")
    async def crash(req: Request[dict[str, Any]]) -> None:
        raise RuntimeError("password=hunter2")

    @app.action("not_json")
    async def not_json(req: Request[dict[str, Any]]) -> object:
        return object()

    return app


@pytest.fixture
def core() -> Core:
    return make_core(build_app())


# -- sync and async --------------------------------------------------------------


async def test_sync_action_answers_in_the_same_round_trip(core: Core) -> None:
    conn = await core.connect(permissions=("reports:read",))
    reply = await core.send(conn, "echo", {"a": 1}, id="m1", metadata={"trace": "x"})
    assert reply["type"] == "response"
    assert reply["request_id"] == "m1"
    assert reply["success"] is True
    assert reply["data"] == {
        "echo": {"a": 1},
        "metadata": {"trace": "x"},
        "permissions": ["reports:read"],
    }
    assert core.requests.items == {}


async def test_sync_reply_without_client_id_gets_a_server_id(core: Core) -> None:
    conn = await core.connect()
    reply = await core.send(conn, "echo", {})
    assert reply["request_id"].startswith("req_")


async def test_a_routed_message_is_logged_at_debug_not_info(
    core: Core, caplog: pytest.LogCaptureFixture
) -> None:
    """The per-message line is DEBUG; INFO stays for queued requests."""
    conn = await core.connect()
    with caplog.at_level(logging.INFO, logger="streamer.router"):
        await core.send(conn, "echo", {}, id="m1")
        await core.send(conn, "job", {}, id="r1")
    assert [r.getMessage() for r in caplog.records] == ["request queued"]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="streamer.router"):
        await core.send(conn, "echo", {}, id="m2")
    (record,) = caplog.records
    assert (record.levelno, record.getMessage(), record.__dict__["outcome"]) == (
        logging.DEBUG,
        "message routed",
        "response",
    )


def test_whether_a_handler_takes_progress_is_decided_at_registration(core: Core) -> None:
    actions = core.app.actions
    assert (actions["echo"].takes_progress, actions["job"].takes_progress) == (False, True)


async def test_async_action_is_stored_pending_and_acknowledged(core: Core) -> None:
    conn = await core.connect()
    reply = await core.send(conn, "job", {"n": 1}, id="r1")
    assert without_timestamp(reply) == {
        "type": "acknowledgment",
        "request_id": "r1",
        "status": "queued",
        "message": "Request queued for processing",
    }
    stored = await core.stored("r1")
    assert stored.key == "t1#u1#r1"
    assert stored.status is RequestStatus.PENDING
    assert (stored.action, stored.payload, stored.connection_id) == ("job", {"n": 1}, "c1")
    assert (stored.max_retries, stored.timeout_s) == (2, 120)


async def test_async_request_without_client_id_is_stored_under_the_acknowledged_id(
    core: Core,
) -> None:
    conn = await core.connect()
    reply = await core.send(conn, "job", {})
    stored = await core.stored(reply["request_id"])
    assert stored.request_id == reply["request_id"]


async def test_estimate_over_the_threshold_is_async(core: Core) -> None:
    conn = await core.connect()
    assert (await core.send(conn, "long_estimate", {}, id="r1"))["type"] == "acknowledgment"


async def test_estimate_under_the_threshold_is_sync(core: Core) -> None:
    conn = await core.connect()
    reply = await core.send(conn, "short_estimate", {}, id="r1")
    assert (reply["type"], reply["data"]) == ("response", "ran")


async def test_raising_the_threshold_makes_a_long_estimate_sync() -> None:
    """A handler taking (req, progress) still runs sync; its reports go nowhere."""
    core = make_core(build_app(), async_threshold_s=60)
    conn = await core.connect()
    reply = await core.send(conn, "long_estimate", {}, id="r1")
    assert (reply["type"], reply["data"]) == ("response", "ran")
    assert core.notifier.sent == []


# -- error codes -------------------------------------------------------------------


async def test_unknown_action_is_invalid_action(core: Core) -> None:
    conn = await core.connect()
    reply = await core.send(conn, "nope", {}, id="m1")
    assert reply["request_id"] == "m1"
    assert reply["error"]["code"] == "INVALID_ACTION"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "VALIDATION_ERROR"),
        ("[1, 2]", "VALIDATION_ERROR"),
        ('{"payload": {}}', "INVALID_ACTION"),
        ('{"action": ""}', "INVALID_ACTION"),
        ('{"action": 5}', "INVALID_ACTION"),
        ('{"action": "echo", "payload": [1]}', "VALIDATION_ERROR"),
        ('{"action": "echo", "id": 5}', "VALIDATION_ERROR"),
    ],
)
async def test_undecodable_frames_answer_a_typed_error(core: Core, frame: str, code: str) -> None:
    conn = await core.connect()
    reply = wire(await core.router.route(conn, frame))
    assert reply["type"] == "error"
    assert reply["error"]["code"] == code
    assert "request_id" not in reply


async def test_a_binary_frame_is_closed_with_1003_and_stores_nothing(core: Core) -> None:
    conn = await core.connect()
    verdict = await core.router.route(conn, b'{"action": "job", "id": "b1"}')
    assert isinstance(verdict, Close)
    assert verdict.code == 1003
    assert core.requests.items == {}


async def test_a_single_frame_over_32_kb_is_closed_with_1009(core: Core) -> None:
    """Before, an oversized frame was answered PAYLOAD_TOO_LARGE; API Gateway
    closes the socket instead."""
    conn = await core.connect()
    frame = json.dumps({"action": "echo", "payload": {"blob": "x" * (40 * 1024)}})
    verdict = await core.router.route(conn, frame)
    assert isinstance(verdict, Close)
    assert verdict.code == 1009


async def test_a_fragmented_message_over_32_kb_is_routed(core: Core) -> None:
    conn = await core.connect()
    frame = json.dumps({"action": "echo", "id": "big", "payload": {"blob": "x" * (40 * 1024)}})
    reply = wire(await core.router.route(conn, frame, is_fragmented=True))
    assert (reply["type"], reply["request_id"]) == ("response", "big")


async def test_a_message_over_the_configured_limit_is_closed_with_1009() -> None:
    core = make_core(build_app(), max_message_bytes=64)
    conn = await core.connect()
    frame = json.dumps({"action": "echo", "payload": {"blob": "x" * 100}})
    verdict = await core.router.route(conn, frame, is_fragmented=True)
    assert isinstance(verdict, Close)
    assert verdict.code == 1009


async def test_invalid_payload_answers_pydantic_details(core: Core) -> None:
    conn = await core.connect()
    reply = await core.send(conn, "greet", {"name": "Al"}, id="m1")
    assert reply["error"]["code"] == "VALIDATION_ERROR"
    details = reply["error"]["details"]
    assert {tuple(d["loc"]) for d in details} == {("name",), ("email",)}
    by_field = {d["loc"][0]: d for d in details}
    assert by_field["name"]["type"] == "string_too_short"
    assert by_field["email"]["type"] == "missing"
    assert all(set(d) == {"type", "loc", "msg"} for d in details)


async def test_invalid_async_payload_stores_nothing(core: Core) -> None:
    conn = await core.connect()
    reply = await core.send(conn, "greet_later", {"name": 3}, id="r1")
    assert reply["error"]["code"] == "VALIDATION_ERROR"
    assert core.requests.items == {}


async def test_messages_over_the_rate_are_rate_limited_until_refilled() -> None:
    core = make_core(build_app(), rate_limit_per_minute=2)
    conn = await core.connect()
    assert (await core.send(conn, "ping"))["type"] == "response"
    assert (await core.send(conn, "ping"))["type"] == "response"
    limited = await core.send(conn, "ping", id="m3")
    assert (limited["request_id"], limited["error"]["code"]) == ("m3", "RATE_LIMITED")
    core.clock.advance(30)
    assert (await core.send(conn, "ping"))["type"] == "response"


async def test_rate_limit_is_per_connection() -> None:
    core = make_core(build_app(), rate_limit_per_minute=1)
    first = await core.connect("c1")
    second = await core.connect("c2")
    await core.send(first, "ping")
    assert (await core.send(first, "ping"))["error"]["code"] == "RATE_LIMITED"
    assert (await core.send(second, "ping"))["type"] == "response"


async def test_sync_action_over_its_timeout_is_timeout(core: Core) -> None:
    conn = await core.connect()
    reply = await core.send(conn, "hang", {}, id="m1")
    assert reply["error"]["code"] == "TIMEOUT"


async def test_streamer_error_from_an_action_keeps_its_code(core: Core) -> None:
    conn = await core.connect()
    reply = await core.send(conn, "own_code", {}, id="m1")
    assert reply["error"] == {
        "code": "NOT_FOUND",
        "message": "no such invoice",
        "details": {"invoice": 7},
    }


async def test_error_details_are_made_json_safe(core: Core) -> None:
    conn = await core.connect()
    reply = await core.send(conn, "odd_details", {})
    assert reply["error"]["details"]["day"] == "2026-01-04"
    assert isinstance(reply["error"]["details"]["x"], str)


async def test_unexpected_exception_is_internal_error_and_logged_without_leaking(
    core: Core, caplog: pytest.LogCaptureFixture
) -> None:
    conn = await core.connect()
    with caplog.at_level(logging.ERROR, logger="streamer.router"):
        reply = await core.send(conn, "crash", {"card": "4111"}, id="m1")
    assert reply["error"] == {
        "code": "INTERNAL_ERROR",
        "message": "internal error",
        "details": None,
    }
    assert "hunter2" not in str(reply)
    (record,) = caplog.records
    assert (record.request_id, record.action) == ("m1", "crash")  # type: ignore[attr-defined]
    assert "4111" not in record.getMessage()


async def test_result_that_is_not_json_is_internal_error(core: Core) -> None:
    conn = await core.connect()
    reply = await core.send(conn, "not_json", {})
    assert reply["error"]["code"] == "INTERNAL_ERROR"


async def test_request_too_large_to_store_is_payload_too_large(core: Core) -> None:
    core.requests.max_item_bytes = 1024
    conn = await core.connect()
    reply = await core.send(conn, "job", {"blob": "x" * 2000}, id="r1")
    assert (reply["request_id"], reply["error"]["code"]) == ("r1", "PAYLOAD_TOO_LARGE")
    assert core.requests.items == {}


async def test_store_failure_on_enqueue_is_internal_error(core: Core) -> None:
    core.requests.inject_failure("enqueue", StoreUnavailable())
    conn = await core.connect()
    reply = await core.send(conn, "job", {}, id="r1")
    assert reply["error"]["code"] == "INTERNAL_ERROR"


async def test_store_failure_on_status_is_internal_error_not_an_exception(core: Core) -> None:
    core.requests.inject_failure("get", ConnectionResetError("socket closed"))
    conn = await core.connect()
    reply = await core.send(conn, "status", {"request_id": "r1"}, id="m1")
    assert reply["error"]["code"] == "INTERNAL_ERROR"
    assert "socket" not in reply["error"]["message"]


async def test_a_payload_number_the_store_cannot_keep_is_a_validation_error(core: Core) -> None:
    conn = await core.connect()
    reply = await core.send(conn, "job", {"n": 10**40}, id="r1")
    assert (reply["request_id"], reply["error"]["code"]) == ("r1", "VALIDATION_ERROR")
    assert "38 significant digits" in reply["error"]["message"]
    assert core.requests.items == {}


async def test_store_unavailable_on_status_hides_the_stores_words_and_is_logged(
    core: Core, caplog: pytest.LogCaptureFixture
) -> None:
    aws_words = "state store refused the call (ProvisionedThroughputExceededException)"
    core.requests.inject_failure("get", StoreUnavailable(aws_words))
    conn = await core.connect()
    with caplog.at_level(logging.ERROR, logger="streamer.router"):
        reply = await core.send(conn, "status", {"request_id": "r1"}, id="m1")
    assert reply["error"]["code"] == "INTERNAL_ERROR"
    assert "Provisioned" not in json.dumps(reply)
    assert [r.getMessage() for r in caplog.records] == ["state store unavailable"]


# -- idempotent ids ------------------------------------------------------------------


async def test_repeated_id_is_acknowledged_with_the_stored_status_and_queued_once(
    core: Core,
) -> None:
    conn = await core.connect()
    await core.send(conn, "job", {"n": 1}, id="r1")
    again = await core.send(conn, "job", {"n": 2}, id="r1")
    assert (again["type"], again["status"]) == ("acknowledgment", "pending")
    assert len(core.requests.items) == 1
    assert (await core.stored("r1")).payload == {"n": 1}

    await core.process("r1")
    after = await core.send(conn, "job", {"n": 3}, id="r1")
    assert after["status"] == "completed"


async def test_same_id_from_another_user_is_another_request(core: Core) -> None:
    alice = await core.connect("c1", user="alice")
    bob = await core.connect("c2", user="bob")
    await core.send(alice, "job", {}, id="r1")
    reply = await core.send(bob, "job", {}, id="r1")
    assert reply["status"] == "queued"
    assert set(core.requests.items) == {"t1#alice#r1", "t1#bob#r1"}


# -- built-ins -------------------------------------------------------------------------


async def test_ping_answers_pong_with_the_connection_id(core: Core) -> None:
    conn = await core.connect("conn-A")
    reply = await core.send(conn, "ping", id="hb")
    assert (reply["request_id"], reply["data"]) == (
        "hb",
        {"pong": True, "connection_id": "conn-A"},
    )


async def test_status_shows_the_snapshot_without_storage_details(core: Core) -> None:
    conn = await core.connect()
    await core.send(conn, "job", {"n": 1}, id="r1")
    reply = await core.send(conn, "status", {"request_id": "r1"}, id="m2")
    assert reply["request_id"] == "m2"
    assert reply["data"] == {
        "request_id": "r1",
        "action": "job",
        "status": "PENDING",
        "progress": 0.0,
        "message": "",
        "details": {},
        "created_at": "2026-01-01T00:00:00.000Z",
        "updated_at": "2026-01-01T00:00:00.000Z",
    }


async def test_status_after_completion_carries_the_result(core: Core) -> None:
    conn = await core.connect()
    await core.send(conn, "job", {}, id="r1")
    await core.process("r1")
    data = (await core.send(conn, "status", {"request_id": "r1"}))["data"]
    assert (data["status"], data["result"], data["progress"], data["message"]) == (
        "COMPLETED",
        {"done": True},
        100.0,
        "half way",
    )
    assert "error" not in data


@pytest.mark.parametrize("action", ["status", "subscribe", "cancel"])
@pytest.mark.parametrize("payload", [{}, {"request_id": 5}, {"request_id": ""}])
async def test_builtins_need_a_request_id_string(
    core: Core, action: str, payload: dict[str, Any]
) -> None:
    conn = await core.connect()
    reply = await core.send(conn, action, payload)
    assert reply["error"]["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize("action", ["status", "subscribe", "cancel"])
@pytest.mark.parametrize(
    ("user", "tenant"),
    [("mallory", "t1"), ("u1", "other-tenant")],
    ids=["another-user", "another-tenant"],
)
async def test_request_of_another_user_or_tenant_is_not_found_like_an_unknown_id(
    core: Core, action: str, user: str, tenant: str
) -> None:
    owner = await core.connect("c1")
    await core.send(owner, "job", {}, id="r1")
    intruder = await core.connect("c2", user=user, tenant=tenant)

    theirs = await core.send(intruder, action, {"request_id": "r1"}, id="m1")
    unknown = await core.send(intruder, action, {"request_id": "r-unknown"}, id="m1")

    assert theirs["error"]["code"] == "NOT_FOUND"
    assert without_timestamp(theirs) == without_timestamp(unknown)
    stored = await core.stored("r1")
    assert stored.status is RequestStatus.PENDING
    assert core.subscriptions.subscriptions == []


async def test_subscribe_follows_a_running_request_from_another_connection(core: Core) -> None:
    first = await core.connect("c1")
    await core.send(first, "job", {}, id="r1")
    second = await core.connect("c2")
    reply = await core.send(second, "subscribe", {"request_id": "r1"})
    assert (reply["data"]["status"], reply["data"]["subscribed"]) == ("PENDING", True)

    await core.process("r1")

    assert [m["type"] for m in core.received("c2")] == ["progress", "complete"]
    assert core.received("c2") == core.received("c1")


async def test_a_subscribe_whose_mark_fails_takes_its_subscription_back(core: Core) -> None:
    """A subscription without the mark would be skipped by an outcome written
    elsewhere: the client gets the store error and no subscription is left."""
    first = await core.connect("c1")
    await core.send(first, "job", {}, id="r1")
    core.requests.inject_failure("follow", StoreUnavailable())
    reply = await core.send(await core.connect("c2"), "subscribe", {"request_id": "r1"})
    assert reply["type"] == "error"
    assert core.subscriptions.subscriptions == []
    assert (await core.stored("r1")).followed is False


async def test_subscribe_sets_the_subscription_ttl_from_the_connection_ttl(core: Core) -> None:
    conn = await core.connect()
    await core.send(conn, "job", {}, id="r1")
    await core.send(conn, "subscribe", {"request_id": "r1"})
    (subscription,) = core.subscriptions.subscriptions
    assert subscription.expires_at == int(core.clock.now().timestamp()) + 24 * 3600


async def test_subscribe_to_a_finished_request_returns_it_without_subscribing(core: Core) -> None:
    conn = await core.connect()
    await core.send(conn, "job", {}, id="r1")
    await core.process("r1")
    reply = await core.send(conn, "subscribe", {"request_id": "r1"})
    assert (reply["data"]["status"], reply["data"]["subscribed"]) == ("COMPLETED", False)
    assert reply["data"]["result"] == {"done": True}
    assert core.subscriptions.subscriptions == []


async def test_cancel_moves_to_cancelled_and_tells_the_followers(core: Core) -> None:
    origin = await core.connect("c1")
    await core.send(origin, "job", {}, id="r1")
    watcher = await core.connect("c2")
    await core.send(watcher, "subscribe", {"request_id": "r1"})

    reply = await core.send(origin, "cancel", {"request_id": "r1"}, id="m9")

    assert (reply["request_id"], reply["data"]) == (
        "m9",
        {"request_id": "r1", "status": "CANCELLED", "cancelled": True},
    )
    for cid in ("c1", "c2"):
        (notice,) = core.received(cid)
        assert (notice["type"], notice["request_id"], notice["error"]["code"]) == (
            "error",
            "r1",
            "CANCELLED",
        )
    stored = await core.stored("r1")
    assert stored.status is RequestStatus.CANCELLED
    status = await core.send(origin, "status", {"request_id": "r1"})
    assert status["data"]["error"]["code"] == "CANCELLED"


async def test_cancel_of_a_finished_request_reports_its_status(core: Core) -> None:
    conn = await core.connect()
    await core.send(conn, "job", {}, id="r1")
    await core.process("r1")
    sent_before = len(core.notifier.sent)
    reply = await core.send(conn, "cancel", {"request_id": "r1"})
    assert reply["data"] == {"request_id": "r1", "status": "COMPLETED", "cancelled": False}
    assert len(core.notifier.sent) == sent_before


async def test_a_gone_follower_does_not_fail_the_cancel(core: Core) -> None:
    conn = await core.connect("c1")
    await core.send(conn, "job", {}, id="r1")
    core.notifier.mark_gone(ConnectionId("c1"))
    reply = await core.send(conn, "cancel", {"request_id": "r1"})
    assert reply["data"]["cancelled"] is True
    assert await core.connections.get(ConnectionId("c1")) is None


@pytest.mark.parametrize("action", ["status", "subscribe", "cancel"])
async def test_a_target_id_over_128_characters_is_a_validation_error(
    core: Core, action: str
) -> None:
    conn = await core.connect()
    reply = await core.send(conn, action, {"request_id": "x" * 129}, id="q1")
    assert (reply["request_id"], reply["error"]["code"]) == ("q1", "VALIDATION_ERROR")


async def test_a_request_key_over_dynamodbs_limit_is_a_validation_error(core: Core) -> None:
    """The tenant and user come from the token; with them, the key must fit 2048 bytes."""
    conn = await core.connect(user="u" * 1000, tenant="t" * 1000)
    reply = await core.send(conn, "job", {}, id="i" * 100)
    assert reply["error"]["code"] == "VALIDATION_ERROR"
    assert core.requests.items == {}


async def test_a_lone_surrogate_in_an_async_payload_is_a_validation_error_and_not_stored(
    core: Core,
) -> None:
    conn = await core.connect()
    verdict = await core.router.route(
        conn, '{"action": "job", "id": "s1", "payload": {"x": "\\udfff"}}'
    )
    reply = wire(verdict)
    assert reply["error"]["code"] == "VALIDATION_ERROR"
    assert core.requests.items == {}
