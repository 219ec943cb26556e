"""The physical floor: a bare websockets echo server (`python -m bench.echo_server`).

Configured like the emulator's socket (no permessage-deflate, as API Gateway),
so the two differ only by what happens between receiving and answering a frame.
A `stream_progress` request is not echoed: it is answered with the frames the
emulator sends for it (acknowledgment, `count` progress reports, complete),
pushed as fast as the socket takes them, the floor of `progress_push_ratio`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from bench.procs import HOST, raise_fd_limit


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _progress_request(message: str | bytes) -> tuple[str, int] | None:
    """`(request id, count)` when `message` is a `stream_progress` request."""
    if not isinstance(message, str) or '"stream_progress"' not in message:
        return None
    frame: Any = json.loads(message)
    if not isinstance(frame, dict) or frame.get("action") != "stream_progress":
        return None
    return str(frame.get("id")), int((frame.get("payload") or {}).get("count", 100))


async def _push_progress(ws: ServerConnection, request_id: str, count: int) -> None:
    """The emulator's frames for one `stream_progress` request, one `send` each."""
    ack = {"timestamp": _now(), "type": "acknowledgment", "request_id": request_id}
    ack |= {"status": "queued", "message": "Request queued for processing"}
    await ws.send(json.dumps(ack))
    for seq in range(1, count + 1):
        report: dict[str, Any] = {"timestamp": _now(), "type": "progress", "request_id": request_id}
        report |= {"percentage": 100 * seq / count, "message": "step", "metadata": {"seq": seq}}
        await ws.send(json.dumps(report))
    done: dict[str, Any] = {"timestamp": _now(), "type": "complete", "request_id": request_id}
    done |= {"success": True, "result": {"reported": count}}
    await ws.send(json.dumps(done))


async def _echo(ws: ServerConnection) -> None:
    async for message in ws:
        progress = _progress_request(message)
        if progress is None:
            await ws.send(message)
        else:
            await _push_progress(ws, *progress)


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
