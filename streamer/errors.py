"""The error hierarchy: one root, `StreamerError`, carrying a wire error code."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

__all__ = [
    "ConnectRefused",
    "ConnectionGone",
    "ErrorCode",
    "ItemTooLarge",
    "RequestCancelled",
    "Retryable",
    "StoreUnavailable",
    "StreamerError",
    "UnstorableValue",
]


class ErrorCode(StrEnum):
    """Every error code the wire protocol knows (DESIGN §3)."""

    VALIDATION_ERROR = "VALIDATION_ERROR"
    UNAUTHORIZED = "UNAUTHORIZED"
    NOT_FOUND = "NOT_FOUND"
    INVALID_ACTION = "INVALID_ACTION"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    TIMEOUT = "TIMEOUT"
    RATE_LIMITED = "RATE_LIMITED"
    PROCESSING_FAILED = "PROCESSING_FAILED"
    CANCELLED = "CANCELLED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"


class StreamerError(Exception):
    """An error with a wire code; actions raise it to choose what the client sees.

    Args:
        code: one of `ErrorCode` (a plain string is accepted and checked).
        message: a human-readable sentence, safe to show to the client.
        details: optional JSON-serialisable details (validation errors, limits).
    """

    def __init__(
        self,
        code: ErrorCode | str,
        message: str,
        details: dict[str, Any] | list[Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.details = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.value!r}, {self.message!r})"


class Retryable(StreamerError):
    """A transient failure: the processor retries the action with backoff.

    Args:
        message: what went wrong, safe to show to the client if retries run out.
        details: optional details kept with the final error.
    """

    def __init__(
        self, message: str = "transient failure", details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(ErrorCode.PROCESSING_FAILED, message, details)


class RequestCancelled(StreamerError):
    """Raised inside a running action when its request has been cancelled."""

    def __init__(self, message: str = "request was cancelled") -> None:
        super().__init__(ErrorCode.CANCELLED, message)


class ConnectionGone(StreamerError):
    """The connection no longer exists (API Gateway's GoneException, HTTP 410).

    Args:
        connection_id: the id that could not be reached.
    """

    def __init__(self, connection_id: str) -> None:
        super().__init__(ErrorCode.NOT_FOUND, "connection is gone")
        self.connection_id = connection_id


class ConnectRefused(StreamerError):
    """A `$connect` refusal: the handshake fails with `status_code`, nothing stored.

    Args:
        status_code: 401 (bad token), 403 (tenant not allowed), 429 (too many connections).
        reason: why, for the logs only; the client sees a uniform message.
    """

    def __init__(self, status_code: int, reason: str) -> None:
        code = ErrorCode.RATE_LIMITED if status_code == 429 else ErrorCode.UNAUTHORIZED
        super().__init__(code, _REFUSAL_MESSAGES.get(status_code, "Unauthorized"))
        self.status_code = status_code
        self.reason = reason


_REFUSAL_MESSAGES = {401: "Unauthorized", 403: "Forbidden", 429: "Too Many Connections"}


class ItemTooLarge(StreamerError):
    """A write would exceed DynamoDB's 400 KB item limit; nothing was written."""

    def __init__(self, message: str = "item exceeds the 400 KB storage limit") -> None:
        super().__init__(ErrorCode.PAYLOAD_TOO_LARGE, message)


class UnstorableValue(StreamerError):
    """A value the store cannot keep (NaN, infinity, a number beyond DynamoDB's
    38 significant digits, an unsupported type); nothing was written. Not transient.

    Args:
        reason: what cannot be stored, safe to show to the client.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(ErrorCode.VALIDATION_ERROR, f"value cannot be stored: {reason}")


class StoreUnavailable(StreamerError):
    """The state store could not be reached or refused the call (transient)."""

    def __init__(self, message: str = "state store unavailable") -> None:
        super().__init__(ErrorCode.INTERNAL_ERROR, message)
