"""Holds idle authenticated connections for the connections scenario
(`python -m bench.holder`), driven by one-line commands on stdin.

Commands: `open N [BUDGET_S]` opens N more connections in parallel batches (no
new handshake starts after BUDGET_S seconds) and answers one JSON line
`{"held", "opened", "failed", "skipped", "elapsed_s", "errors"}`; `status`
answers `{"held"}` (connections still open); `watch` starts reading every
connection, counting the notifications each gets by topic (`{"watching"}`);
`wait TOPIC TIMEOUT_S` waits until every watched connection has one of that
topic and answers `{"reached", "total", "first_at", "last_at"}` (connections
that got one, notifications of the topic in all, wall times of the first and the
last first arrival);
`close` (or EOF) exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from bench.procs import raise_fd_limit
from bench.wsclient import with_token


class Holder:
    """Idle connections to one server, opened `concurrency` at a time.

    Args:
        url: the WebSocket URL.
        tokens: one token per user; connection `i` uses `tokens[i % len(tokens)]`.
        concurrency: handshakes in flight at once.
    """

    def __init__(self, url: str, tokens: list[str], concurrency: int) -> None:
        self.url = url
        self.tokens = tokens
        self.concurrency = concurrency
        self.connections: list[ClientConnection] = []
        self._readers: list[asyncio.Task[None]] = []
        self._got: dict[str, Counter[int]] = defaultdict(Counter)
        """Per topic: notifications received by each connection (its index)."""
        self._first_at: dict[str, float] = {}
        self._last_at: dict[str, float] = {}
        self._arrived = asyncio.Event()

    async def open(self, count: int, budget_s: float = float("inf")) -> dict[str, object]:
        started = time.perf_counter()
        deadline = started + budget_s
        gate = asyncio.Semaphore(self.concurrency)
        errors: Counter[str] = Counter()
        skipped = 0
        first = len(self.connections)

        async def one(index: int) -> None:
            nonlocal skipped
            token = self.tokens[index % len(self.tokens)]
            async with gate:
                if time.perf_counter() > deadline:
                    skipped += 1
                    return
                try:
                    ws = await connect(
                        with_token(self.url, token),
                        ping_interval=None,
                        open_timeout=120,
                        max_size=2**20,
                    )
                except Exception as exc:  # any refusal counts as a failed connect
                    errors[type(exc).__name__ + ": " + str(exc)[:80]] += 1
                    return
                self.connections.append(ws)

        await asyncio.gather(*(one(first + i) for i in range(count)))
        elapsed = time.perf_counter() - started
        return {
            "held": self.held(),
            "opened": len(self.connections) - first,
            "failed": sum(errors.values()),
            "skipped": skipped,
            "elapsed_s": elapsed,
            "errors": dict(errors.most_common(5)),
        }

    def held(self) -> int:
        return sum(1 for ws in self.connections if ws.state is State.OPEN)

    def watch(self) -> dict[str, object]:
        for index in range(len(self._readers), len(self.connections)):
            self._readers.append(asyncio.create_task(self._read(index)))
        return {"watching": len(self._readers)}

    async def _read(self, index: int) -> None:
        ws = self.connections[index]
        try:
            async for frame in ws:
                message = json.loads(frame)
                if message.get("type") != "notification":
                    continue
                topic = str(message.get("topic"))
                got = self._got[topic]
                if not got[index]:
                    self._last_at[topic] = time.time()
                    self._first_at.setdefault(topic, self._last_at[topic])
                got[index] += 1
                self._arrived.set()
        except Exception:  # a dropped socket simply stops counting
            return

    async def wait(self, topic: str, timeout_s: float) -> dict[str, object]:
        deadline = time.monotonic() + timeout_s
        got = self._got[topic]
        while len(got) < len(self._readers):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        return {
            "reached": len(got),
            "total": sum(got.values()),
            "first_at": self._first_at.get(topic),
            "last_at": self._last_at.get(topic),
        }


async def serve_commands(holder: Holder) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        verb, _, arg = line.partition(" ")
        if verb == "open":
            count, _, budget = arg.partition(" ")
            reply = await holder.open(int(count), float(budget) if budget else float("inf"))
        elif verb == "status":
            reply = {"held": holder.held()}
        elif verb == "watch":
            reply = holder.watch()
        elif verb == "wait":
            topic, _, timeout = arg.partition(" ")
            reply = await holder.wait(topic, float(timeout or 60))
        elif verb == "close":
            break
        else:
            reply = {"error": f"unknown command {verb!r}"}
        print(json.dumps(reply), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--tokens", type=Path, required=True, help="JSON list of tokens")
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    raise_fd_limit()
    tokens = json.loads(args.tokens.read_text())
    holder = Holder(args.url, tokens, args.concurrency)
    asyncio.run(serve_commands(holder))


if __name__ == "__main__":
    main()
