"""The emulator's saved tables (`emulator/persistence.py`) against the moto server:
what a dump holds, how it is restored, and what is never overwritten."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.aws import client_kwargs, get_session
from adapters.dynamodb import create_tables, delete_tables
from emulator.persistence import STATE_FILE, TableState
from streamer.settings import Settings

REQUEST = {
    "RequestID": {"S": "t#u#r1"},
    "Status": {"S": "PENDING"},
    "Payload": {"M": {"n": {"N": "1.5"}, "tags": {"L": [{"S": "a"}, {"NULL": True}]}}},
    "Blob": {"B": b"\x00\xffbinary"},
    "Blobs": {"BS": [b"\x01", b"\x02"]},
}
SUBSCRIPTION = {"RequestID": {"S": "t#u#r1"}, "ConnectionID": {"S": "AAAAAAAAAAAAAAAA"}}


@pytest.fixture
async def other_tables(moto_endpoint: str) -> AsyncIterator[Settings]:
    """A second, empty set of tables: where a restart restores to."""
    suffix = uuid.uuid4().hex[:12]
    settings = dataclasses.replace(
        Settings(),
        connections_table=f"streamer-connections-{suffix}",
        requests_table=f"streamer-requests-{suffix}",
        subscriptions_table=f"streamer-subscriptions-{suffix}",
        dynamodb_endpoint_url=moto_endpoint,
    )
    await create_tables(settings)
    yield settings
    await delete_tables(settings)


async def _put(settings: Settings, table: str, item: dict[str, Any]) -> None:
    async with get_session().client("dynamodb", **client_kwargs(settings)) as client:
        await client.put_item(TableName=table, Item=item)


async def _items(settings: Settings, table: str) -> list[dict[str, Any]]:
    async with get_session().client("dynamodb", **client_kwargs(settings)) as client:
        page = await client.scan(TableName=table, ConsistentRead=True)
    items: list[dict[str, Any]] = page["Items"]
    return items


def _state(settings: Settings, path: Path) -> TableState:
    return TableState(settings, session=get_session(), path=path, interval_s=3600)


async def test_a_dump_restores_requests_and_subscriptions_but_not_connections(
    dynamodb_settings: Settings, other_tables: Settings, tmp_path: Path
) -> None:
    path = tmp_path / STATE_FILE
    await _put(dynamodb_settings, dynamodb_settings.requests_table, REQUEST)
    await _put(dynamodb_settings, dynamodb_settings.subscriptions_table, SUBSCRIPTION)
    connection = {"ConnectionID": {"S": "BBBBBBBBBBBBBBBB"}, "UserID": {"S": "u"}}
    await _put(dynamodb_settings, dynamodb_settings.connections_table, connection)
    saver = _state(dynamodb_settings, path)
    assert (await saver.restore()).items == {}  # no file yet: nothing to put back
    await saver.close()  # the shutdown save
    assert saver.saves == 1
    assert set(json.loads(path.read_text())["tables"]) == {"requests", "subscriptions"}

    restorer = _state(other_tables, path)
    report = await restorer.restore()
    await restorer.close()
    assert report.items == {"requests": 1, "subscriptions": 1}
    assert report.saved_at is not None
    assert await _items(other_tables, other_tables.requests_table) == [REQUEST]
    assert await _items(other_tables, other_tables.subscriptions_table) == [SUBSCRIPTION]
    assert await _items(other_tables, other_tables.connections_table) == []


async def test_nothing_is_saved_before_a_restore_ran(
    dynamodb_settings: Settings, tmp_path: Path
) -> None:
    """A start that fails before restoring never overwrites the last good dump."""
    path = tmp_path / STATE_FILE
    path.write_text('{"version": 1, "tables": {"requests": [], "subscriptions": []}}')
    before = path.read_text()
    state = _state(dynamodb_settings, path)
    assert await state.save() is False
    await state.close()
    assert path.read_text() == before


async def test_an_unchanged_dump_is_not_written_again(
    dynamodb_settings: Settings, tmp_path: Path
) -> None:
    state = _state(dynamodb_settings, tmp_path / STATE_FILE)
    await state.restore()
    assert await state.save() is True
    assert await state.save() is False
    await _put(dynamodb_settings, dynamodb_settings.requests_table, REQUEST)
    assert await state.save() is True
    await state.close()
    assert state.saves == 2


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        '{"version": 99, "tables": {}}',
        '{"version": 1, "tables": {"requests": [{"RequestID": "no type"}]}}',
    ],
)
async def test_an_unreadable_dump_is_moved_aside_and_the_start_goes_on(
    dynamodb_settings: Settings, tmp_path: Path, content: str
) -> None:
    path = tmp_path / STATE_FILE
    path.write_text(content)
    state = _state(dynamodb_settings, path)
    assert (await state.restore()).items == {}
    await state.close()
    assert (tmp_path / f"{STATE_FILE}.unreadable").read_text() == content
    assert json.loads(path.read_text())["tables"] == {"requests": [], "subscriptions": []}


class SteppedSleep:
    """The saver's sleep, returning only when the test steps it."""

    def __init__(self) -> None:
        self.waiting = asyncio.Event()
        self._go = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.waiting.set()
        await self._go.wait()
        self._go.clear()

    async def step(self) -> None:
        """Let one sleep end, then wait until the saver sleeps again."""
        self.waiting.clear()
        self._go.set()
        await asyncio.wait_for(self.waiting.wait(), 15)


async def test_periodic_saves_scan_only_after_a_change(
    dynamodb_settings: Settings, tmp_path: Path
) -> None:
    """Each save scans the whole tables: an emulator nobody writes to makes none."""
    sleep = SteppedSleep()
    state = TableState(
        dynamodb_settings, session=get_session(), path=tmp_path / STATE_FILE, interval_s=5,
        sleep=sleep,
    )  # fmt: skip
    await state.restore()
    state.start()
    await asyncio.wait_for(sleep.waiting.wait(), 15)
    await sleep.step()  # the first save after a start
    assert state.scans == 1
    for _ in range(3):
        await sleep.step()
    assert state.scans == 1
    state.mark_changed()
    await sleep.step()
    assert state.scans == 2
    await state.close()
