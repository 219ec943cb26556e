"""A moto server for local use (tests, the emulator) whose calls are atomic, as DynamoDB's are.

moto's `ThreadedMotoServer` serves requests on parallel threads without locking
its backends, so two concurrent conditional updates of one item can both pass
their condition — a race real DynamoDB never loses. This server applies one
request at a time, and serves them with waitress: HTTP/1.1 keep-alive on a small
thread pool, where werkzeug's server answers every request with
`Connection: close` and starts a thread for it (a TCP handshake and a thread
per DynamoDB call). It also installs the patches of moto in `adapters/moto_*.py`,
only in this server: queries, stream answers, update expressions and dispatch
give moto's answers for less CPU; shard iterators expire as DynamoDB's do.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import waitress
from waitress import wasyncore

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["LocalMotoServer", "main"]

_THREADS = 4
"""Connection work (parsing, writing) overlaps; moto itself runs one call at a time."""
_CONNECTION_LIMIT = 1000
"""Above any client pool (aiobotocore keeps 50 per client) times the clients of a test run."""


class LocalMotoServer:
    """moto's HTTP server on a loopback port, one request applied at a time.

    Args:
        host: the address to bind (loopback by default).
        port: the port; 0 picks a free one (see `endpoint` after `start`).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve on a daemon thread; returns once the socket is listening."""
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        from adapters import (
            moto_dispatch,
            moto_expressions,
            moto_query,
            moto_serialize,
            moto_streams,
        )

        moto_query.install()
        moto_serialize.install()
        moto_expressions.install()
        moto_streams.install()
        moto_dispatch.install()

        # Requests queue behind the lock by design: waitress's "Task queue depth" is noise.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        app = DomainDispatcherApplication(create_backend_app)
        lock = threading.Lock()

        def one_at_a_time(
            environ: WSGIEnvironment, start_response: StartResponse
        ) -> Iterable[bytes]:
            with lock:
                body: Any = app(environ, start_response)
                return list(body)

        self._server = waitress.create_server(
            one_at_a_time,
            host=self._host,
            port=self._port,
            threads=_THREADS,
            connection_limit=_CONNECTION_LIMIT,
            ident="moto",
        )
        self._thread = threading.Thread(target=self._server.run, name="moto-server", daemon=True)
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
        return self._host, int(self._server.effective_port)

    def stop(self) -> None:
        """Stop serving, close every socket and join the threads (idempotent)."""
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is None:
            return
        socket_map = server._map
        # Closed on the serving thread, between polls: the loop ends when its map is empty.
        server.trigger.pull_trigger(lambda: wasyncore.close_all(socket_map))
        if thread is not None:
            thread.join()
        server.task_dispatcher.shutdown()


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m adapters.moto_server [--host H] [--port N] [--until-stdin-closes]`: the
    server in a process of its own (the emulator's embedded DynamoDB, the benchmarks'
    standalone one). Prints `DynamoDB http://HOST:PORT` once it listens."""
    parser = argparse.ArgumentParser(
        prog="python -m adapters.moto_server", description=main.__doc__
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port (5000; 0 picks one)")
    parser.add_argument(
        "--until-stdin-closes",
        action="store_true",
        help="stop when standard input closes: the parent stopped it or died",
    )
    args = parser.parse_args(argv)
    server = LocalMotoServer(args.host, args.port)
    server.start()
    print(f"DynamoDB {server.endpoint}", flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    if args.until_stdin_closes:

        def wait_for_eof() -> None:
            sys.stdin.buffer.read()
            stopped.set()

        threading.Thread(target=wait_for_eof, name="stdin-watch", daemon=True).start()
    stopped.wait()
    server.stop()


if __name__ == "__main__":
    main()
