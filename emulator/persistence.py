"""The embedded moto's requests and subscriptions, saved in the state folder and restored at start.

A dump goes through the DynamoDB API (a `Scan` of each table), is written
atomically (temporary file, fsync, rename) in a worker thread, and is restored
with `BatchWriteItem`. Connections are not kept: their sockets are gone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.aws import client_kwargs
from streamer.settings import Settings

__all__ = ["STATE_FILE", "RestoreReport", "TableState"]

log = logging.getLogger("emulator.persistence")

STATE_FILE = "tables.json"
"""Name of the dump under the state folder."""
FORMAT_VERSION = 1
_BATCH = 25  # BatchWriteItem's limit


@dataclass(frozen=True, slots=True)
class RestoreReport:
    """What `restore` put back, per kept table (by role: requests, subscriptions)."""

    items: Mapping[str, int]
    saved_at: str | None


class TableState:
    """Saves and restores the tables worth keeping across restarts.

    `restore()` first (it loads the dump, if any, into the empty tables), then
    `start()` saves every `interval_s` when `mark_changed` was called since the
    last save (each save is a `Scan` of the whole tables, so an idle emulator
    makes none); `close()` stops that and saves once more, changed or not.
    Nothing is saved before a restore has run, so a failed start never
    overwrites the last good dump with empty tables.

    Args:
        settings: the table names, region and DynamoDB endpoint.
        session: the aioboto3 session.
        path: the dump file.
        interval_s: seconds between saves while running (what a kill -9 may lose).
        sleep: waits between saves (tests pass one they step by hand).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        session: Any,
        path: Path,
        interval_s: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.path = path
        self.interval_s = interval_s
        self._sleep = sleep
        self._settings = settings
        self._tables = {
            "requests": settings.requests_table,
            "subscriptions": settings.subscriptions_table,
        }
        self._session = session
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._may_save = False
        self._last_saved: bytes | None = None
        self._changed = True
        self.saves = 0
        """Dumps written so far (an unchanged dump is not written again)."""
        self.scans = 0
        """Times the kept tables were read for a save."""

    async def _dynamodb(self) -> Any:
        if self._client is None:
            self._client = await self._stack.enter_async_context(
                self._session.client("dynamodb", **client_kwargs(self._settings))
            )
        return self._client

    async def restore(self) -> RestoreReport:
        """Put the dump's items back (an unreadable dump is moved aside, one warning)."""
        try:
            document = await asyncio.to_thread(self._read)
        except FileNotFoundError:
            self._may_save = True
            return RestoreReport(items={}, saved_at=None)
        except (OSError, ValueError) as exc:
            aside = self.path.with_name(self.path.name + ".unreadable")
            log.warning(
                "the saved tables are unreadable (%s); starting empty, the file is kept as %s",
                type(exc).__name__,
                aside,
            )
            await asyncio.to_thread(os.replace, self.path, aside)
            self._may_save = True
            return RestoreReport(items={}, saved_at=None)
        saved_at, tables = document
        client = await self._dynamodb()
        counts: dict[str, int] = {}
        for role, table in self._tables.items():
            items = tables.get(role, [])
            await _write_all(client, table, items)
            counts[role] = len(items)
        self._may_save = True
        return RestoreReport(items=counts, saved_at=saved_at)

    def _read(self) -> tuple[str | None, dict[str, list[dict[str, Any]]]]:
        document = json.loads(self.path.read_text(encoding="utf-8"))
        if (
            not isinstance(document, dict)
            or document.get("version") != FORMAT_VERSION
            or not isinstance(document.get("tables"), dict)
        ):
            raise ValueError("not a saved-tables file")
        try:
            tables = {
                str(role): [_decode_item(item) for item in items]
                for role, items in document["tables"].items()
            }
        except (AttributeError, TypeError, KeyError) as exc:
            raise ValueError("malformed item") from exc
        saved_at = document.get("saved_at")
        return (saved_at if isinstance(saved_at, str) else None), tables

    def start(self) -> None:
        """Save every `interval_s` in the background until `close`."""
        self._task = asyncio.create_task(self._save_forever(), name="table-state-saver")

    def mark_changed(self) -> None:
        """A kept table was written: the next periodic save scans it."""
        self._changed = True

    async def _save_forever(self) -> None:
        while True:
            await self._sleep(self.interval_s)
            if not self._changed:
                continue
            self._changed = False  # a write during the scan marks it again
            try:
                await self.save()
            except Exception as exc:
                self._changed = True
                log.warning("saving the tables failed (%s); will retry", type(exc).__name__)

    async def save(self) -> bool:
        """Scan the kept tables and write the dump if it changed; True when written."""
        if not self._may_save:
            return False
        client = await self._dynamodb()
        tables: dict[str, list[dict[str, Any]]] = {}
        self.scans += 1
        for role, table in self._tables.items():
            tables[role] = [_encode_item(item) for item in await _scan_all(client, table)]
        content = json.dumps(tables, sort_keys=True).encode("utf-8")
        if content == self._last_saved:
            return False
        document = {
            "version": FORMAT_VERSION,
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "tables": tables,
        }
        await asyncio.to_thread(self._write, json.dumps(document).encode("utf-8"))
        self._last_saved = content
        self.saves += 1
        return True

    def _write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        with temporary.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)

    async def close(self) -> None:
        """Stop the periodic saves, save once more, close the client."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            if await self.save():
                log.info("saved the tables in %s", self.path)
        except Exception as exc:
            log.warning("could not save the tables at shutdown (%s)", type(exc).__name__)
        finally:
            await self._stack.aclose()
            self._client = None


async def _scan_all(client: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = await client.scan(**kwargs)
        items.extend(page.get("Items", []))
        last = page.get("LastEvaluatedKey")
        if not last:
            return items
        kwargs["ExclusiveStartKey"] = last


async def _write_all(client: Any, table: str, items: list[dict[str, Any]]) -> None:
    for start in range(0, len(items), _BATCH):
        pending: dict[str, Any] = {
            table: [{"PutRequest": {"Item": item}} for item in items[start : start + _BATCH]]
        }
        while pending:
            answer = await client.batch_write_item(RequestItems=pending)
            pending = answer.get("UnprocessedItems") or {}


# Attribute values as JSON: binary values (B, BS) are base64 text; the rest of
# DynamoDB's JSON shape is JSON already.


def _encode_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _encode_value(value) for name, value in item.items()}


def _encode_value(value: Mapping[str, Any]) -> dict[str, Any]:
    ((kind, inner),) = value.items()
    if kind == "B":
        return {"B": base64.b64encode(inner).decode("ascii")}
    if kind == "BS":
        return {"BS": [base64.b64encode(b).decode("ascii") for b in inner]}
    if kind == "M":
        return {"M": _encode_item(inner)}
    if kind == "L":
        return {"L": [_encode_value(v) for v in inner]}
    return {kind: inner}


def _decode_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _decode_value(value) for name, value in item.items()}


def _decode_value(value: Mapping[str, Any]) -> dict[str, Any]:
    ((kind, inner),) = value.items()
    if kind == "B":
        return {"B": base64.b64decode(inner)}
    if kind == "BS":
        return {"BS": [base64.b64decode(b) for b in inner]}
    if kind == "M":
        return {"M": _decode_item(inner)}
    if kind == "L":
        return {"L": [_decode_value(v) for v in inner]}
    return {kind: inner}
