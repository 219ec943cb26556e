"""A moto server for local use (tests, the emulator) whose calls are atomic, as DynamoDB's are.

moto's `ThreadedMotoServer` serves requests on parallel threads without locking
its backends, so two concurrent conditional updates of one item can both pass
their condition — a race real DynamoDB never loses. This server keeps moto's
threaded connection handling but applies one request at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.serving import BaseWSGIServer, make_server

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["LocalMotoServer"]


class LocalMotoServer:
    """moto's HTTP server on a loopback port, one request applied at a time.

    Args:
        host: the address to bind (loopback by default).
        port: the port; 0 picks a free one (see `endpoint` after `start`).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve on a daemon thread; returns once the socket is listening."""
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )

        app = DomainDispatcherApplication(create_backend_app)
        lock = threading.Lock()

        def one_at_a_time(
            environ: WSGIEnvironment, start_response: StartResponse
        ) -> Iterable[bytes]:
            with lock:
                body: Any = app(environ, start_response)
                return list(body)

        self._server = make_server(
            self._host, self._port, one_at_a_time, threaded=True, request_handler=MotoRequestHandler
        )
        server = self._server
        self._thread = threading.Thread(
            # A short poll: `stop` waits up to one poll interval for the loop to end.
            target=lambda: server.serve_forever(poll_interval=0.05),
            name="moto-server",
            daemon=True,
        )
        self._thread.start()

    @property
    def endpoint(self) -> str:
        """`http://HOST:PORT` of the running server."""
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def get_host_and_port(self) -> tuple[str, int]:
        """The bound address (the same call as on moto's `ThreadedMotoServer`)."""
        if self._server is None:
            raise RuntimeError("LocalMotoServer is not started")
        return self._host, self._server.server_port

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
