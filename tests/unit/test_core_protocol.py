"""The wire protocol: every malformed frame is a typed error, server frames encode as specified."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.errors import ErrorCode, StreamerError
from streamer.protocol import (
    Complete,
    _plainly_storable,
    _storable_problem,
    decode_client_message,
    decode_server_message,
    encode,
    error_message,
    format_timestamp,
)

AT = datetime(2026, 11, 25, 8, 0, 0, 123456, tzinfo=UTC)


def _code_of(frame: str | bytes) -> ErrorCode:
    with pytest.raises(StreamerError) as caught:
        decode_client_message(frame)
    return caught.value.code


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", ErrorCode.VALIDATION_ERROR),
        ("[1, 2]", ErrorCode.VALIDATION_ERROR),
        (b"\xff\xfe", ErrorCode.VALIDATION_ERROR),
        ('{"payload": {}}', ErrorCode.INVALID_ACTION),
        ('{"action": ""}', ErrorCode.INVALID_ACTION),
        ('{"action": 7}', ErrorCode.INVALID_ACTION),
        ('{"action": "echo", "id": 5}', ErrorCode.VALIDATION_ERROR),
        ('{"action": "echo", "id": "' + "x" * 129 + '"}', ErrorCode.VALIDATION_ERROR),
        ('{"action": "echo", "payload": [1]}', ErrorCode.VALIDATION_ERROR),
        ('{"action": "echo", "metadata": "m"}', ErrorCode.VALIDATION_ERROR),
        ('{"action": "echo", "payload": {"x": NaN}}', ErrorCode.VALIDATION_ERROR),
        ('{"action": "echo", "payload": {"x": Infinity}}', ErrorCode.VALIDATION_ERROR),
        ('{"action": "echo", "payload": {"x": 1e400}}', ErrorCode.VALIDATION_ERROR),
        ('{"action": "echo", "payload": {"x": -1e400}}', ErrorCode.VALIDATION_ERROR),
    ],
)
def test_a_malformed_frame_is_a_typed_error(frame: str, code: ErrorCode) -> None:
    assert _code_of(frame) is code


def _nested(levels: int) -> str:
    """A message whose JSON is `levels` deep (the message object is level 1)."""
    payload: dict[str, object] = {}
    for _ in range(levels - 2):
        payload = {"a": payload}
    return json.dumps({"action": "echo", "payload": payload})


def test_a_message_nested_32_levels_decodes() -> None:
    assert decode_client_message(_nested(32)).action == "echo"


@pytest.mark.parametrize("levels", [33, 200, 900])
def test_a_message_nested_deeper_than_32_levels_is_a_validation_error(levels: int) -> None:
    assert _code_of(_nested(levels)) is ErrorCode.VALIDATION_ERROR


@pytest.mark.parametrize(
    "frame",
    [
        '{"action": "echo", "payload": {"x": "\\ud800"}}',
        '{"action": "echo", "payload": {"\\udfff": 1}}',
        '{"action": "echo", "payload": {"x": ["ok", {"y": "a\\udc00b"}]}}',
        '{"action": "echo", "metadata": {"\\ud83d": true}}',
        '{"action": "echo", "id": "\\ud800"}',
        '{"action": "echo", "payload": {"": 1}}',
        '{"action": "echo", "payload": {"' + "k" * 65_536 + '": 1}}',
        '{"action": "echo", "id": "' + "é" * 129 + '"}',
    ],
)
def test_what_dynamodb_could_not_store_is_a_validation_error(frame: str) -> None:
    assert _code_of(frame) is ErrorCode.VALIDATION_ERROR


def test_an_id_of_128_characters_with_hash_and_unicode_decodes() -> None:
    client_id = ("#é✓" * 43)[:128]
    message = decode_client_message(json.dumps({"action": "echo", "id": client_id}))
    assert message.id == client_id


def test_a_well_formed_frame_decodes_with_defaults() -> None:
    message = decode_client_message('{"action": "echo", "payload": null, "extra": 1}')
    assert (message.id, message.action, message.payload, message.metadata) == (
        None,
        "echo",
        {},
        {},
    )


def test_large_finite_numbers_are_kept() -> None:
    message = decode_client_message('{"action": "echo", "payload": {"x": 1e300, "n": 12}}')
    assert message.payload == {"x": 1e300, "n": 12}


def test_timestamps_are_rfc3339_utc_with_milliseconds() -> None:
    assert format_timestamp(AT) == "2026-11-25T08:00:00.123Z"


@settings(max_examples=300)
@given(
    at=st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(9998, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-4, minutes=-30))]
        ),
    )
)
def test_a_timestamp_reads_as_isoformat_in_utc_to_the_millisecond(at: datetime) -> None:
    """Whole seconds are formatted once and reused; every time still reads right."""
    expected = at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert format_timestamp(at) == expected


def test_an_error_without_a_request_id_omits_the_field() -> None:
    body = json.loads(
        encode(error_message(StreamerError("INVALID_ACTION", "unknown action"), at=AT))
    )
    assert body == {
        "type": "error",
        "timestamp": "2026-11-25T08:00:00.123Z",
        "error": {"code": "INVALID_ACTION", "message": "unknown action", "details": None},
    }


def test_server_messages_round_trip_through_the_client_decoder() -> None:
    sent = Complete(timestamp=AT, request_id="r1", result={"url": "u"})
    received = decode_server_message(encode(sent))
    assert isinstance(received, Complete)
    assert (received.request_id, received.result) == ("r1", {"url": "u"})


# -- the storable fast path -----------------------------------------------------------

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(["\ud800", "\udfff"])),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(value=_json_values, ascii_only=st.booleans())
def test_the_fast_path_passes_only_what_the_full_walk_passes(value: Any, ascii_only: bool) -> None:
    """`_plainly_storable` may send anything to the full walk, but never skips the
    walk for a value the walk would refuse (either JSON spelling of the text)."""
    text = json.dumps({"action": "echo", "payload": {"v": value}}, ensure_ascii=ascii_only)
    if _plainly_storable(text):
        assert _storable_problem(json.loads(text)) is None


@pytest.mark.parametrize(
    "text",
    [
        '{"action":"echo","payload":{"":1}}',
        '{"action":"echo","payload":{"k":"\\ud800"}}',
        '{"action":"echo","payload":' + "[" * 40 + "]" * 40 + "}",
    ],
)
def test_the_fast_path_sends_each_kind_of_problem_to_the_walk(text: str) -> None:
    assert not _plainly_storable(text)
    assert _storable_problem(json.loads(text)) is not None
