"""The demo app: the original's demo actions (DESIGN §2), the default `STREAMER_APP`.

The async actions simulate work with short sleeps (a report takes about
2.5 s) so demos and tests stay quick.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator
from typing_extensions import TypedDict

from streamer.app import Request, Streamer
from streamer.progress import Progress
from streamer.protocol import format_timestamp

__all__ = [
    "BulkOperationParams",
    "DelayParams",
    "ProcessDataParams",
    "ReportParams",
    "ReportResult",
    "ValidateExampleParams",
    "app",
]

app = Streamer("demo")

MAX_ITEMS = 1000
_REPORT_PHASE_STEPS = 4
_REPORT_STEP_S = 0.15
_ITEMS_TOTAL_S = 2.0
_ITEM_STEP_S = 0.05


async def _simulate_work(seconds: float) -> None:
    """Stand-in for real work; tests replace it to run without waiting."""
    await asyncio.sleep(seconds)


# -- sync ---------------------------------------------------------------------


@app.action("echo", mode="sync")
async def echo(req: Request[dict[str, Any]]) -> dict[str, Any]:
    """Answers with the payload it was sent, at once."""
    return {
        "echo": req.payload,
        "action": req.action,
        "received_at": format_timestamp(req.received_at),
    }


class ValidateExampleParams(BaseModel):
    """A name and an email, each 3-100 characters."""

    name: str = Field(min_length=3, max_length=100)
    email: str = Field(min_length=3, max_length=100, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@app.action("validate_example", mode="sync")
async def validate_example(req: Request[ValidateExampleParams]) -> dict[str, Any]:
    """Validates a name and an email (shows VALIDATION_ERROR details)."""
    return {"valid": True, "name": req.payload.name, "email": req.payload.email}


# -- async --------------------------------------------------------------------


class DelayParams(BaseModel):
    """How long to wait: 0 < seconds ≤ 900."""

    seconds: float = Field(gt=0, le=900)


@app.action("delay", mode="async", timeout=960)
async def delay(req: Request[DelayParams], progress: Progress) -> dict[str, Any]:
    """Waits `seconds`, reporting progress in ten steps."""
    seconds = req.payload.seconds
    for step in range(1, 11):
        await _simulate_work(seconds / 10)
        await progress.report(step * 10, f"Waited {seconds * step / 10:g} of {seconds:g} s")
    return {"delayed_seconds": seconds, "message": f"Waited {seconds:g} seconds"}


@app.action("echo_async", mode="async")
async def echo_async(req: Request[dict[str, Any]], progress: Progress) -> dict[str, Any]:
    """Queues, then completes with the payload (no work)."""
    return req.payload


class ReportParams(BaseModel):
    """A report over a date range of at most one year."""

    start_date: date
    end_date: date
    format: Literal["pdf", "csv", "excel"] = "pdf"
    report_type: Literal["monthly", "quarterly", "annual", "custom"] = "monthly"
    include_charts: bool = False

    @model_validator(mode="after")
    def _check_range(self) -> ReportParams:
        if self.start_date > self.end_date:
            raise ValueError("start_date must be on or before end_date")
        if self.end_date > _one_year_after(self.start_date):
            raise ValueError("the date range must be at most one year")
        return self


def _one_year_after(day: date) -> date:
    try:
        return day.replace(year=day.year + 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year + 1, day=28)


class ReportResult(TypedDict):
    """Where the finished report is, and what is in it."""

    url: str
    format: Literal["pdf", "csv", "excel"]
    report_type: Literal["monthly", "quarterly", "annual", "custom"]
    start_date: str
    end_date: str
    include_charts: bool
    record_count: int
    page_count: int
    size_bytes: int


_EXTENSIONS = {"pdf": "pdf", "csv": "csv", "excel": "xlsx"}


@app.action("generate_report", mode="async", timeout=600)
async def generate_report(req: Request[ReportParams], progress: Progress) -> ReportResult:
    """Builds a report in four phases: query, process, generate, upload."""
    params = req.payload
    days = (params.end_date - params.start_date).days + 1
    records = days * 40 + _stable_offset(req.request_id, 40)

    for step in range(_REPORT_PHASE_STEPS + 1):
        counted = records * step // _REPORT_PHASE_STEPS
        await progress.report(
            _phase_percentage(0, 30, step),
            f"Querying data: {counted} records",
            phase="query",
            records_found=counted,
        )
        if step < _REPORT_PHASE_STEPS:
            await _simulate_work(_REPORT_STEP_S)

    for step in range(1, _REPORT_PHASE_STEPS + 1):
        await _simulate_work(_REPORT_STEP_S)
        processed = records * step // _REPORT_PHASE_STEPS
        await progress.report(
            _phase_percentage(30, 60, step),
            f"Processing records: {processed}/{records}",
            phase="process",
            records_processed=processed,
            records_total=records,
        )

    pages = max(1, records // 50) + (days // 30 if params.include_charts else 0)
    for step in range(1, _REPORT_PHASE_STEPS + 1):
        await _simulate_work(_REPORT_STEP_S)
        await progress.report(
            _phase_percentage(60, 90, step),
            f"Generating {params.format.upper()} report",
            phase="generate",
            pages_generated=pages * step // _REPORT_PHASE_STEPS,
            pages_total=pages,
            include_charts=params.include_charts,
        )

    size_bytes = records * 180 + (pages * 20_000 if params.include_charts else 0)
    for step in range(1, _REPORT_PHASE_STEPS + 1):
        await _simulate_work(_REPORT_STEP_S)
        await progress.report(
            _phase_percentage(90, 100, step),
            "Uploading report" if step < _REPORT_PHASE_STEPS else "Report ready",
            phase="upload",
            bytes_uploaded=size_bytes * step // _REPORT_PHASE_STEPS,
            bytes_total=size_bytes,
        )

    extension = _EXTENSIONS[params.format]
    return {
        "url": f"https://reports.example.com/{req.tenant_id}/{req.request_id}.{extension}",
        "format": params.format,
        "report_type": params.report_type,
        "start_date": params.start_date.isoformat(),
        "end_date": params.end_date.isoformat(),
        "include_charts": params.include_charts,
        "record_count": records,
        "page_count": pages,
        "size_bytes": size_bytes,
    }


def _phase_percentage(start: int, end: int, step: int) -> float:
    return start + (end - start) * step / _REPORT_PHASE_STEPS


def _stable_offset(seed: str, modulo: int) -> int:
    """A deterministic pseudo-random number from an id (no global random state)."""
    return int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big") % modulo


def _item_step_s(count: int) -> float:
    return min(_ITEM_STEP_S, _ITEMS_TOTAL_S / count)


class ProcessDataParams(BaseModel):
    """Items to process (1-1000): strings are upper-cased, numbers doubled."""

    items: list[Any] = Field(min_length=1, max_length=MAX_ITEMS)


@app.action("process_data", mode="async", timeout=300)
async def process_data(req: Request[ProcessDataParams], progress: Progress) -> dict[str, Any]:
    """Processes each item in turn, reporting progress per item."""
    items = req.payload.items
    results = []
    for index, item in enumerate(items):
        await _simulate_work(_item_step_s(len(items)))
        results.append({"index": index, "input": item, "output": _transform(item)})
        await progress.report(
            100 * (index + 1) / len(items),
            f"Processed item {index + 1} of {len(items)}",
            items_processed=index + 1,
            items_total=len(items),
        )
    return {"processed": len(results), "results": results}


def _transform(item: Any) -> Any:
    if isinstance(item, str):
        return item.upper()
    if isinstance(item, int | float) and not isinstance(item, bool):
        return item * 2
    return item


class BulkOperationParams(BaseModel):
    """One operation over many items (1-1000); an item with `"fail": true` fails."""

    operation: Literal["create", "update", "delete"] = "update"
    items: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_ITEMS)


@app.action("bulk_operation", mode="async", timeout=300)
async def bulk_operation(req: Request[BulkOperationParams], progress: Progress) -> dict[str, Any]:
    """Applies the operation item by item; per-item results, failures included."""
    params = req.payload
    results: list[dict[str, Any]] = []
    for index, item in enumerate(params.items):
        await _simulate_work(_item_step_s(len(params.items)))
        item_id = item.get("id", index)
        if item.get("fail") is True:
            results.append(
                {"index": index, "id": item_id, "success": False, "error": "item refused"}
            )
        else:
            results.append({"index": index, "id": item_id, "success": True})
        await progress.report(
            100 * (index + 1) / len(params.items),
            f"{params.operation.capitalize()} {index + 1} of {len(params.items)}",
            operation=params.operation,
            items_processed=index + 1,
            items_total=len(params.items),
        )
    succeeded = sum(1 for r in results if r["success"])
    return {
        "operation": params.operation,
        "total": len(results),
        "succeeded": succeeded,
        "failed": len(results) - succeeded,
        "results": results,
    }
