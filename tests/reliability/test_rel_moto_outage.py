"""The DynamoDB endpoint goes away and comes back while clients stay connected.

The outage is made by a TCP proxy between the emulator and moto that the test
cuts (listener closed, every open connection aborted: connection refused from
then on) and restores on the same port, so moto keeps its state. A second test
runs moto as a separate process, kills it and starts a fresh one on the same
port, which loses every table, as a restarted moto container does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from conftest import EmulatorStarter, Runs
from rel_support import Inbox, MotoProcess, log_events

import adapters.aws
import emulator.server
from adapters.dynamodb import create_tables
from emulator.testing import EmulatorHarness
from streamer.settings import Settings

LEASE_GRACE_S = 1.0


class CuttableProxy:
    """A loopback TCP proxy to `target` that can be cut and restored on one port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self._generation = 0
        """Bumped by each start and cut; a connection accepted under an older one is reset."""
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._generation += 1
        accept = functools.partial(self._accept, self._generation)
        self._server = await asyncio.start_server(accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and reset every open one."""
        assert self._server is not None
        self._generation += 1
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()
        self._server = None

    async def close(self) -> None:
        if self._server is not None:
            await self.cut()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(
        self, generation: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # A connection accepted before a cut can start here after it: reset it too.
        if generation != self._generation:
            writer.transport.abort()
            return
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            self._writers.discard(writer)
            writer.transport.abort()
            return
        if generation != self._generation:  # cut while connecting upstream
            up_writer.transport.abort()
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            pipe = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(sink)
            sink.transport.abort()


@pytest.fixture
def quick_aws_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two tries per AWS call and short timeouts, so the outage shows in seconds
    (the default budget of five tries takes up to ~15 s per call to give up)."""
    shrunk = functools.partial(
        adapters.aws.client_config, max_attempts=2, connect_timeout_s=1.0, read_timeout_s=5.0
    )
    monkeypatch.setattr(adapters.aws, "client_config", shrunk)


@pytest.fixture
async def proxy(dynamodb_settings: Settings) -> AsyncIterator[CuttableProxy]:
    assert dynamodb_settings.dynamodb_endpoint_url is not None
    host, port = dynamodb_settings.dynamodb_endpoint_url.removeprefix("http://").split(":")
    opened = CuttableProxy(host, int(port))
    await opened.start()
    yield opened
    await opened.close()


async def test_the_emulator_rides_out_a_dynamodb_outage_and_recovers_by_itself(
    start_emulator: EmulatorStarter,
    dynamodb_settings: Settings,
    proxy: CuttableProxy,
    runs: Runs,
    quick_aws_retries: None,
) -> None:
    base = dataclasses.replace(dynamodb_settings, dynamodb_endpoint_url=proxy.url)
    with log_events() as logs:
        async with (
            start_emulator(base=base, settings={"lease_grace_s": LEASE_GRACE_S}) as harness,
            harness.connect("alice") as ws,
        ):
            inbox = Inbox(ws)
            running = await inbox.ask(
                {"id": "before", "action": "gated", "payload": {"gate": "before"}}
            )
            late = await inbox.ask(
                {"id": "late", "action": "gated_short", "payload": {"gate": "late"}}
            )
            async with asyncio.timeout(15):
                await runs.started_event("before").wait()
                await runs.started_event("late").wait()

            await proxy.cut()
            # The sockets stay open; what needs no store is still answered at once.
            pong = await inbox.ask({"id": "p1", "action": "ping"})
            echo = await inbox.ask({"id": "e1", "action": "echo", "payload": {"a": 1}})
            # What needs the store is refused with INTERNAL_ERROR, nothing half-done.
            queued = await inbox.ask({"id": "during", "action": "steps", "payload": {}})
            status = await inbox.ask(
                {"id": "s1", "action": "status", "payload": {"request_id": "before"}}
            )
            handshake = await _handshake_status(harness)
            # An action finishing now cannot persist its completion: its processor
            # gives up and the request stays PROCESSING until the lease runs out.
            runs.gate("late").set()
            async with asyncio.timeout(30):
                await logs.on("handling a stream record failed").wait()

            await proxy.start()
            runs.gate("before").set()
            before = await inbox.final("before")
            late_final = await inbox.final("late")
            again = await inbox.ask({"id": "during", "action": "steps", "payload": {}})
            during = await inbox.final("during")
            async with harness.connect("alice") as fresh:
                fetched = await Inbox(fresh).ask(
                    {"id": "s2", "action": "status", "payload": {"request_id": "late"}}
                )
            pong_after = await inbox.ask({"id": "p2", "action": "ping"})

    assert running["type"] == late["type"] == "acknowledgment"
    assert pong["data"]["pong"] is True
    assert echo["data"] == {"echo": {"a": 1}}
    assert queued["error"]["code"] == "INTERNAL_ERROR"
    assert status["error"]["code"] == "INTERNAL_ERROR"
    assert handshake == 500
    assert before["type"] == "complete"
    assert late_final["type"] == "complete"
    assert len(inbox.of("late", "complete", "error")) == 1
    assert again["type"] == "acknowledgment"
    assert during["type"] == "complete"
    assert fetched["data"]["status"] == "COMPLETED"
    assert pong_after["data"]["pong"] is True
    assert runs.count["before"] == 1
    assert runs.count["during"] == 1
    assert runs.count["late"] == 2, "the lost completion was not recovered by a second run"


async def _handshake_status(harness: EmulatorHarness) -> int:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    token = harness.mint_token("alice")
    try:
        async with connect(f"{harness.ws_url}/?Authorization={token}", open_timeout=20):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


# -- a moto process that restarts empty -----------------------------------------------------


@pytest.fixture
def moto_process() -> Iterator[MotoProcess]:
    process = MotoProcess()
    process.start()
    yield process
    with contextlib.suppress(Exception):
        process.kill()


async def test_after_moto_restarts_empty_and_tables_are_recreated_new_requests_complete(
    start_emulator: EmulatorStarter,
    dynamodb_settings: Settings,
    moto_process: MotoProcess,
    runs: Runs,
    quick_aws_retries: None,
) -> None:
    """moto restarted empty (a container restart): the emulator keeps its sockets,
    answers INTERNAL_ERROR while the tables are missing, and once they are created
    again serves new connections and processes new requests by itself."""
    base = dataclasses.replace(dynamodb_settings, dynamodb_endpoint_url=moto_process.url)
    await create_tables(base)
    async with start_emulator(base=base) as harness, harness.connect("alice") as ws:
        inbox = Inbox(ws)
        first = await inbox.ask({"id": "first", "action": "steps", "payload": {}})
        assert first["type"] == "acknowledgment"
        assert (await inbox.final("first"))["type"] == "complete"

        await asyncio.to_thread(moto_process.kill)
        await asyncio.to_thread(moto_process.start)
        missing = await inbox.ask(
            {"id": "gone", "action": "status", "payload": {"request_id": "first"}}
        )
        await create_tables(base)
        alive = await inbox.ask({"id": "p", "action": "ping"})
        async with harness.connect("alice") as fresh:
            inbox_fresh = Inbox(fresh)
            after = await inbox_fresh.ask({"id": "after", "action": "steps", "payload": {}})
            assert after["type"] == "acknowledgment"
            final = await inbox_fresh.final("after", timeout_s=10)

    assert missing["type"] == "error"
    assert missing["error"]["code"] in ("INTERNAL_ERROR", "NOT_FOUND")
    assert alive["data"]["pong"] is True
    assert final["type"] == "complete"
    assert runs.count["after"] == 1


async def test_after_moto_restarts_empty_the_emulator_creates_the_tables_again_by_itself(
    start_emulator: EmulatorStarter,
    dynamodb_settings: Settings,
    moto_process: MotoProcess,
    runs: Runs,
    quick_aws_retries: None,
) -> None:
    """Nobody runs `streamer tables create`: the emulator sees the tables missing,
    makes them again, says so in `/health`, and new handshakes and requests work."""
    base = dataclasses.replace(dynamodb_settings, dynamodb_endpoint_url=moto_process.url)
    with log_events() as events:
        recreated = events.on("created the missing tables again")
        async with start_emulator(
            base=base, create_tables=True, table_check_interval_s=0.2
        ) as harness:
            async with harness.connect("alice") as ws:
                inbox = Inbox(ws)
                first = await inbox.ask({"id": "first", "action": "steps", "payload": {}})
                assert first["type"] == "acknowledgment"
                assert (await inbox.final("first"))["type"] == "complete"

                await asyncio.to_thread(moto_process.kill)
                await asyncio.to_thread(moto_process.start)
                await asyncio.wait_for(recreated.wait(), 30)
                alive = await inbox.ask({"id": "p", "action": "ping"})
            async with harness.connect("alice") as fresh:
                inbox_fresh = Inbox(fresh)
                after = await inbox_fresh.ask({"id": "after", "action": "steps", "payload": {}})
                final = await inbox_fresh.final("after", timeout_s=15)
            health = harness.emulator.health()["tables"]

    assert alive["data"]["pong"] is True
    assert after["type"] == "acknowledgment"
    assert final["type"] == "complete"
    assert runs.count["after"] == 1
    assert health["status"] == "ok"
    assert health["recreated"] >= 1
    assert set(health["last_missing"]) == {
        base.connections_table,
        base.requests_table,
        base.subscriptions_table,
    }


async def test_tables_lost_between_the_watchers_looks_are_all_reported(
    start_emulator: EmulatorStarter,
    dynamodb_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    quick_aws_retries: None,
) -> None:
    """The watcher looks at the tables one call at a time. When moto loses them all
    between two looks (a restart), the ones it saw before still count as missing:
    `/health` names every table the watcher had to create, not only the last one seen."""
    settings = dynamodb_settings
    real_exists = emulator.server._exists
    armed = asyncio.Event()

    async def exists_then_lose_all(client: Any, name: str) -> bool:
        if armed.is_set() and name == settings.subscriptions_table:
            armed.clear()
            for table in (
                settings.connections_table,
                settings.requests_table,
                settings.subscriptions_table,
            ):
                await client.delete_table(TableName=table)
        return await real_exists(client, name)

    monkeypatch.setattr(emulator.server, "_exists", exists_then_lose_all)
    with log_events() as events:
        recreated = events.on("created the missing tables again")
        async with start_emulator(create_tables=True, table_check_interval_s=0.05) as harness:
            armed.set()
            await asyncio.wait_for(recreated.wait(), 30)
            health = harness.emulator.health()["tables"]

    assert health["recreated"] == 1
    assert health["last_missing"] == [
        settings.connections_table,
        settings.requests_table,
        settings.subscriptions_table,
    ]
