"""The wire protocol: client frames in, server messages out (DESIGN §3).

`decode_client_message` turns any frame into a `ClientMessage` or raises a
`StreamerError` with the right code; nothing else escapes it. Server messages
are pydantic models; `encode` turns one into the JSON text frame.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeGuard

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from streamer.clock import MILLISECONDS_Z, utc_second
from streamer.errors import ErrorCode, StreamerError

__all__ = [
    "MAX_CLIENT_ID_CHARS",
    "MAX_NESTING_DEPTH",
    "MAX_PARTITION_KEY_BYTES",
    "Acknowledgment",
    "ClientMessage",
    "Complete",
    "ErrorBody",
    "ErrorMessage",
    "Notification",
    "ProgressUpdate",
    "Response",
    "ServerMessage",
    "decode_client_message",
    "decode_server_message",
    "encode",
    "encoded_size",
    "error_message",
    "format_timestamp",
    "is_valid_request_id",
]

MAX_CLIENT_ID_CHARS = 128
MAX_ACTION_CHARS = 128
MAX_PARTITION_KEY_BYTES = 2048
"""DynamoDB's partition key limit, which a request's full key must fit."""
MAX_NESTING_DEPTH = 32
"""DynamoDB's limit on nested attributes; a message deeper than this could not be stored."""
MAX_NAME_BYTES = 65_535
"""DynamoDB's limit on an attribute (map key) name; an empty name is refused too."""


def format_timestamp(at: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a `Z`: `2026-11-25T08:00:00.123Z`."""
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    # `isoformat` goes through printf, several µs with two timestamps per reply:
    # the date and time are formatted once a second, the milliseconds looked up
    # (truncated, as `isoformat(timespec="milliseconds")` does).
    return utc_second(at) + MILLISECONDS_Z[at.microsecond // 1000]


Timestamp = Annotated[datetime, PlainSerializer(format_timestamp, return_type=str)]


# `defer_build`: a model's validator and serializer are built at its first use,
# not at import, so a Lambda cold start builds only the messages it sends.


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """One client frame: `{"id"?, "action", "payload"?, "metadata"?}`.

    A plain record, not a pydantic model: `decode_client_message` checks every
    field itself (each failure has its own code and words), so validating again
    would only copy the payload.
    """

    action: str
    id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


class _ServerMessageBase(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    timestamp: Timestamp


class Response(_ServerMessageBase):
    """The answer to a sync action or a built-in."""

    type: Literal["response"] = "response"
    request_id: str
    success: bool = True
    data: Any = None


class Acknowledgment(_ServerMessageBase):
    """An async action was queued (or was already, for a repeated id)."""

    type: Literal["acknowledgment"] = "acknowledgment"
    request_id: str
    status: str = "queued"
    message: str = "Request queued for processing"


class ProgressUpdate(_ServerMessageBase):
    """Progress of a running async action; `percentage` never decreases."""

    type: Literal["progress"] = "progress"
    request_id: str
    percentage: float
    message: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


class Complete(_ServerMessageBase):
    """An async action finished successfully."""

    type: Literal["complete"] = "complete"
    request_id: str
    success: Literal[True] = True
    result: Any = None


class ErrorBody(BaseModel):
    """`{code, message, details}` inside an error message."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    code: ErrorCode
    message: str
    details: Any = None


class ErrorMessage(_ServerMessageBase):
    """Something failed; `request_id` is present when known."""

    type: Literal["error"] = "error"
    request_id: str | None = None
    error: ErrorBody


class Notification(_ServerMessageBase):
    """A server push, not tied to a request (DESIGN §11): `topic` (None when the
    sender named none) and any JSON `data`."""

    type: Literal["notification"] = "notification"
    topic: str | None = None
    data: Any = None


ServerMessage = Annotated[
    Response | Acknowledgment | ProgressUpdate | Complete | ErrorMessage | Notification,
    Field(discriminator="type"),
]


@functools.cache
def _server_message_adapter() -> TypeAdapter[ServerMessage]:
    """Built on first use: only the client SDK decodes server messages."""
    return TypeAdapter(ServerMessage)


def encode(message: ServerMessage) -> str:
    """The JSON text frame of a server message: compact, UTF-8, keys in field order."""
    exclude = (
        {"request_id"} if isinstance(message, ErrorMessage) and message.request_id is None else None
    )
    try:
        # pydantic's own serializer writes the JSON in one pass, at a third of
        # `model_dump` + `json.dumps` (the same values: NaN and infinity as null).
        return message.model_dump_json(exclude=exclude)
    except PydanticSerializationError:
        # Lone surrogates (a client's "\ud800" escape, echoed back) cannot be sent
        # as UTF-8; escaped as JSON they can, and mean the same.
        body = message.model_dump(mode="json", exclude=exclude)
        return json.dumps(body, separators=(",", ":"))


def encoded_size(frame: str | bytes) -> int:
    """A frame's size in bytes on the wire (UTF-8), as API Gateway's limits count it."""
    if isinstance(frame, bytes) or frame.isascii():  # isascii reads a flag, no scan
        return len(frame)
    return len(frame.encode("utf-8", "surrogatepass"))


def decode_server_message(frame: str | bytes) -> ServerMessage:
    """Parse a server frame (the client SDK's side).

    Raises:
        StreamerError: VALIDATION_ERROR when the frame is not a server message.
    """
    try:
        return _server_message_adapter().validate_json(frame)
    except ValidationError as exc:
        raise StreamerError(ErrorCode.VALIDATION_ERROR, "not a server message") from exc


def error_message(
    error: StreamerError, *, at: datetime, request_id: str | None = None
) -> ErrorMessage:
    """The `error` message for a `StreamerError`."""
    return ErrorMessage(
        timestamp=at,
        request_id=request_id,
        error=ErrorBody(code=error.code, message=error.message, details=error.details),
    )


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _plainly_storable(text: str) -> bool:
    """True when the JSON text cannot hold what `_storable_problem` looks for, so
    the walk is skipped: no `\\u` escape and valid UTF-8 (no lone surrogate), at
    most `MAX_NESTING_DEPTH` brackets (no deeper nesting), no `""` (no empty key),
    and shorter than `MAX_NAME_BYTES` (no oversized key). False means "walk it"."""
    if "\\u" in text or '""' in text:
        return False
    if text.count("{") + text.count("[") > MAX_NESTING_DEPTH:
        return False
    if text.isascii():
        return len(text) <= MAX_NAME_BYTES
    try:
        return len(text.encode("utf-8")) <= MAX_NAME_BYTES
    except UnicodeEncodeError:
        return False


def _storable_problem(body: Any) -> str | None:
    """Why DynamoDB could not keep this JSON value (nesting, a lone surrogate, an
    empty or oversized map key), or None. Iterative: depth is what is checked."""
    pending: list[tuple[Any, int]] = [(body, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            if _has_lone_surrogate(value):
                return "a string holds a lone surrogate (not valid Unicode)"
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_NESTING_DEPTH:
            return f"the message is nested deeper than {MAX_NESTING_DEPTH} levels"
        if isinstance(value, list):
            pending.extend((item, depth + 1) for item in value)
            continue
        for key, item in value.items():
            if _has_lone_surrogate(key):
                return "a key holds a lone surrogate (not valid Unicode)"
            if not key or len(key.encode("utf-8")) > MAX_NAME_BYTES:
                return f"a key must be 1 to {MAX_NAME_BYTES} bytes"
            pending.append((item, depth + 1))
    return None


def is_valid_request_id(value: object) -> TypeGuard[str]:
    """A client's request id: a string of 1 to 128 printable characters (any
    Unicode, `#` included), so its full key stays within DynamoDB's limit."""
    return isinstance(value, str) and 0 < len(value) <= MAX_CLIENT_ID_CHARS and value.isprintable()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    # `1e400` is valid JSON but overflows to infinity, which no store can keep.
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of range")
    return value


_CLIENT_JSON = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
"""One decoder for every frame (`json.loads` with hooks builds one per call)."""


def decode_client_message(frame: str | bytes) -> ClientMessage:
    """Decode one client message (its size and kind were judged before, by
    `streamer.frames.FramePolicy`).

    Raises:
        StreamerError: VALIDATION_ERROR for bytes that are not UTF-8, text that is
            not JSON, JSON that is not an object, JSON nested deeper than 32
            levels, a lone surrogate in any key or string, an empty or oversized
            key, a bad `id`, `payload` or `metadata`; INVALID_ACTION for a
            missing, empty or non-string `action`. Nothing else escapes.
    """
    try:
        text = frame.decode("utf-8") if isinstance(frame, bytes) else frame
        body = _CLIENT_JSON.decode(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise StreamerError(ErrorCode.VALIDATION_ERROR, "message is not valid JSON") from exc
    if not isinstance(body, dict):
        raise StreamerError(ErrorCode.VALIDATION_ERROR, "message must be a JSON object")
    problem = None if _plainly_storable(text) else _storable_problem(body)
    if problem is not None:
        raise StreamerError(ErrorCode.VALIDATION_ERROR, problem)

    action = body.get("action")
    if not isinstance(action, str) or not action.strip():
        raise StreamerError(
            ErrorCode.INVALID_ACTION, "message needs an 'action' that is a non-empty string"
        )
    if len(action) > MAX_ACTION_CHARS or not action.isprintable():
        raise StreamerError(ErrorCode.INVALID_ACTION, "unknown action")

    client_id = body.get("id")
    if client_id is not None and not is_valid_request_id(client_id):
        raise StreamerError(
            ErrorCode.VALIDATION_ERROR,
            f"'id' must be a string of 1 to {MAX_CLIENT_ID_CHARS} printable characters",
        )

    payload = body.get("payload")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise StreamerError(ErrorCode.VALIDATION_ERROR, "'payload' must be a JSON object")

    metadata = body.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise StreamerError(ErrorCode.VALIDATION_ERROR, "'metadata' must be a JSON object")

    return ClientMessage(id=client_id, action=action, payload=payload, metadata=metadata)
