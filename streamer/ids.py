"""The one place ids are made."""

from __future__ import annotations

import base64
import os
import secrets

from streamer.models import ConnectionId, RequestId

__all__ = ["new_connection_id", "new_request_id"]


def new_connection_id() -> ConnectionId:
    """An id shaped like API Gateway's: 12 random bytes, base64 (`WyHPAfymhcwCENw0`)."""
    return ConnectionId(base64.b64encode(secrets.token_bytes(12)).decode("ascii"))


def new_request_id() -> RequestId:
    """A server-made request id, used when the client sends none: `req_` and
    128 random bits in hex (`uuid4` costs five times as much for six bits fewer)."""
    return RequestId(f"req_{os.urandom(16).hex()}")
