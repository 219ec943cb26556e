"""Lambda-side test inputs, built one way for every suite: API Gateway's recorded
events (`fixtures/lambda_events/`) for one connection, and the parts of Lambda's
context object the handlers read."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "EVENTS",
    "LambdaContext",
    "connect_event",
    "disconnect_event",
    "load_event",
    "message_event",
]

EVENTS = Path(__file__).resolve().parent / "fixtures" / "lambda_events"


@dataclass
class LambdaContext:
    """The parts of Lambda's context object the handlers read."""

    function_name: str = "streamer-test"
    remaining_ms: int = 60_000
    aws_request_id: str = "8f5e8a4c-1b6e-4a7e-9a55-3f1c9d2b7e10"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def load_event(name: str) -> dict[str, Any]:
    """A fresh copy of one recorded event (`connect.json`, `message.json`, ...)."""
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


def connect_event(connection_id: str, token: str | None) -> dict[str, Any]:
    """`$connect` with the token in the query string (both maps, as API Gateway
    sends them), or with no query string at all."""
    event = load_event("connect.json")
    event["requestContext"]["connectionId"] = connection_id
    if token is None:
        event["queryStringParameters"] = None
        event["multiValueQueryStringParameters"] = None
    else:
        event["queryStringParameters"] = {"Authorization": token}
        event["multiValueQueryStringParameters"] = {"Authorization": [token]}
    return event


def message_event(connection_id: str, body: str | bytes) -> dict[str, Any]:
    """`$default` carrying one message: text as is, binary base64-encoded as API
    Gateway encodes it."""
    event = load_event("message.json")
    event["requestContext"]["connectionId"] = connection_id
    if isinstance(body, bytes):
        event["body"] = base64.b64encode(body).decode()
        event["isBase64Encoded"] = True
    else:
        event["body"] = body
    return event


def disconnect_event(connection_id: str) -> dict[str, Any]:
    """`$disconnect` of one connection."""
    event = load_event("disconnect.json")
    event["requestContext"]["connectionId"] = connection_id
    return event
