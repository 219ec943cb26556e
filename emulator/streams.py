"""The emulator's stand-in for Lambda's DynamoDB Streams event-source mapping.

Schedules the reading of every shard of the requests table's stream, hands
claimable records to the core `Processor`, and moves each shard's checkpoint
(`emulator.checkpoints`) past the last record whose handling finished, so a
restart resumes there. Reading and parsing are the shard reader's
(`adapters.streams`, handed in by the composition root with its clients): this
module sees typed errors and parsed records only.

Semantics (as Lambda's mapping, with the differences said):
- First start on a stream: only records written from now on (`LATEST`). It is
  done by reading each open shard to its end once and checkpointing there, so
  a shard that gets no record before a restart still resumes from that point.
  A checkpoint file that exists but cannot be read or parsed is not a first
  start: every shard is read from `TRIM_HORIZON` (one warning), since replays
  are safe (claims are conditional) and `LATEST` would skip requests.
- Later: each shard resumes `AFTER_SEQUENCE_NUMBER` its checkpoint; shards
  that appear later are read from `TRIM_HORIZON`, a child only once its
  parent is finished; closed shards are finished and remembered.
- Records are filtered like the production `FilterCriteria` (claimable PENDING
  images only). Records of different requests run concurrently; records of one
  request run in order. A record whose handling raises is retried with backoff
  (Lambda's default: until it succeeds); the checkpoint only moves past a
  record once it and every record before it in its shard have finished.
- An expired iterator (or any failed call) re-acquires an iterator after the
  last record read; one shard's failures never stop the others. An unreadable
  record is logged and stepped over (Lambda would retry it until the mapping
  gives up). When the records after the checkpoint were trimmed unread (24 h
  old), the shard is read on from the oldest record kept, as Lambda skips
  expired records; the sweeper kicks any request whose record went with them.
- Polling: after a non-empty read the next read follows at once; after an
  empty one it waits `poll_interval_s`. After `idle_polls_before_backoff` empty
  reads in a row the wait doubles on each further empty read, up to
  `idle_poll_interval_s`, so an idle emulator stops spending its loop on
  `GetRecords`. `wake()` (called when this process writes a PENDING image) ends
  any wait at once and brings the wait back to `poll_interval_s`, as does a
  non-empty read. Records written by other processes are read within
  `idle_poll_interval_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from adapters.streams.reader import (
    MAX_RECORDS_PER_READ,
    IteratorExpired,
    Shard,
    ShardReader,
    StreamGone,
    StreamReadError,
    TrimmedData,
)
from adapters.streams.records import UnreadableRecord
from emulator.checkpoints import CheckpointFile
from streamer.models import RequestChange, RequestKey
from streamer.ports import Clock
from streamer.processor import Processor

__all__ = ["StreamPoller"]

log = logging.getLogger("emulator.streams")


@dataclass(eq=False, slots=True)
class _Entry:
    sequence_number: str
    is_done: bool = False


class _ShardTracker:
    """Records of one shard in read order; the checkpoint is the last record
    before which everything has finished."""

    def __init__(self, shard_id: str, checkpoints: CheckpointFile, start: str | None) -> None:
        self.shard_id = shard_id
        self.last_read: str | None = start
        self._checkpoints = checkpoints
        self._pending: deque[_Entry] = deque()
        self.drained = asyncio.Event()
        self.drained.set()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def add(self, sequence_number: str) -> _Entry:
        entry = _Entry(sequence_number)
        self._pending.append(entry)
        self.last_read = sequence_number
        self.drained.clear()
        return entry

    def done(self, entry: _Entry) -> None:
        entry.is_done = True
        advanced: str | None = None
        while self._pending and self._pending[0].is_done:
            advanced = self._pending.popleft().sequence_number
        if advanced is not None:
            self._checkpoints.set_position(self.shard_id, advanced)
        if not self._pending:
            self.drained.set()


class StreamPoller:
    """Reads the requests table's stream and feeds the `Processor`.

    Args:
        reader: the requests table's stream, through the emulator's clients.
        processor: handles each claimable record.
        clock: wall time for the lag figure.
        checkpoint_path: the JSON file of per-shard checkpoints.
        batch_size: `GetRecords` Limit after a page that was not full (Lambda's
            batch size; default 10). A full page doubles the next read's Limit,
            up to 1,000 and the room left under `max_in_flight`, as Lambda's
            poller reads up to 1,000 records a call while busy.
        poll_interval_s: pause after an empty read while busy (default 0.05).
        idle_poll_interval_s: the longest pause after empty reads once idle
            (default 0.5; never below `poll_interval_s`).
        idle_polls_before_backoff: empty reads in a row at `poll_interval_s`
            before the pause starts doubling (default 20).
        shard_refresh_s: how often `DescribeStream` looks for new shards.
        max_in_flight: records read but not finished per shard before reading pauses.
        retry_base_s, retry_max_s: backoff of failed reads and failed records.
    """

    def __init__(
        self,
        *,
        reader: ShardReader,
        processor: Processor,
        clock: Clock,
        checkpoint_path: Path,
        batch_size: int = 10,
        poll_interval_s: float = 0.05,
        idle_poll_interval_s: float = 0.5,
        idle_polls_before_backoff: int = 20,
        shard_refresh_s: float = 5.0,
        max_in_flight: int = 1000,
        retry_base_s: float = 0.1,
        retry_max_s: float = 5.0,
    ) -> None:
        if not 1 <= batch_size <= MAX_RECORDS_PER_READ:
            raise ValueError(f"batch size must be 1 to {MAX_RECORDS_PER_READ}, got {batch_size}")
        self._reader = reader
        self._processor = processor
        self._clock = clock
        self._checkpoint_path = checkpoint_path
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.idle_poll_interval_s = max(idle_poll_interval_s, poll_interval_s)
        self._idle_polls_before_backoff = idle_polls_before_backoff
        self._shard_refresh_s = shard_refresh_s
        self._max_in_flight = max_in_flight
        self._retry_base_s = retry_base_s
        self._retry_max_s = retry_max_s

        self._stopping = asyncio.Event()
        self._wakes = 0
        self._woken = asyncio.Event()
        self._refresh = asyncio.Event()
        self._ready = asyncio.Event()
        self._trackers: dict[str, _ShardTracker] = {}
        self._tails: dict[RequestKey, asyncio.Task[None]] = {}
        self._record_tasks: set[asyncio.Task[None]] = set()
        self._replaced = asyncio.Event()
        self._records_in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._lag_ms: dict[str, float] = {}
        self._checkpoints: CheckpointFile | None = None
        self.stream_arn: str | None = None
        self.records_handled = 0
        """Records handed to the processor that finished (for /health and tests)."""

    # -- figures -------------------------------------------------------------------

    @property
    def lag_ms(self) -> float:
        """Age of the newest record of the last non-empty read, worst shard
        (Lambda's IteratorAge); 0 when every shard is caught up."""
        return max(self._lag_ms.values(), default=0.0)

    @property
    def in_flight(self) -> int:
        """Records handed to the processor and not finished yet."""
        return self._records_in_flight

    @property
    def shards(self) -> int:
        """Shards being read."""
        return len(self._trackers)

    def checkpoints(self) -> dict[str, str | None]:
        """Shard id → the sequence number everything up to which has finished
        (None: nothing yet); what a restart would resume after."""
        if self._checkpoints is None:
            return {}
        return dict(self._checkpoints.state.positions)

    async def wait_ready(self) -> None:
        """Return once every shard has its starting position (from then on, every
        new record will be read)."""
        await self._ready.wait()

    def wake(self) -> None:
        """Read every shard now: a claimable record was just written (cheap; safe
        to call at any time, even before `run`)."""
        self._wakes += 1
        woken, self._woken = self._woken, asyncio.Event()
        woken.set()

    def pause_after_empty_reads(self, empty_reads: int) -> float:
        """The pause after `empty_reads` empty reads in a row: `poll_interval_s`,
        then doubling up to `idle_poll_interval_s`."""
        doublings = empty_reads - self._idle_polls_before_backoff
        if doublings <= 0:
            return self.poll_interval_s
        return min(self.idle_poll_interval_s, self.poll_interval_s * 2.0 ** min(doublings, 32))

    async def _pause(self, timeout_s: float, wakes_seen: int) -> bool:
        """Wait up to `timeout_s` unless woken; True when woken (also by a wake
        that came since `wakes_seen`, while the caller was reading)."""
        if self._wakes != wakes_seen:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._woken.wait()
        return self._wakes != wakes_seen

    # -- lifecycle -----------------------------------------------------------------

    async def run(self) -> None:
        """Poll until `stop` (then return once in-flight records finish) or until
        cancelled (then cut in-flight records and hand their requests back).

        When the requests table gets a new stream (the table was made again, e.g.
        a restarted moto), the old stream is dropped, its in-flight records cut,
        and the new one is read from its start.
        """
        arn: str | None = await self._stream_arn()
        is_first_stream = True
        while arn is not None:
            self.stream_arn = arn
            self._checkpoints = CheckpointFile(self._checkpoint_path, arn)
            is_first_start = is_first_stream and not self._checkpoints.state.is_known
            try:
                arn = await self._follow(is_first_start)
            finally:
                await self._checkpoints.flush(force=True)
            if arn is not None:
                log.warning(
                    "the requests table has a new stream; reading it from its start",
                    extra={"stream": arn},
                )
            is_first_stream = False

    async def _follow(self, is_first_start: bool) -> str | None:
        """Read one stream until stopping (None) or until the table has another
        stream (its ARN)."""
        self._replaced = asyncio.Event()
        self._trackers = {}
        self._tails = {}
        self._lag_ms = {}
        async with asyncio.TaskGroup() as group:
            replacement = await self._supervise(group, is_first_start)
            if replacement is not None:
                self._replaced.set()
                self.wake()
                for task in list(self._record_tasks):
                    task.cancel()  # their table is gone: nothing to finish
        return replacement

    def _is_halted(self) -> bool:
        return self._stopping.is_set() or self._replaced.is_set()

    async def stop(self, drain_timeout_s: float) -> int:
        """Stop reading and wait up to `drain_timeout_s` for in-flight records.

        Returns:
            How many records were still running when the time was up; the caller
            then cancels `run`, which hands their requests back to PENDING.
        """
        self._stopping.set()
        self._refresh.set()
        self.wake()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout_s):
                await self._idle.wait()
        return self._records_in_flight

    async def _stream_arn(self) -> str:
        """The table's current stream, waiting (with backoff) until there is one."""
        delay = self._retry_base_s
        while True:
            try:
                arn = await self._reader.stream_arn()
                if arn:
                    return arn
                log.error("the requests table has no stream; enable NEW_AND_OLD_IMAGES")
            except StreamReadError as exc:
                log.warning("cannot describe the requests table (%s); retrying", exc.code)
            except Exception:
                log.exception("cannot describe the requests table")
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max_s)

    async def _supervise(self, group: asyncio.TaskGroup, is_first_start: bool) -> str | None:
        """Start a reader per shard as shards appear; return None when stopping,
        or the table's new stream ARN when it has one."""
        assert self._checkpoints is not None
        checkpoints = self._checkpoints
        delay = self._retry_base_s
        while not self._stopping.is_set():
            self._refresh.clear()
            assert self.stream_arn is not None
            try:
                latest = await self._reader.stream_arn()
                if latest is not None and latest != self.stream_arn:
                    return latest
                shards = await self._reader.shards(self.stream_arn)
            except Exception as exc:
                log.warning(
                    "cannot describe the requests table or its stream (%s); retrying",
                    exc.code if isinstance(exc, StreamReadError) else type(exc).__name__,
                )
                await self._wait_refresh(delay)
                delay = min(delay * 2, self._retry_max_s)
                continue
            delay = self._retry_base_s
            is_positioned = True
            listed = {shard.shard_id for shard in shards}
            for shard in shards:
                shard_id = shard.shard_id
                if shard_id in self._trackers or shard_id in checkpoints.state.finished:
                    continue
                parent = shard.parent_shard_id
                if parent and parent in listed and parent not in checkpoints.state.finished:
                    continue  # its parent's records come first
                try:
                    start = await self._starting_position(shard, is_first_start)
                except Exception:
                    log.exception("cannot position a shard; retrying", extra={"shard": shard_id})
                    is_positioned = False
                    continue
                if isinstance(start, _Finished):
                    checkpoints.finish(shard_id)
                    continue
                tracker = _ShardTracker(shard_id, checkpoints, start)
                self._trackers[shard_id] = tracker
                group.create_task(self._guard_shard(tracker, group))
            await checkpoints.flush(force=True)
            if not is_positioned:
                await self._wait_refresh(self._retry_max_s)
                continue
            is_first_start = False
            self._ready.set()
            await self._wait_refresh(self._shard_refresh_s)
        return None

    async def _wait_refresh(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._refresh.wait()

    async def _starting_position(
        self, shard: Shard, is_first_start: bool
    ) -> str | _Finished | None:
        """The sequence number to read after (None: from the shard's start)."""
        assert self._checkpoints is not None
        assert self.stream_arn is not None
        shard_id = shard.shard_id
        positions = self._checkpoints.state.positions
        if shard_id in positions:
            return positions[shard_id]
        if not is_first_start:
            self._checkpoints.set_position(shard_id, None)
            return None
        if shard.is_closed:
            return _FINISHED  # closed before we ever looked: LATEST skips it
        last = await self._reader.last_sequence_number(self.stream_arn, shard_id)
        self._checkpoints.set_position(shard_id, last)
        return last

    # -- one shard -----------------------------------------------------------------

    async def _guard_shard(self, tracker: _ShardTracker, group: asyncio.TaskGroup) -> None:
        """Read one shard; an unexpected failure restarts its reading (after the
        last record read) instead of stopping the other shards."""
        delay = self._retry_base_s
        while True:
            try:
                await self._read_shard(tracker, group)
                return
            except Exception:
                log.exception(
                    "reading a shard failed; restarting it", extra={"shard": tracker.shard_id}
                )
                await asyncio.sleep(delay)
                if self._is_halted():
                    return
                delay = min(delay * 2, self._retry_max_s)

    async def _read_shard(self, tracker: _ShardTracker, group: asyncio.TaskGroup) -> None:
        assert self._checkpoints is not None
        assert self.stream_arn is not None
        shard_id = tracker.shard_id
        iterator: str | None = None
        delay = self._retry_base_s
        empty_reads = 0
        limit = self.batch_size
        while not self._is_halted():
            if tracker.in_flight >= self._max_in_flight:
                await asyncio.sleep(self.poll_interval_s)
                continue
            try:
                if iterator is None:
                    iterator = await self._reader.iterator(
                        self.stream_arn, shard_id, after=tracker.last_read
                    )
                    if iterator is None:
                        break  # closed and nothing left after our position
                wakes_seen = self._wakes
                room = max(1, self._max_in_flight - tracker.in_flight)
                limit = max(1, min(limit, room))
                page = await self._reader.read(iterator, limit=limit)
            except IteratorExpired:
                log.info("shard iterator expired; re-acquiring", extra={"shard": shard_id})
                iterator = None
                continue
            except (StreamGone, TrimmedData) as exc:
                if (
                    isinstance(exc, TrimmedData)
                    and iterator is None
                    and tracker.last_read is not None
                ):
                    # Asked for the records after our position and told they are
                    # gone: more than 24 h unread. Read on from the oldest one kept,
                    # as Lambda's event-source mapping skips expired records; the
                    # sweeper kicks any request whose record went with them.
                    log.warning(
                        "records after the checkpoint were trimmed unread; "
                        "reading from the oldest record kept",
                        extra={"shard": shard_id},
                    )
                    tracker.last_read = None
                else:
                    log.warning(
                        "GetRecords failed (%s); retrying", exc.code, extra={"shard": shard_id}
                    )
                self._refresh.set()  # the table may have a new stream
                iterator = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
                continue
            except StreamReadError as exc:  # throttled, a 5xx, the endpoint unreachable
                log.warning("GetRecords failed (%s); retrying", exc.code, extra={"shard": shard_id})
                iterator = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
                continue
            except Exception:
                log.exception("GetRecords failed; retrying", extra={"shard": shard_id})
                iterator = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
                continue
            delay = self._retry_base_s
            full = len(page.records) >= limit
            limit = min(limit * 2, MAX_RECORDS_PER_READ) if full else self.batch_size
            for record in page.records:
                self._dispatch(tracker, record, group)
            await self._checkpoints.flush()
            iterator = page.next_iterator
            if iterator is None:
                break  # the shard is closed and read to its end
            if page.records:
                empty_reads = 0
            else:
                self._lag_ms[shard_id] = 0.0
                empty_reads += 1
                if await self._pause(self.pause_after_empty_reads(empty_reads), wakes_seen):
                    empty_reads = 0
        else:
            return  # stopping: the shard stays open in the checkpoint file
        if not await self._drained(tracker):
            return  # the stream was replaced: its records were cut
        self._checkpoints.finish(shard_id)
        await self._checkpoints.flush(force=True)
        self._trackers.pop(shard_id, None)
        self._lag_ms.pop(shard_id, None)
        self._refresh.set()  # its children may start now
        log.info("shard finished", extra={"shard": shard_id})

    async def _drained(self, tracker: _ShardTracker) -> bool:
        """Wait until every record read from the shard has finished; False if the
        stream is replaced first."""
        drained = asyncio.ensure_future(tracker.drained.wait())
        replaced = asyncio.ensure_future(self._replaced.wait())
        try:
            await asyncio.wait([drained, replaced], return_when=asyncio.FIRST_COMPLETED)
        finally:
            drained.cancel()
            replaced.cancel()
        return tracker.drained.is_set()

    def _dispatch(
        self,
        tracker: _ShardTracker,
        record: RequestChange | UnreadableRecord,
        group: asyncio.TaskGroup,
    ) -> None:
        if isinstance(record, UnreadableRecord):
            # Lambda's mapping would retry it until the mapping gives up; the
            # emulator steps over it at once (its checkpoint moves past it).
            log.warning(
                "skipping a stream record: %s", record.reason, extra={"shard": tracker.shard_id}
            )
            if record.sequence_number is not None:
                tracker.done(tracker.add(record.sequence_number))
            return
        change = record
        entry = tracker.add(change.sequence_number)
        age_s = (self._clock.now() - change.approximate_created_at).total_seconds()
        self._lag_ms[tracker.shard_id] = max(0.0, age_s * 1000)
        if not change.is_claimable:
            tracker.done(entry)  # what the production FilterCriteria drops
            return
        previous = self._tails.get(change.key)
        self._records_in_flight += 1
        self._idle.clear()
        task = group.create_task(self._handle(tracker, entry, change, previous))
        self._tails[change.key] = task
        self._record_tasks.add(task)
        task.add_done_callback(self._record_tasks.discard)
        task.add_done_callback(lambda done: self._forget(change.key, done))

    def _forget(self, key: RequestKey, task: asyncio.Task[None]) -> None:
        if self._tails.get(key) is task:
            del self._tails[key]

    async def _handle(
        self,
        tracker: _ShardTracker,
        entry: _Entry,
        change: RequestChange,
        previous: asyncio.Task[None] | None,
    ) -> None:
        try:
            if previous is not None:
                await asyncio.wait([previous])  # records of one request stay in order
            delay = self._retry_base_s
            while True:
                try:
                    await self._processor.handle(change)
                    break
                except Exception:
                    log.exception(
                        "handling a stream record failed; retrying",
                        extra={"request_id": change.key, "shard": tracker.shard_id},
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._retry_max_s)
            tracker.done(entry)
            self.records_handled += 1
        except asyncio.CancelledError:
            # Cut by shutdown (or a replaced stream). The processor, if it had
            # claimed the request, has released it to PENDING with its claim's
            # attempt; releasing here with whatever attempt is stored could
            # release another processor's live claim. The record stays after
            # the checkpoint, so the next start reads it again.
            log.info("record cut before it finished", extra={"request_id": change.key})
            raise
        finally:
            self._records_in_flight -= 1
            if self._records_in_flight == 0:
                self._idle.set()


class _Finished:
    """Marker: a shard to skip (closed before the first start)."""


_FINISHED = _Finished()
