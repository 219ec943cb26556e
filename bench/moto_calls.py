"""moto's CPU per DynamoDB call under the emulator's call mix (`python -m bench.moto_calls`).

Starts the server the emulator embeds (`python -m adapters.moto_server`) in a
process of its own and drives it through the real stores (`open_stores`) with
what one `echo_async` request costs the store: `enqueue` (a conditional
PutItem), the claim and the completion (two conditional UpdateItems returning
ALL_NEW), the subscribers (a Query), plus one `GetRecords` of the requests
stream every 5 requests. Prints calls/s and the server's CPU per call, the
figure that bounds how many calls the one-at-a-time server can apply per
second. `--ladder` runs it without the patches of moto in `PATCHES`, then adds
them one at a time; `--profile` records the server with py-spy. `--instructions`
records the requests of a run with one in flight, replays them through the
server's front in a process of their own under valgrind, and prints the
instructions per call: a count the machine's load does not move, where CPU time
does (`--without` applies to it too). Evidence for `docs/design-notes.md`; not
part of `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.aws import client_kwargs, get_session
from adapters.dynamodb.stores import DynamoDBStores, open_stores
from adapters.dynamodb.tables import create_tables
from bench.procs import CACHE_DIR, HOST, LOG_DIR, ServerProcess, free_port, python_env
from streamer import transitions
from streamer.models import (
    AsyncRequest,
    ConnectionId,
    RequestId,
    RequestStatus,
    Subscription,
    TenantId,
    UserId,
    request_key,
)
from streamer.settings import Settings

T0 = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)
READ_EVERY = 5
"""One `GetRecords` per this many requests (the emulator's poller makes ~0.2 per request)."""


def _request(n: int) -> AsyncRequest:
    rid = f"bench-{n:06d}"
    return AsyncRequest(
        key=request_key("tenant-1", "user-1", rid),
        request_id=RequestId(rid),
        connection_id=ConnectionId("WyHPAfymhcwCENw="),
        user_id=UserId("user-1"),
        tenant_id=TenantId("tenant-1"),
        action="echo_async",
        payload={"message": "hello", "delay_ms": 0, "n": n, "tags": ["a", "b"]},
        status=RequestStatus.PENDING,
        created_at=T0,
        updated_at=T0,
        max_retries=3,
        timeout_s=300.0,
        metadata={"source": "bench", "client": {"ip": "127.0.0.1", "agent": "bench/1"}},
    )


@dataclasses.dataclass(slots=True)
class Counts:
    """Calls made, by kind."""

    put: int = 0
    update: int = 0
    query: int = 0
    records: int = 0
    read: int = 0

    @property
    def calls(self) -> int:
        return self.put + self.update + self.query + self.read


async def _one(stores: DynamoDBStores, n: int, counts: Counts) -> None:
    request = _request(n)
    created = await stores.requests.enqueue(request)
    assert created.created
    claimed = await stores.requests.apply(
        request.key,
        transitions.claim(now=T0 + timedelta(seconds=1), lease_until=T0 + timedelta(seconds=301)),
    )
    assert claimed is not None
    done = await stores.requests.apply(
        request.key,
        transitions.complete(
            attempt=claimed.attempt,
            result={"echo": request.payload, "steps": [1, 2, 3]},
            now=T0 + timedelta(seconds=2),
            expires_at=int((T0 + timedelta(days=1)).timestamp()),
        ),
    )
    assert done is not None
    subscribers = await stores.subscriptions.list_for_request(request.key)
    assert len(subscribers) == 1
    counts.put += 1
    counts.update += 2
    counts.query += 1


PATCHES = (
    "moto_serialize",
    "moto_expressions",
    "moto_dispatch",
    "moto_traverse",
    "moto_items",
    "moto_updates",
    "moto_responses",
    "moto_snapshots",
)
"""The server's patches of moto this measures, in the order they were added."""


def _start_server(without: frozenset[str]) -> ServerProcess:
    """`python -m adapters.moto_server` in its own process, the patches in `without` left out."""
    port = free_port()
    disable = "".join(
        f"import adapters.{name} as m; m.install = lambda: None; " for name in sorted(without)
    )
    threads = os.environ.get("MOTO_CALLS_THREADS")
    if threads:
        disable += f"import adapters.moto_server as s; s._THREADS = {int(threads)}; "
    code = f"{disable}from adapters.moto_server import main; main()"
    argv = [sys.executable, "-c", code, "--host", HOST, "--port", str(port)]
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / "moto-calls.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(argv, env=python_env(), stdout=log, stderr=subprocess.STDOUT)
    server = ServerProcess("moto", popen, "", log_path, http_url=f"http://{HOST}:{port}")
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return server
        except OSError:
            if popen.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"moto did not start:\n{server.log_tail()}") from None
            time.sleep(0.05)


@dataclasses.dataclass(frozen=True, slots=True)
class Figures:
    """One run's result."""

    calls: int
    wall_s: float
    cpu_s: float
    records: int

    def line(self, label: str) -> str:
        return (
            f"{label:<34} {self.calls / self.wall_s:6.0f} calls/s "
            f"{1000 * self.cpu_s / self.calls:6.2f} ms CPU/call  ({self.calls} calls, "
            f"{self.records} records, {self.wall_s:.1f} s)"
        )


async def first_shard_iterator(dynamodb: Any, streams: Any, table: str) -> str:
    """A `TRIM_HORIZON` iterator of the first shard of `table`'s stream (the one
    shard a fresh moto table has)."""
    described = await dynamodb.describe_table(TableName=table)
    arn = described["Table"]["LatestStreamArn"]
    shard = (await streams.describe_stream(StreamArn=arn))["StreamDescription"]["Shards"][0]
    found = await streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )
    return str(found["ShardIterator"])


def bench_settings(endpoint: str | None) -> Settings:
    """Settings naming the bench's three tables on `endpoint`."""
    return dataclasses.replace(
        Settings(),
        connections_table="bench-connections",
        requests_table="bench-requests",
        subscriptions_table="bench-subscriptions",
        dynamodb_endpoint_url=endpoint,
        aws_region="us-east-1",
    )


async def _subscribe(stores: DynamoDBStores, requests: int) -> None:
    """One subscriber for each of the first `requests` requests (what `_one` looks up)."""
    for n in range(requests):
        await stores.subscriptions.add(
            Subscription(_request(n).key, ConnectionId("WyHPAfymhcwCENw="), T0, 2_000_000_000)
        )


async def _run(args: argparse.Namespace, without: frozenset[str]) -> Figures:
    server = _start_server(without)
    try:
        settings = bench_settings(server.http_url)
        await create_tables(settings)
        session = get_session()
        total = args.warmup + args.requests
        async with (
            open_stores(settings) as stores,
            session.client("dynamodbstreams", **client_kwargs(settings)) as streams,
        ):
            iterator = await first_shard_iterator(stores.client, streams, settings.requests_table)
            await _subscribe(stores, total)
            counts = Counts()
            queue: asyncio.Queue[int] = asyncio.Queue()

            async def worker() -> None:
                nonlocal iterator
                while not queue.empty():
                    n = queue.get_nowait()
                    await _one(stores, n, counts)
                    if n % READ_EVERY == 0:
                        page = await streams.get_records(ShardIterator=iterator, Limit=1000)
                        iterator = page["NextShardIterator"]
                        counts.records += len(page["Records"])
                        counts.read += 1

            for n in range(args.warmup):
                queue.put_nowait(n)
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            counts = Counts()
            for n in range(args.warmup, total):
                queue.put_nowait(n)
            spy = _profile(server.pid) if args.profile else None
            _, cpu_before = server.cpu_seconds()
            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            wall = time.perf_counter() - started
            _, cpu_after = server.cpu_seconds()
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
    finally:
        server.stop()
    return Figures(counts.calls, wall, cpu_after - cpu_before, counts.records)


def _profile(pid: int) -> subprocess.Popen[bytes]:
    out = CACHE_DIR / "moto_calls.pyspy.txt"
    print(f"  py-spy → {out}")
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "--gil",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "-r",
            "200",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


async def _record(requests: int) -> dict[str, list[bytes]]:
    """The raw requests of a run with one in flight: the set-up, then the calls."""
    from adapters import moto_http
    from adapters.moto_server import LocalMotoServer

    chunks: list[bytes] = []
    stock = moto_http.MotoProtocol.data_received

    def data_received(self: moto_http.MotoProtocol, data: bytes) -> None:
        chunks.append(bytes(data))
        stock(self, data)

    moto_http.MotoProtocol.data_received = data_received  # type: ignore[method-assign]
    server = LocalMotoServer()
    server.start()
    try:
        settings = bench_settings(server.endpoint)
        await create_tables(settings)
        async with (
            open_stores(settings) as stores,
            get_session().client("dynamodbstreams", **client_kwargs(settings)) as streams,
        ):
            iterator = await first_shard_iterator(stores.client, streams, settings.requests_table)
            await _subscribe(stores, requests)
            setup = len(chunks)
            for n in range(requests):
                await _one(stores, n, Counts())
                if n % READ_EVERY == 0:
                    page = await streams.get_records(ShardIterator=iterator, Limit=1000)
                    iterator = page["NextShardIterator"]
    finally:
        server.stop()
        moto_http.MotoProtocol.data_received = stock  # type: ignore[method-assign]
    return {"setup": chunks[:setup], "calls": chunks[setup:]}


def _replay(path: Path, calls: int, without: frozenset[str]) -> None:
    """Feed the recorded set-up and the first `calls` calls to the server's front in
    this process (each `GetRecords` with the iterator the last answer gave)."""
    import importlib
    import json

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    from adapters import moto_server
    from adapters.moto_http import MotoProtocol

    for name in without:
        patch: Any = importlib.import_module(f"adapters.{name}")
        patch.install = lambda: None
    moto_server.install_patches()
    recorded = pickle.loads(path.read_bytes())
    written: list[bytes] = []

    class Transport(asyncio.Transport):
        def write(self, data: bytes | bytearray | memoryview) -> None:
            written.append(bytes(data))

        def get_extra_info(self, name: str, default: object = None) -> object:
            return (HOST, 1) if name == "peername" else default

        def close(self) -> None:
            pass

    front = MotoProtocol(DomainDispatcherApplication(create_backend_app), (HOST, 5000), set())
    front.connection_made(Transport())
    iterator: str | None = None
    failed = 0
    for chunk in [*recorded["setup"], *recorded["calls"][:calls]]:
        if b"DynamoDBStreams_20120810.GetRecords" in chunk:
            head, _, body = chunk.partition(b"\r\n\r\n")
            new_body = json.dumps({**json.loads(body), "ShardIterator": iterator}).encode()
            head = re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % len(new_body), head)
            chunk = head + b"\r\n\r\n" + new_body
        written.clear()
        front.data_received(chunk)
        for answer in written:
            failed += not answer.startswith(b"HTTP/1.1 200")
            body = answer.partition(b"\r\n\r\n")[2]
            if b"ShardIterator" in body:
                got = json.loads(body)
                iterator = got.get("NextShardIterator") or got.get("ShardIterator") or iterator
    if failed:
        raise SystemExit(f"{failed} answers were not 200: the replay is not the run")


def _instructions(args: argparse.Namespace, without: frozenset[str]) -> None:
    """Instructions per call of the recorded calls, replayed under valgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--instructions needs valgrind")
    path = CACHE_DIR / "moto_calls.requests.pickle"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    recorded = asyncio.run(_record(args.requests))
    path.write_bytes(pickle.dumps(recorded))
    calls = len(recorded["calls"])
    counts = []
    for replayed in (0, calls):
        argv = [valgrind, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
        argv += [sys.executable, "-m", "bench.moto_calls", "--replay", str(path)]
        argv += ["--calls", str(replayed), *(f"--without={name}" for name in sorted(without))]
        done = subprocess.run(argv, env=python_env(), capture_output=True, text=True, check=True)
        found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
        if found is None:
            raise SystemExit(f"no instruction count from valgrind:\n{done.stderr[-2000:]}")
        counts.append(int(found.group(1).replace(",", "")))
    label = "without " + ", ".join(sorted(without)) if without else "LocalMotoServer"
    print(
        f"{label:<34} {(counts[1] - counts[0]) / calls / 1e6:6.3f} M instructions/call "
        f"({calls} calls)"
    )


def main() -> None:
    """Parse arguments and run once."""
    parser = argparse.ArgumentParser(prog="python -m bench.moto_calls", description=__doc__)
    parser.add_argument("--requests", type=int, default=400, help="timed requests (400)")
    parser.add_argument("--warmup", type=int, default=40, help="untimed requests first (40)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (8)")
    parser.add_argument("--profile", action="store_true", help="py-spy the server (raw)")
    parser.add_argument(
        "--without", action="append", default=[], choices=PATCHES, help="leave a patch out"
    )
    parser.add_argument(
        "--ladder",
        action="store_true",
        help="run moto's own, then each patch added in turn (one line each)",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="instructions per call of a recorded run (1 in flight), replayed under valgrind",
    )
    parser.add_argument("--replay", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay is not None:
        _replay(args.replay, args.calls, frozenset(args.without))
        return
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    in_flight = 1 if args.instructions else args.concurrency
    print(
        f"{args.requests} requests, {in_flight} in flight: per request 1 PutItem, "
        f"2 UpdateItem, 1 Query; 1 GetRecords per {READ_EVERY} requests"
    )
    if args.instructions:
        _instructions(args, frozenset(args.without))
        return
    if not args.ladder:
        without = frozenset(args.without)
        label = "without " + ", ".join(sorted(without)) if without else "LocalMotoServer"
        print(asyncio.run(_run(args, without)).line(label))
        return
    for added in range(len(PATCHES) + 1):
        without = frozenset(PATCHES[added:])
        label = "+ " + PATCHES[added - 1] if added else "moto's own (moto_query only)"
        print(asyncio.run(_run(args, without)).line(label), flush=True)


if __name__ == "__main__":
    main()
