"""Warm reuse across a freeze: pooled connections the servers closed while the
container was frozen are replaced, not used, so the next call needs no retry."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from lambda_events import LambdaContext

import adapters.aws
from adapters.aws_lambda import router, runtime
from adapters.dynamodb import open_stores
from streamer.models import Connection, ConnectionId, TenantId, UserId
from streamer.settings import Settings

EVENTS = Path(__file__).resolve().parent.parent / "fixtures" / "lambda_events"
CONNECTION_ID = "FROZENFROZENFRO="


class ClosingProxy:
    """A TCP proxy to one server that can close every connection it carries from
    the server's side, as a server's keep-alive timeout does while a Lambda
    container is frozen.

    Args:
        target: the server's `(host, port)`.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0
        self._open: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            with self._lock:
                self.accepted += 1
                self._open.append((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass

    def close_all(self) -> int:
        """Close every carried connection (a FIN to the client); how many there were."""
        with self._lock:
            carried, self._open = self._open, []
        for client, upstream in carried:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        return len(carried)

    def stop(self) -> None:
        self._listener.close()
        self.close_all()


class _ManagementApi(BaseHTTPRequestHandler):
    """`POST /{stage}/@connections/{id}` answered 200, over keep-alive HTTP/1.1."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Attempts:
    """API calls made and HTTP attempts sent, by service (more attempts: a retry)."""

    calls: Counter[str]
    sent: Counter[str]

    def called(self, service: str, **_: Any) -> None:
        self.calls[service] += 1

    def send(self, service: str, **_: Any) -> None:
        self.sent[service] += 1


def _context() -> LambdaContext:
    return LambdaContext(function_name="streamer-router-test", remaining_ms=29000)


@pytest.fixture
def proxies(moto_endpoint: str) -> Iterator[tuple[ClosingProxy, ClosingProxy]]:
    """Proxies to moto and to a management API."""
    management = ThreadingHTTPServer(("127.0.0.1", 0), _ManagementApi)
    threading.Thread(target=management.serve_forever, daemon=True).start()
    host, port = moto_endpoint.removeprefix("http://").split(":")
    to_dynamodb = ClosingProxy((host, int(port)))
    to_management = ClosingProxy(("127.0.0.1", management.server_address[1]))
    try:
        yield to_dynamodb, to_management
    finally:
        to_dynamodb.stop()
        to_management.stop()
        management.shutdown()
        management.server_close()


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> Attempts:
    """Counts on the botocore session the functions' clients come from."""
    counted = Attempts(Counter(), Counter())
    session = adapters.aws.ThreadedSession()
    hooks = session.botocore_session
    for service in ("dynamodb", "apigatewaymanagementapi"):
        hooks.register(
            f"before-call.{service}", lambda service=service, **kw: counted.called(service)
        )
        hooks.register(
            f"before-send.{service}", lambda service=service, **kw: counted.send(service)
        )
    monkeypatch.setattr(adapters.aws, "_threaded_session", session)
    return counted


async def _register(settings: Settings, endpoint: str) -> None:
    """Store the connection the frames come from (straight to moto, not proxied)."""
    now = datetime.now(UTC)
    async with open_stores(settings) as stores:
        await stores.connections.put(
            Connection(
                connection_id=ConnectionId(CONNECTION_ID),
                user_id=UserId("user-1"),
                tenant_id=TenantId("tenant-1"),
                endpoint=endpoint,
                connected_at=now,
                last_ping=now,
                expires_at=int((now + timedelta(days=1)).timestamp()),
            )
        )


def _message_event() -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / "message.json").read_text())
    event["requestContext"]["connectionId"] = CONNECTION_ID
    event["body"] = json.dumps({"id": "m1", "action": "echo", "payload": {"n": 1}})
    return event


def test_the_first_call_after_the_servers_closed_pooled_sockets_needs_no_retry(
    dynamodb_settings: Settings,
    proxies: tuple[ClosingProxy, ClosingProxy],
    attempts: Attempts,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    to_dynamodb, to_management = proxies
    environment = {
        "CONNECTIONS_TABLE": dynamodb_settings.connections_table,
        "REQUESTS_TABLE": dynamodb_settings.requests_table,
        "SUBSCRIPTIONS_TABLE": dynamodb_settings.subscriptions_table,
        "DYNAMODB_ENDPOINT_URL": f"http://127.0.0.1:{to_dynamodb.port}",
        "WEBSOCKET_ENDPOINT": f"http://127.0.0.1:{to_management.port}/prod",
        "AWS_REGION": "us-east-1",
        "STREAMER_APP": "streamer.demo:app",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    asyncio.run(_register(dynamodb_settings, environment["WEBSOCKET_ENDPOINT"]))
    runtime.reset_for_tests()
    try:
        assert router.handler(_message_event(), _context()) == {"statusCode": 200}
        assert attempts.calls == attempts.sent
        # Frozen: both servers close the idle keep-alive connections the pools hold.
        assert to_dynamodb.close_all() >= 1
        assert to_management.close_all() >= 1
        calls_before, accepted_before = (
            Counter(attempts.calls),
            (
                to_dynamodb.accepted,
                to_management.accepted,
            ),
        )

        assert router.handler(_message_event(), _context()) == {"statusCode": 200}

        made = attempts.calls - calls_before
        assert made["dynamodb"] >= 1
        assert made["apigatewaymanagementapi"] == 1
        assert attempts.sent == attempts.calls, "a call after the thaw was retried"
        # The closed sockets were replaced, not written to.
        assert to_dynamodb.accepted > accepted_before[0]
        assert to_management.accepted == accepted_before[1] + 1
    finally:
        runtime.reset_for_tests()
