"""Lambda-side test inputs and stand-ins, built one way for every suite: API
Gateway's recorded events (`fixtures/lambda_events/`) for one connection, the parts
of Lambda's context object the handlers read, and a management API stub."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from aiohttp import web

__all__ = [
    "EVENTS",
    "LambdaContext",
    "ManagementApiStub",
    "connect_event",
    "disconnect_event",
    "gone_response",
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


class ManagementApiStub:
    """API Gateway's `@connections/{id}` on a loopback port, served from a thread of
    its own so synchronous Lambda handlers can call it. A subclass answers through
    `answer`, for the `methods` routed (`"*"` for any); `url` is the stage URL
    once started (`start`/`stop`, or as a context manager)."""

    methods: tuple[str, ...] = ("POST", "DELETE")
    client_max_size = 1024**2

    def __init__(self) -> None:
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def answer(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            server = web.Application(client_max_size=self.client_max_size)
            for method in self.methods:
                server.router.add_route(method, "/{stage}/@connections/{id}", self.answer)
            self._runner = web.AppRunner(server, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/prod"
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()
        self._loop.close()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("management API stub did not start")

    def stop(self) -> None:
        async def cleanup() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def gone_response() -> web.Response:
    """The management API's answer for a connection that no longer exists."""
    return web.json_response(
        {"message": None}, status=410, headers={"x-amzn-ErrorType": "GoneException"}
    )
