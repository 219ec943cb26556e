"""The emulator's stream checkpoints: per-shard positions in a small JSON file.

A restart resumes each shard after the last record whose handling finished.
The file also says whether the stream was ever read (a first start begins at
`LATEST`) and which shards are finished; an unreadable file means "every shard
from its start", since replays are safe (claims are conditional).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CheckpointFile", "StreamCheckpoint"]

log = logging.getLogger("emulator.checkpoints")

_FILE_VERSION = 1

_WRITE_LOCK = threading.Lock()
"""Checkpoint writes of this process, one at a time (they share temporary names)."""


@dataclass(slots=True)
class StreamCheckpoint:
    """What is known about one stream: per-shard positions and finished shards.

    Args:
        is_known: False when the stream was never read before (first start).
        positions: shard id → last finished sequence number, or None for "from
            the shard's start".
        finished: shards read to their end.
    """

    is_known: bool
    positions: dict[str, str | None] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)


class CheckpointFile:
    """Per-shard checkpoints of one stream, kept in a small JSON file.

    Other streams' entries in the same file are preserved. Writes are atomic
    and durable (temporary file, fsync, then rename), run in a worker thread,
    and are batched: `flush` writes only when something changed.

    Args:
        path: the JSON file; its folder is created on first write.
        stream_arn: the stream whose entry this object owns.
    """

    def __init__(self, path: Path, stream_arn: str, *, min_interval_s: float = 0.2) -> None:
        self.path = path
        self.stream_arn = stream_arn
        self.min_interval_s = min_interval_s
        self._dirty = False
        self._written_at = -math.inf
        self._snapshots = 0
        """Snapshots handed to a writer thread; a write older than the last one
        written is dropped."""
        self._written_snapshot = 0
        self._writes_running = 0
        self.state = self._read()

    def _read(self) -> StreamCheckpoint:
        """The stream's checkpoints. No file, or no entry for this stream: a first
        start (LATEST). An unreadable or corrupt file: every shard from its start
        (TRIM_HORIZON), since starting at LATEST would silently skip PENDING
        requests written while the emulator was down, and replaying is safe
        (claims are conditional)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return StreamCheckpoint(is_known=False)
        except (OSError, ValueError):
            return self._unreadable()
        try:
            entry = data["streams"].get(self.stream_arn)
            if entry is None:
                return StreamCheckpoint(is_known=False)
            positions = {
                str(k): (None if v is None else str(v)) for k, v in entry["shards"].items()
            }
            finished = {str(s) for s in entry["finished"]}
        except (AttributeError, KeyError, TypeError, ValueError):
            return self._unreadable()
        return StreamCheckpoint(is_known=True, positions=positions, finished=finished)

    def _unreadable(self) -> StreamCheckpoint:
        log.warning(
            "the stream checkpoint file is unreadable; reading every shard from its start",
            extra={"path": str(self.path)},
        )
        return StreamCheckpoint(is_known=True)

    def set_position(self, shard_id: str, sequence_number: str | None) -> None:
        """Record that `shard_id` is done up to `sequence_number` (None: nothing yet)."""
        self.state.positions[shard_id] = sequence_number
        self._dirty = True

    def finish(self, shard_id: str) -> None:
        """Record that `shard_id` was read to its end and fully handled."""
        self.state.finished.add(shard_id)
        self.state.positions.pop(shard_id, None)
        self._dirty = True

    async def flush(self, *, force: bool = False) -> None:
        """Write the file if anything changed, at most every `min_interval_s`
        and not while a write is running, unless `force`.

        The file I/O runs in a thread, off the event loop. Writes are
        serialised and never go back in time: the state is copied here, and a
        copy older than one already written is dropped. A failed write is
        logged and tried again at the next flush; processing goes on.
        """
        if not self._dirty:
            return
        now = time.monotonic()
        if not force and (self._writes_running or now - self._written_at < self.min_interval_s):
            return
        self._written_at = now
        self._snapshots += 1
        snapshot = self._snapshots
        entry = {
            "shards": dict(sorted(self.state.positions.items())),
            "finished": sorted(self.state.finished),
        }
        self._dirty = False
        self._writes_running += 1
        try:
            await asyncio.to_thread(self._write, entry, snapshot)
        except OSError:
            self._dirty = True
            log.exception("cannot write the stream checkpoints", extra={"path": str(self.path)})
        except asyncio.CancelledError:
            self._dirty = True  # the thread may or may not finish: write it again
            raise
        else:
            self.state.is_known = True
        finally:
            self._writes_running -= 1

    def _write(self, entry: dict[str, Any], snapshot: int) -> None:
        """Merge `entry` into the file (in a worker thread): temporary file,
        fsync, rename."""
        with _WRITE_LOCK:
            if snapshot <= self._written_snapshot:
                return  # a newer snapshot is already on disk
            self._write_file(entry)
            self._written_snapshot = snapshot

    def _write_file(self, entry: dict[str, Any]) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            streams = data.get("streams", {}) if isinstance(data, dict) else {}
        except (FileNotFoundError, ValueError):
            streams = {}
        # A recreated table (an embedded moto starts empty) has a new stream:
        # the old stream's entry can never be used again.
        table_prefix = self.stream_arn.split("/stream/")[0] + "/stream/"
        streams = {arn: kept for arn, kept in streams.items() if not arn.startswith(table_prefix)}
        streams[self.stream_arn] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with temporary.open("w", encoding="utf-8") as file:
            file.write(json.dumps({"version": _FILE_VERSION, "streams": streams}, indent=2) + "\n")
            file.flush()
            os.fsync(file.fileno())  # the rename must never expose an unwritten file
        os.replace(temporary, self.path)
