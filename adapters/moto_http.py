"""A keep-alive HTTP/1.1 front for moto on one asyncio loop: DynamoDB and Streams
calls go straight to moto's handlers, everything else to moto's WSGI app.

moto's own server path for one DynamoDB call is waitress (a thread hand-off per
request), moto's domain dispatcher, Flask (a request context, CORS, URL
routing) and only then `DynamoHandler.dispatch`. That path cost about a quarter
of the server's CPU per call. Here a call whose `X-Amz-Target` names DynamoDB
or DynamoDB Streams is parsed off the socket and handed to the same handler
class Flask would have routed it to, with the body, method, URL and headers it
reads; any other request (moto's `/moto-api`, other services) goes through the
WSGI app, so answers stay moto's.

Every call runs on the loop's one thread, to the end, before the next is read:
calls are applied one at a time, so two conditional writes of one item can
never both pass their condition (DynamoDB's atomicity, which moto's threaded
server loses).
"""

from __future__ import annotations

import asyncio
import io
import logging
import sys
import traceback
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote

from requests.structures import CaseInsensitiveDict

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["MotoProtocol", "handler_for_target"]

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES: Final = 64 * 1024
"""The request line and headers; anything longer is refused (431)."""
MAX_BODY_BYTES: Final = 32 * 1024 * 1024
"""A request body; DynamoDB's largest (a 25-item batch of 400 KB items) fits many times."""
_JSON_TYPE: Final = "application/x-amz-json-1.0"

Dispatch = Callable[[Any, str, Any], tuple[int, dict[str, Any], str | bytes]]


def handler_for_target(target: str) -> Dispatch | None:
    """moto's dispatch for an `X-Amz-Target` (`DynamoDB_20120810.PutItem`), or None
    when the call is for a service this front does not shortcut."""
    service, _, _ = target.partition(".")
    if service == "DynamoDB_20120810":
        from moto.dynamodb.responses import DynamoHandler

        return DynamoHandler.dispatch
    if service == "DynamoDBStreams_20120810":
        from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

        return DynamoDBStreamsHandler.dispatch
    return None


class _MotoRequest:
    """What moto's `BaseResponse.setup_class` reads of a request (as from boto's
    own `AWSPreparedRequest`: a `body`, so no form parsing)."""

    __slots__ = ("body", "headers", "method", "url")

    def __init__(self, method: str, url: str, headers: CaseInsensitiveDict[str], body: bytes):
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body


class MotoProtocol(asyncio.Protocol):
    """One client connection: requests parsed in order, each answered before the
    next is read (HTTP/1.1 keep-alive and pipelining; `Connection: close` honoured).

    Args:
        app: moto's WSGI app, for requests no shortcut takes.
        server_name: host and port of the listening socket (for URLs and WSGI).
        connections: the open connections, this one in it while it is open (to
            close them all when the server stops).
    """

    def __init__(
        self,
        app: WSGIApplication,
        server_name: tuple[str, int],
        connections: set[MotoProtocol],
    ) -> None:
        self._app = app
        self._connections = connections
        self._host, self._port = server_name
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._connections.add(self)
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) else ""

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._transport = None
        self._buffer.clear()

    def close(self) -> None:
        """Close the connection (the server is stopping)."""
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._transport is not None and self._serve_one():
            pass

    # -- one request ---------------------------------------------------------------

    def _serve_one(self) -> bool:
        """Answer the first whole request in the buffer; False when there is none."""
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                self._refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            return False
        try:
            method, target, version, headers = _parse_head(bytes(buffer[:end]))
            length = int(headers.get("Content-Length") or 0)
        except ValueError:
            self._refuse(HTTPStatus.BAD_REQUEST)
            return False
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            self._refuse(HTTPStatus.LENGTH_REQUIRED)
            return False
        if not 0 <= length <= MAX_BODY_BYTES:
            self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            return False
        start = end + 4
        if len(buffer) < start + length:
            return False
        body = bytes(buffer[start : start + length])
        del buffer[: start + length]
        keep_alive = _keep_alive(version, headers)
        status, response_headers, content = self._answer(method, target, headers, body)
        self._write(status, response_headers, content, keep_alive=keep_alive)
        if not keep_alive:
            self._buffer.clear()  # nothing after a `Connection: close` is answered
            self.close()
            return False
        return True

    def _answer(
        self, method: str, target: str, headers: CaseInsensitiveDict[str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        host = headers.get("Host") or f"{self._host}:{self._port}"
        dispatch = handler_for_target(headers.get("X-Amz-Target", ""))
        url = f"http://{host}{target}"
        try:
            if dispatch is None or method != "POST":
                return self._wsgi(method, target, host, headers, body)
            status, answer_headers, content = dispatch(
                _MotoRequest(method, url, headers, body), url, headers
            )
        except Exception as exc:
            # moto's bug, not the caller's: a 500 botocore retries, and the frames
            # (never the message, which may quote an item) for whoever runs the server.
            logger.error(
                "moto raised %s on %s\n%s",
                type(exc).__name__,
                headers.get("X-Amz-Target") or f"{method} {target.partition('?')[0]}",
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            error = b'{"__type":"com.amazonaws.dynamodb.v20120810#InternalFailure"}'
            return 500, [("Content-Type", _JSON_TYPE)], error
        pairs = [(name, str(value)) for name, value in answer_headers.items() if name != "status"]
        if not any(name.lower() == "content-type" for name, _ in pairs):
            pairs.append(("Content-Type", _JSON_TYPE))
        data = content.encode() if isinstance(content, str) else content
        return int(status), pairs, data

    def _wsgi(
        self,
        method: str,
        target: str,
        host: str,
        headers: CaseInsensitiveDict[str],
        body: bytes,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        path, _, query = target.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path, encoding="latin-1"),
            "RAW_URI": target,
            "REQUEST_URI": target,
            "QUERY_STRING": query,
            "SERVER_NAME": self._host,
            "SERVER_PORT": str(self._port),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": self._peer,
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in headers.items():
            key = name.upper().replace("-", "_")
            if key == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value
            elif key != "CONTENT_LENGTH":
                environ[f"HTTP_{key}"] = value
        environ["HTTP_HOST"] = host
        started: list[Any] = []

        def start_response(status: str, pairs: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started[:] = [status, pairs]
            return lambda _data: None

        result: Iterable[bytes] = self._app(environ, start_response)
        try:
            content = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status_line, pairs = started
        kept = [
            (name, value)
            for name, value in pairs
            if name.lower() not in {"content-length", "transfer-encoding", "connection"}
        ]
        return int(status_line.split(" ", 1)[0]), kept, content

    def _write(
        self, status: int, headers: list[tuple[str, str]], content: bytes, *, keep_alive: bool
    ) -> None:
        if self._transport is None:
            return
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append(f"Content-Length: {len(content)}")
        if not keep_alive:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._transport.write(head + content)

    def _refuse(self, status: HTTPStatus) -> None:
        """A request this front cannot read: say so and close (the stream is lost)."""
        self._write(
            status.value, [("Content-Type", "text/plain")], status.phrase.encode(), keep_alive=False
        )
        if self._transport is not None:
            self._transport.close()
        self._buffer.clear()


def _parse_head(head: bytes) -> tuple[str, str, str, CaseInsensitiveDict[str]]:
    """The request line and headers (ValueError when they are not HTTP/1.x)."""
    text = head.decode("latin-1")
    request_line, *header_lines = text.split("\r\n")
    method, target, version = request_line.split(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(version)
    headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
    for line in header_lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError(line)
        headers[name.strip()] = value.strip()
    return method, target, version, headers


def _keep_alive(version: str, headers: CaseInsensitiveDict[str]) -> bool:
    connection = headers.get("Connection", "").lower()
    if version == "HTTP/1.0":
        return connection == "keep-alive"
    return connection != "close"
