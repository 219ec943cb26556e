"""The frame policy: API Gateway's frame rules and the one encoding of every reply."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from streamer.errors import ErrorCode, StreamerError
from streamer.frames import (
    FRAME_LIMIT_BYTES,
    MESSAGE_LIMIT_BYTES,
    Close,
    CloseCode,
    FrameKind,
    FrameMeter,
    FramePolicy,
    split_into_frames,
)
from streamer.protocol import Response
from streamer.settings import Settings

AT = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
POLICY = FramePolicy()


def test_the_limits_are_api_gateways() -> None:
    assert (FRAME_LIMIT_BYTES, MESSAGE_LIMIT_BYTES) == (32 * 1024, 128 * 1024)
    assert Settings().frame_policy == FramePolicy(frame_bytes=32 * 1024, message_bytes=128 * 1024)


def test_a_binary_frame_closes_with_1003_within_the_message_limit() -> None:
    for size in (0, 10, FRAME_LIMIT_BYTES + 1, MESSAGE_LIMIT_BYTES):
        verdict = POLICY.check(FrameKind.BINARY, size)
        assert isinstance(verdict, Close)
        assert verdict.code is CloseCode.UNSUPPORTED_DATA


def test_a_binary_frame_over_the_message_limit_closes_with_1009() -> None:
    verdict = POLICY.check(FrameKind.BINARY, MESSAGE_LIMIT_BYTES + 1)
    assert isinstance(verdict, Close)
    assert verdict.code is CloseCode.MESSAGE_TOO_BIG


@pytest.mark.parametrize(
    ("size", "is_fragmented", "code"),
    [
        (FRAME_LIMIT_BYTES, False, None),
        (FRAME_LIMIT_BYTES + 1, False, CloseCode.MESSAGE_TOO_BIG),
        (FRAME_LIMIT_BYTES + 1, True, None),
        (MESSAGE_LIMIT_BYTES, True, None),
        (MESSAGE_LIMIT_BYTES + 1, True, CloseCode.MESSAGE_TOO_BIG),
        (MESSAGE_LIMIT_BYTES + 1, False, CloseCode.MESSAGE_TOO_BIG),
    ],
)
def test_a_text_frame_is_judged_by_the_frame_and_message_limits(
    size: int, is_fragmented: bool, code: CloseCode | None
) -> None:
    verdict = POLICY.check(FrameKind.TEXT, size, is_fragmented=is_fragmented)
    assert (verdict.code if verdict is not None else None) is code


def test_the_meter_closes_on_a_fragment_over_the_frame_limit() -> None:
    meter = FrameMeter(POLICY)
    assert meter.receive(FrameKind.TEXT, 1000, is_final=False) is None
    verdict = meter.receive(None, FRAME_LIMIT_BYTES + 1, is_final=True)
    assert verdict is not None
    assert verdict.code is CloseCode.MESSAGE_TOO_BIG


def test_the_meter_closes_when_fragments_add_up_over_the_message_limit() -> None:
    meter = FrameMeter(POLICY)
    assert meter.receive(FrameKind.TEXT, FRAME_LIMIT_BYTES, is_final=False) is None
    for _ in range(3):
        assert meter.receive(None, FRAME_LIMIT_BYTES, is_final=False) is None
    verdict = meter.receive(None, 1, is_final=True)
    assert verdict is not None
    assert verdict.code is CloseCode.MESSAGE_TOO_BIG


def test_the_meter_remembers_which_messages_were_fragmented() -> None:
    meter = FrameMeter(POLICY)
    assert meter.receive(FrameKind.TEXT, 10, is_final=True) is None
    assert meter.receive(FrameKind.TEXT, FRAME_LIMIT_BYTES, is_final=False) is None
    assert meter.receive(None, FRAME_LIMIT_BYTES, is_final=True) is None
    assert [meter.next_is_fragmented(), meter.next_is_fragmented()] == [False, True]


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        ([(FrameKind.TEXT, 10, True)], [None]),
        ([(FrameKind.TEXT, FRAME_LIMIT_BYTES, True)], [None]),
        ([(FrameKind.TEXT, FRAME_LIMIT_BYTES + 1, True)], [CloseCode.MESSAGE_TOO_BIG]),
        ([(FrameKind.TEXT, 10, True), (FrameKind.BINARY, 10, True)], [None, 1003]),
        ([(FrameKind.TEXT, 10, False), (None, 10, True), (FrameKind.TEXT, 5, True)], [None] * 3),
    ],
)
def test_a_whole_text_frame_and_the_frames_around_it_get_the_policys_verdict(
    frames: list[tuple[FrameKind | None, int, bool]], expected: list[int | None]
) -> None:
    """Single text frames take a short path through the meter: same verdicts,
    same record of which messages were fragmented."""
    meter = FrameMeter(POLICY)
    verdicts = [meter.receive(kind, size, is_final=fin) for kind, size, fin in frames]
    assert [None if v is None else int(v.code) for v in verdicts] == expected
    completed = sum(1 for v, (_, _, fin) in zip(verdicts, frames, strict=True) if v is None and fin)
    fragmented = [meter.next_is_fragmented() for _ in range(completed)]
    assert fragmented == [len(frames) == 3 and i == 0 for i in range(completed)]


def test_a_policy_whose_frame_limit_is_above_its_message_limit_closes_at_the_message_limit() -> (
    None
):
    meter = FrameMeter(FramePolicy(frame_bytes=100, message_bytes=50))
    verdict = meter.receive(FrameKind.TEXT, 60, is_final=True)
    assert verdict is not None
    assert verdict.code is CloseCode.MESSAGE_TOO_BIG


def test_the_meter_closes_on_a_binary_first_frame() -> None:
    verdict = FrameMeter(POLICY).receive(FrameKind.BINARY, 3, is_final=False)
    assert verdict is not None
    assert verdict.code is CloseCode.UNSUPPORTED_DATA


def test_a_reply_within_the_limit_is_sent_as_encoded() -> None:
    message = Response(timestamp=AT, request_id="r1", data={"ok": True})
    send = POLICY.reply(message)
    assert json.loads(send.text)["data"] == {"ok": True}
    assert send.message is message


def test_a_reply_over_the_limit_is_replaced_by_payload_too_large_for_its_id() -> None:
    message = Response(timestamp=AT, request_id="r1", data="x" * MESSAGE_LIMIT_BYTES)
    send = POLICY.reply(message)
    body = json.loads(send.text)
    assert (body["type"], body["request_id"]) == ("error", "r1")
    assert body["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert body["error"]["details"]["limit"] == MESSAGE_LIMIT_BYTES
    assert len(send.text.encode()) <= MESSAGE_LIMIT_BYTES


def test_a_push_over_the_limit_is_refused_with_payload_too_large() -> None:
    message = Response(timestamp=AT, request_id="r1", data="é" * (MESSAGE_LIMIT_BYTES // 2))
    with pytest.raises(StreamerError) as caught:
        POLICY.outbound(message)
    assert caught.value.code is ErrorCode.PAYLOAD_TOO_LARGE


def test_a_message_is_split_into_frames_on_character_boundaries() -> None:
    text = "ab" + "é" * FRAME_LIMIT_BYTES
    pieces = split_into_frames(text)
    assert "".join(pieces) == text
    assert all(len(p.encode()) <= FRAME_LIMIT_BYTES for p in pieces)
    assert split_into_frames("small") == ["small"]
