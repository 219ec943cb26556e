"""Stream records that never reach a processor: in production the event-source
mapping sends a record to its DLQ after `MaximumRetryAttempts` or
`MaximumRecordAgeInSeconds`. The sweeper re-announces a request left PENDING, and
fails it if nobody ever picks it up. Either way the acknowledged request ends
once and its client is told once; records that turn up late run nothing."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from core_harness import Core

from streamer import Progress, Request, Streamer
from streamer.models import AsyncRequest, RequestChange, RequestKey, RequestStatus
from streamer.ports import EnqueueResult
from streamer.processor import Outcome
from streamer.settings import Settings
from streamer.sweeper import NOT_PICKED_UP_MESSAGE, SweepReport
from streamer.testing import InMemoryRequestStore, ManualClock
from streamer.transitions import Transition

STALE_S = 60.0
MAX_KICKS = 3


class LossyStream:
    """A `RequestStore` wrapper that keeps the stream records its writes would
    make (claimable PENDING images only, as the production `FilterCriteria`), so
    a test decides which ones are lost and which are delivered.

    Args:
        inner: the store that does the work.
        clock: stamps the records.
    """

    def __init__(self, inner: InMemoryRequestStore, clock: ManualClock) -> None:
        self._inner = inner
        self._clock = clock
        self.records: list[RequestChange] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _record(self, event_name: str, key: RequestKey) -> None:
        self.records.append(
            RequestChange(
                event_id=f"ev-{len(self.records)}",
                event_name=event_name,
                sequence_number=f"{len(self.records):021d}",
                key=key,
                new_status=RequestStatus.PENDING,
                approximate_created_at=self._clock.now(),
            )
        )

    def take(self) -> list[RequestChange]:
        """The records written since the last `take`."""
        taken, self.records = self.records, []
        return taken

    async def enqueue(self, request: AsyncRequest) -> EnqueueResult:
        result = await self._inner.enqueue(request)
        if result.created:
            self._record("INSERT", request.key)
        return result

    async def apply(self, key: RequestKey, transition: Transition) -> AsyncRequest | None:
        changed = await self._inner.apply(key, transition)
        if changed is not None and transition.name == "kick":
            self._record("MODIFY", key)
        return changed


def _rig() -> tuple[Core, LossyStream, Counter[str]]:
    clock = ManualClock()
    store = InMemoryRequestStore()
    stream = LossyStream(store, clock)
    runs: Counter[str] = Counter()
    app = Streamer()

    @app.action("work", mode="async", timeout=30)
    async def work(req: Request[dict[str, Any]], progress: Progress) -> str:
        runs[req.request_id] += 1
        return "done"

    settings = replace(Settings(), pending_stale_s=STALE_S, pending_max_kicks=MAX_KICKS)
    rig = Core(app=app, settings=settings, clock=clock, store=store, requests=stream)  # type: ignore[arg-type]
    return rig, stream, runs


def _finals(rig: Core) -> list[dict[str, Any]]:
    return [m for m in rig.received("c1") if m["type"] in ("complete", "error")]


async def test_a_request_whose_insert_record_is_lost_is_kicked_and_runs_once() -> None:
    rig, stream, runs = _rig()
    ack = await rig.send(await rig.connect(), "work", {}, id="r1")
    assert ack["type"] == "acknowledgment"
    lost = stream.take()  # the INSERT went to the DLQ

    rig.clock.advance(STALE_S - 1)
    assert await rig.sweeper.sweep_once() == SweepReport()
    rig.clock.advance(2)
    assert await rig.sweeper.sweep_once() == SweepReport(kicked=1)
    (kick,) = stream.take()
    assert await rig.processor.handle(kick) is Outcome.COMPLETED
    # The lost INSERT redriven from the DLQ later, and more sweeps: nothing runs again.
    assert [await rig.processor.handle(record) for record in lost] == [Outcome.SKIPPED]
    rig.clock.advance(10 * STALE_S)
    assert await rig.sweeper.sweep_once() == SweepReport()

    assert runs == Counter({"r1": 1})
    assert [m["type"] for m in _finals(rig)] == ["complete"]
    stored = await rig.store.get(rig.key("r1"))
    assert stored is not None
    assert stored.status is RequestStatus.COMPLETED


async def test_a_request_no_processor_ever_picks_up_fails_once_and_its_client_is_told() -> None:
    rig, stream, runs = _rig()
    await rig.send(await rig.connect(), "work", {}, id="r1")
    reports = []
    for _ in range(MAX_KICKS + 1):
        rig.clock.advance(STALE_S + 1)
        reports.append(await rig.sweeper.sweep_once())
    lost = stream.take()  # the INSERT and every kick's MODIFY

    assert reports == [SweepReport(kicked=1)] * MAX_KICKS + [SweepReport(failed=1)]
    assert len(lost) == 1 + MAX_KICKS
    assert [await rig.processor.handle(record) for record in lost] == [Outcome.SKIPPED] * len(lost)
    rig.clock.advance(10 * STALE_S)
    assert await rig.sweeper.sweep_once() == SweepReport()

    assert runs == Counter()
    finals = _finals(rig)
    assert [(m["type"], m["error"]["code"], m["error"]["message"]) for m in finals] == [
        ("error", "PROCESSING_FAILED", NOT_PICKED_UP_MESSAGE)
    ]
    stored = await rig.store.get(rig.key("r1"))
    assert stored is not None
    assert stored.status is RequestStatus.FAILED
