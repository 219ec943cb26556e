"""The wire protocol: client frames in, server messages out (DESIGN §3).

`decode_client_message` turns any frame into a `ClientMessage` or raises a
`StreamerError` with the right code; nothing else escapes it. Server messages
are pydantic models; `encode` turns one into the JSON text frame.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, TypeAdapter, ValidationError

from streamer.errors import ErrorCode, StreamerError

__all__ = [
    "MAX_CLIENT_ID_CHARS",
    "MAX_MESSAGE_BYTES",
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
]

MAX_MESSAGE_BYTES = 128 * 1024
"""API Gateway's WebSocket message limit."""
MAX_CLIENT_ID_CHARS = 128
MAX_ACTION_CHARS = 128


def format_timestamp(at: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a `Z`: `2026-11-25T08:00:00.123Z`."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


Timestamp = Annotated[datetime, PlainSerializer(format_timestamp, return_type=str)]


class ClientMessage(BaseModel):
    """One client frame: `{"id"?, "action", "payload"?, "metadata"?}`."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str | None = None
    action: str
    payload: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)


class _ServerMessageBase(BaseModel):
    model_config = ConfigDict(frozen=True)

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

    model_config = ConfigDict(frozen=True)

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
_server_message_adapter: TypeAdapter[ServerMessage] = TypeAdapter(ServerMessage)


def encode(message: ServerMessage) -> str:
    """The JSON text frame of a server message."""
    body = message.model_dump(mode="json")
    if isinstance(message, ErrorMessage) and message.request_id is None:
        del body["request_id"]
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (a client's "\ud800" escape, echoed back) cannot be sent
        # as UTF-8; escaped as JSON they can, and mean the same.
        text = json.dumps(body, separators=(",", ":"))
    return text


def encoded_size(frame: str | bytes) -> int:
    """A frame's size in bytes on the wire (UTF-8), as API Gateway's limits count it."""
    return len(frame) if isinstance(frame, bytes) else len(frame.encode("utf-8", "surrogatepass"))


def decode_server_message(frame: str | bytes) -> ServerMessage:
    """Parse a server frame (the client SDK's side).

    Raises:
        StreamerError: VALIDATION_ERROR when the frame is not a server message.
    """
    try:
        return _server_message_adapter.validate_json(frame)
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


def _is_printable(text: str) -> bool:
    return all(ch.isprintable() for ch in text)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    # `1e400` is valid JSON but overflows to infinity, which no store can keep.
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of range")
    return value


def decode_client_message(
    frame: str | bytes, *, max_bytes: int = MAX_MESSAGE_BYTES
) -> ClientMessage:
    """Decode one client frame.

    Raises:
        StreamerError: PAYLOAD_TOO_LARGE over `max_bytes`; VALIDATION_ERROR for a
            binary frame that is not UTF-8, text that is not JSON, JSON that is not
            an object, a bad `id`, `payload` or `metadata`; INVALID_ACTION for a
            missing, empty or non-string `action`. Nothing else escapes.
    """
    size = encoded_size(frame)
    if size > max_bytes:
        raise StreamerError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"message is {size} bytes; the limit is {max_bytes}",
            {"size": size, "limit": max_bytes},
        )
    try:
        text = frame.decode("utf-8") if isinstance(frame, bytes) else frame
        body = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise StreamerError(ErrorCode.VALIDATION_ERROR, "message is not valid JSON") from exc
    if not isinstance(body, dict):
        raise StreamerError(ErrorCode.VALIDATION_ERROR, "message must be a JSON object")

    action = body.get("action")
    if not isinstance(action, str) or not action.strip():
        raise StreamerError(
            ErrorCode.INVALID_ACTION, "message needs an 'action' that is a non-empty string"
        )
    if len(action) > MAX_ACTION_CHARS or not _is_printable(action):
        raise StreamerError(ErrorCode.INVALID_ACTION, "unknown action")

    client_id = body.get("id")
    if client_id is not None and (
        not isinstance(client_id, str)
        or not client_id
        or len(client_id) > MAX_CLIENT_ID_CHARS
        or not _is_printable(client_id)
    ):
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
