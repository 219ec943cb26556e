"""A moto server for local use (tests, the emulator) whose calls are atomic, as DynamoDB's are.

moto's `ThreadedMotoServer` serves requests on parallel threads without locking
its backends, so two concurrent conditional updates of one item can both pass
their condition — a race real DynamoDB never loses. This server applies one
request at a time, on one asyncio loop (`adapters.moto_http`): HTTP/1.1
keep-alive, where werkzeug's server answers every request with `Connection:
close` and starts a thread for it (a TCP handshake and a thread per DynamoDB
call), and DynamoDB calls go straight to moto's handler instead of through
Flask. It also installs the patches of moto in `adapters/moto_*.py`,
only in this server: queries, stream answers, update expressions, dispatch,
items, validator walks, flat updates, answers' request ids and the item
read before an update give moto's answers for less CPU; shard iterators expire
and stream records are trimmed as DynamoDB's are.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import socket
import sys
import threading
from collections.abc import Sequence

from adapters.moto_http import MotoProtocol

__all__ = ["GC_THRESHOLDS", "LocalMotoServer", "install_patches", "main", "tune_garbage_collector"]

_BACKLOG = 1024
"""Pending connections: above any client pool (aiobotocore keeps 50) times a test run's clients."""


def install_patches() -> None:
    """Install this server's patches of moto in this process (each is idempotent)."""
    from adapters import (
        moto_dispatch,
        moto_expressions,
        moto_items,
        moto_query,
        moto_responses,
        moto_serialize,
        moto_snapshots,
        moto_streams,
        moto_traverse,
        moto_updates,
    )

    moto_query.install()
    moto_serialize.install()
    moto_expressions.install()
    moto_streams.install()
    moto_dispatch.install()
    moto_traverse.install()
    moto_items.install()
    moto_updates.install()
    moto_responses.install()
    moto_snapshots.install()


class LocalMotoServer:
    """moto's HTTP server on a loopback port, one request applied at a time.

    Served by `adapters.moto_http` on an asyncio loop of its own thread: HTTP/1.1
    keep-alive, DynamoDB and Streams calls handed straight to moto's handlers.

    Args:
        host: the address to bind (loopback by default).
        port: the port; 0 picks a free one (see `endpoint` after `start`).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._bound_port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[MotoProtocol] = set()

    def start(self) -> None:
        """Bind and serve on a daemon thread; returns once the socket is listening."""
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        install_patches()

        app = DomainDispatcherApplication(create_backend_app)
        loop = asyncio.new_event_loop()
        sock = socket.create_server((self._host, self._port), backlog=_BACKLOG)
        self._bound_port = int(sock.getsockname()[1])
        server_name = (self._host, self._bound_port)
        listening = threading.Event()
        failed: list[BaseException] = []

        def serve() -> None:
            # On its own thread from the start: the caller may be running a loop.
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(
                        lambda: MotoProtocol(app, server_name, self._connections), sock=sock
                    )
                )
            except BaseException as exc:
                failed.append(exc)
                return
            finally:
                listening.set()
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name="moto-server", daemon=True)
        self._thread.start()
        listening.wait()
        if failed:
            self.stop()
            raise failed[0]

    @property
    def endpoint(self) -> str:
        """`http://HOST:PORT` of the running server."""
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def get_host_and_port(self) -> tuple[str, int]:
        """The bound address (the same call as on moto's `ThreadedMotoServer`)."""
        if self._bound_port is None:
            raise RuntimeError("LocalMotoServer is not started")
        return self._host, self._bound_port

    def stop(self) -> None:
        """Stop serving, close every socket and join the thread (idempotent)."""
        loop, self._loop = self._loop, None
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        self._bound_port = None
        if loop is None:
            return
        if server is None:  # it never listened
            if thread is not None:
                thread.join()
            loop.close()
            return

        async def close() -> None:
            server.close()
            for connection in list(self._connections):
                connection.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join()
        loop.close()


GC_THRESHOLDS = (700, 10, 1000)
"""CPython's young-generation thresholds, and a full collection after 1,000 collections
of the middle generation rather than 10."""


def tune_garbage_collector() -> None:
    """Collect the whole heap a hundred times less often, in the server's own process.

    What moto keeps (tables, items, their values, stream records) is long-lived data,
    and nearly everything it frees goes by reference count. Yet CPython's
    default thresholds walked that whole heap every ~500 `echo_async` requests: under
    the emulator's async load 7 full collections of 130-150 ms each, 9-11% of the
    server's CPU, each one a pause every queued call waits out. The young generations
    keep their thresholds, so cycles made by a call still go at once.
    """
    gc.set_threshold(*GC_THRESHOLDS)


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
    tune_garbage_collector()
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
