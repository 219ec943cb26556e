"""Load: many concurrent connections, each with several async requests reporting
progress, in repeated rounds against one emulator. Every request completes
exactly once with its progress in order, no socket is left open once the
clients leave, and memory stays near where it was after the first round.

`make test` runs a CI-sized version (STREAMER_LOAD_CONNECTIONS, default 64);
`make soak` (STREAMER_SOAK=1, `-m slow`) runs 1,000 connections in rounds for at
least STREAMER_SOAK_MINUTES (default 10) and three rounds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import psutil
import pytest
from conftest import EmulatorStarter, Runs
from rel_support import Inbox, MotoProcess

from adapters.dynamodb import create_tables
from emulator.testing import EmulatorHarness
from streamer.models import RequestKey, RequestStatus, request_key
from streamer.settings import Settings

TENANT = "tenant-load"
STEPS = 4
CI_CONNECTIONS = int(os.environ.get("STREAMER_LOAD_CONNECTIONS", "64"))
"""Sized so three rounds fit in ~30 s on two cores: end to end (emulator, botocore,
moto) the machine does ~10 requests a second."""
CI_REQUESTS = 2
SOAK_CONNECTIONS = 1000
SOAK_REQUESTS = 2


@dataclass
class RoundReport:
    """What one round saw."""

    connections: int = 0
    requests: int = 0
    completes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    open_at_once: int = 0
    connection_ids: list[str] = field(default_factory=list)


async def _one_client(
    harness: EmulatorHarness,
    index: int,
    requests: int,
    label: str,
    report: RoundReport,
    handshakes: asyncio.Semaphore,
    all_open: asyncio.Barrier,
) -> None:
    ids = [f"{label}-c{index}-r{j}" for j in range(requests)]
    try:
        async with handshakes:
            connection = harness.connect(f"load-{index}", TENANT)
            ws = await connection.__aenter__()
    except BaseException:
        await all_open.abort()  # the round cannot start: fail it instead of hanging
        raise
    try:
        await all_open.wait()
        inbox = Inbox(ws)
        for request_id in ids:
            await inbox.send({"id": request_id, "action": "steps", "payload": {"steps": STEPS}})
        for request_id in ids:
            await inbox.final(request_id, timeout_s=900)
        bye = await inbox.ask({"id": f"{label}-c{index}-bye", "action": "ping"}, timeout_s=60)
        report.connection_ids.append(bye["data"]["connection_id"])
    finally:
        await connection.__aexit__(None, None, None)
    _check(inbox, ids, report)


def _check(inbox: Inbox, ids: list[str], report: RoundReport) -> None:
    position = {id(m): n for n, m in enumerate(inbox.messages)}
    for request_id in ids:
        acks = inbox.of(request_id, "acknowledgment")
        finals = inbox.of(request_id, "complete", "error")
        updates = inbox.of(request_id, "progress")
        progress = [m["percentage"] for m in updates]
        if len(acks) != 1:
            report.problems.append(f"{request_id}: {len(acks)} acknowledgments")
        if [m["type"] for m in finals] != ["complete"]:
            report.problems.append(f"{request_id}: outcomes {[m['type'] for m in finals]}")
            continue
        report.completes[request_id] += 1
        if progress != sorted(progress):
            report.problems.append(f"{request_id}: progress out of order {progress}")
        if any(position[id(m)] > position[id(finals[0])] for m in updates):
            report.problems.append(f"{request_id}: progress after complete")


async def _round(
    harness: EmulatorHarness, connections: int, requests: int, label: str
) -> RoundReport:
    """Open every connection (50 handshakes at a time), then all send at once."""
    report = RoundReport(connections=connections, requests=connections * requests)
    handshakes = asyncio.Semaphore(50)
    all_open = asyncio.Barrier(connections + 1)
    started = time.perf_counter()
    async with asyncio.timeout(1800):
        clients = [
            asyncio.create_task(
                _one_client(harness, i, requests, label, report, handshakes, all_open)
            )
            for i in range(connections)
        ]
        await all_open.wait()
        report.open_at_once = len(harness.emulator.registry)
        await asyncio.gather(*clients)
    report.seconds = time.perf_counter() - started
    return report


def _table_count(harness: EmulatorHarness, table: str) -> int:
    settings = harness.emulator.settings
    client = boto3.client(
        "dynamodb", endpoint_url=settings.dynamodb_endpoint_url, region_name="us-east-1"
    )
    # Connection records only: the table also holds the ActiveConnections counter
    # item, which has no UserID.
    records = "attribute_exists(UserID)"
    return int(client.scan(TableName=table, Select="COUNT", FilterExpression=records)["Count"])


def _rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


async def _stored_statuses(harness: EmulatorHarness, keys: list[RequestKey]) -> Counter[str]:
    stores = harness.emulator.stores
    assert stores is not None
    statuses: Counter[str] = Counter()
    for key in keys:
        stored = await stores.requests.get(key)
        statuses[stored.status.value if stored else "MISSING"] += 1
    return statuses


async def _run_rounds(
    harness: EmulatorHarness,
    runs: Runs,
    *,
    connections: int,
    requests: int,
    rounds: int | None,
    minutes: float | None = None,
) -> list[tuple[RoundReport, float]]:
    """Rounds until `rounds` are done, or until `minutes` have passed and at least
    three rounds ran; each with its RSS after it."""
    results: list[tuple[RoundReport, float]] = []
    deadline = time.monotonic() + minutes * 60 if minutes else None
    gateway = harness.emulator.gateway
    assert gateway is not None
    while True:
        label = f"round{len(results)}"
        report = await _round(harness, connections, requests, label)
        assert len(report.connection_ids) == connections
        async with asyncio.timeout(120):
            await asyncio.gather(*map(gateway.wait_disconnected, report.connection_ids))
        assert len(harness.emulator.registry) == 0, "sockets left open"
        left = await asyncio.to_thread(
            _table_count, harness, harness.emulator.settings.connections_table
        )
        assert left == 0, f"{left} connection records left"
        assert report.open_at_once == connections
        assert report.problems == [], report.problems[:10]
        assert sum(report.completes.values()) == report.requests
        keys = [
            request_key(TENANT, f"load-{i}", f"{label}-c{i}-r{j}")
            for i in range(connections)
            for j in range(requests)
        ]
        statuses = await _stored_statuses(harness, keys)
        assert statuses == {RequestStatus.COMPLETED.value: report.requests}
        results.append((report, _rss_mb()))
        print(
            f"{label}: {connections} connections, {report.requests} requests "
            f"in {report.seconds:.1f} s, RSS {results[-1][1]:.0f} MB"
        )
        if rounds is not None and len(results) >= rounds:
            break
        if deadline is not None and time.monotonic() >= deadline and len(results) >= 3:
            break
    doubled = {rid: n for rid, n in runs.count.items() if n != 1}
    assert doubled == {}, f"actions run more than once: {list(doubled.items())[:10]}"
    return results


def _assert_memory_flat(results: list[tuple[RoundReport, float]]) -> None:
    """RSS of this process (emulator and clients) after the last round near the
    RSS after the first; a generous bound, as allocators keep freed memory."""
    first = results[0][1]
    last = results[-1][1]
    assert last - first < max(64.0, 0.25 * first), f"RSS {first:.0f} MB -> {last:.0f} MB"


@pytest.fixture
async def load_settings(dynamodb_settings: Settings) -> AsyncIterator[Settings]:
    """Tables on a moto server in its own process: in this one it would share the
    GIL with the emulator and dominate its memory figures."""
    moto = MotoProcess()
    await asyncio.to_thread(moto.start)
    try:
        settings = dataclasses.replace(dynamodb_settings, dynamodb_endpoint_url=moto.url)
        await create_tables(settings)
        yield settings
    finally:
        await asyncio.to_thread(moto.kill)


@pytest.mark.timeout(600)  # ~40 s alone; more when the machine is shared
async def test_concurrent_connections_complete_every_request_once_with_nothing_left_open(
    start_emulator: EmulatorStarter, load_settings: Settings, runs: Runs
) -> None:
    async with start_emulator(base=load_settings) as harness:
        results = await _run_rounds(
            harness, runs, connections=CI_CONNECTIONS, requests=CI_REQUESTS, rounds=3
        )

    assert len(results) == 3
    assert sum(len(r.completes) for r, _ in results) == 3 * CI_CONNECTIONS * CI_REQUESTS
    _assert_memory_flat(results)


@pytest.mark.slow
@pytest.mark.timeout(3 * 3600)
async def test_soak_a_thousand_connections_for_ten_minutes_loses_and_doubles_nothing(
    start_emulator: EmulatorStarter, load_settings: Settings, runs: Runs
) -> None:
    minutes = float(os.environ.get("STREAMER_SOAK_MINUTES", "10"))
    async with start_emulator(base=load_settings) as harness:
        results = await _run_rounds(
            harness,
            runs,
            connections=SOAK_CONNECTIONS,
            requests=SOAK_REQUESTS,
            rounds=None,
            minutes=minutes,
        )

    _assert_memory_flat(results)
    total: dict[str, Any] = {
        "rounds": len(results),
        "requests": sum(r.requests for r, _ in results),
        "rss_mb": [round(rss) for _, rss in results],
    }
    print(f"soak: {total}")
