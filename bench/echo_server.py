"""The physical floor: a bare websockets echo server (`python -m bench.echo_server`).

Configured like the emulator's socket (no permessage-deflate, as API Gateway),
so the two differ only by what happens between receiving and answering a frame.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from websockets.asyncio.server import ServerConnection, serve

from bench.procs import HOST, raise_fd_limit


async def _echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def serve_until_stopped(port: int) -> None:
    """Echo every frame back on `HOST:port` until SIGINT or SIGTERM."""
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(_echo, HOST, port, compression=None):
        await stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    raise_fd_limit()
    asyncio.run(serve_until_stopped(args.port))


if __name__ == "__main__":
    main()
