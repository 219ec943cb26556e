"""The demo app: its actions, their payload rules, and what they report."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from streamer import demo
from streamer.app import Request
from streamer.models import ConnectionId, RequestId, TenantId, UserId


class RecordingProgress:
    """Stands in for `Progress`: keeps every report."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, str, dict[str, Any]]] = []

    async def report(self, percentage: float, message: str = "", **metadata: Any) -> None:
        self.reports.append((percentage, message, metadata))

    async def check_cancelled(self) -> None:
        return None

    @property
    def percentages(self) -> list[float]:
        return [p for p, _, _ in self.reports]


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Simulated work takes no time; the durations asked for are kept."""
    asked: list[float] = []

    async def instant(seconds: float) -> None:
        asked.append(seconds)

    monkeypatch.setattr(demo, "_simulate_work", instant)
    return asked


def _request(action: str, payload: dict[str, Any]) -> Request[Any]:
    spec = demo.app.get(action)
    assert spec is not None
    model = spec.payload_model
    return Request(
        request_id=RequestId("req-1"),
        action=action,
        payload=model.model_validate(payload) if model else payload,
        connection_id=ConnectionId("conn-1"),
        user_id=UserId("user-1"),
        tenant_id=TenantId("tenant-1"),
        received_at=datetime(2026, 5, 4, 3, 2, 1, 123000, tzinfo=UTC),
    )


async def _run(action: str, payload: dict[str, Any]) -> tuple[Any, RecordingProgress]:
    spec = demo.app.get(action)
    assert spec is not None
    progress = RecordingProgress()
    if spec.resolved_mode(5.0) == "sync":
        return await spec.handler(_request(action, payload)), progress
    return await spec.handler(_request(action, payload), progress), progress


def test_demo_registers_the_original_actions_with_their_modes() -> None:
    modes = {name: spec.resolved_mode(5.0) for name, spec in demo.app.actions.items()}
    assert modes == {
        "echo": "sync",
        "validate_example": "sync",
        "delay": "async",
        "echo_async": "async",
        "generate_report": "async",
        "process_data": "async",
        "bulk_operation": "async",
    }


def test_payload_models_are_taken_from_the_annotations() -> None:
    models = {name: spec.payload_model for name, spec in demo.app.actions.items()}
    assert models["generate_report"] is demo.ReportParams
    assert models["validate_example"] is demo.ValidateExampleParams
    assert models["delay"] is demo.DelayParams
    assert models["echo"] is None


async def test_echo_answers_with_the_payload_action_and_time() -> None:
    data, _ = await _run("echo", {"hello": "world"})
    assert data == {
        "echo": {"hello": "world"},
        "action": "echo",
        "received_at": "2026-05-04T03:02:01.123Z",
    }


@pytest.mark.parametrize(
    "payload",
    [
        {"name": "ab", "email": "ab@example.com"},
        {"name": "x" * 101, "email": "ab@example.com"},
        {"name": "Ada", "email": "not-an-email"},
        {"name": "Ada"},
        {"email": "ada@example.com"},
    ],
)
def test_validate_example_refuses_bad_names_and_emails(payload: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        demo.ValidateExampleParams.model_validate(payload)


async def test_validate_example_accepts_a_good_payload() -> None:
    data, _ = await _run("validate_example", {"name": "Ada", "email": "ada@example.com"})
    assert data == {"valid": True, "name": "Ada", "email": "ada@example.com"}


@pytest.mark.parametrize("seconds", [0, -1, 900.5, "soon"])
def test_delay_refuses_seconds_outside_0_to_900(seconds: Any) -> None:
    with pytest.raises(ValidationError):
        demo.DelayParams.model_validate({"seconds": seconds})


async def test_delay_reports_ten_steps(no_waiting: list[float]) -> None:
    result, progress = await _run("delay", {"seconds": 5})
    assert progress.percentages == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert sum(no_waiting) == pytest.approx(5)
    assert result["delayed_seconds"] == 5


async def test_echo_async_returns_the_payload_without_work() -> None:
    result, progress = await _run("echo_async", {"a": [1, 2]})
    assert result == {"a": [1, 2]}
    assert progress.reports == []


def _report(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"start_date": "2026-01-01", "end_date": "2026-03-31"}
    payload.update(overrides)
    return payload


def _refusal(model: type[BaseModel], payload: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(payload)
    return str(caught.value)


def test_report_defaults_to_a_monthly_pdf_without_charts() -> None:
    params = demo.ReportParams.model_validate(_report())
    assert (params.format, params.report_type, params.include_charts) == ("pdf", "monthly", False)


def test_report_start_after_end_is_refused() -> None:
    assert "on or before" in _refusal(
        demo.ReportParams, _report(start_date="2026-02-01", end_date="2026-01-31")
    )


def test_report_range_over_a_year_is_refused() -> None:
    assert "at most one year" in _refusal(
        demo.ReportParams, _report(start_date="2025-01-01", end_date="2026-01-02")
    )


@pytest.mark.parametrize(
    ("start", "end"),
    [("2025-01-01", "2026-01-01"), ("2024-02-29", "2025-02-28"), ("2026-06-01", "2026-06-01")],
)
def test_report_range_of_up_to_a_year_is_accepted(start: str, end: str) -> None:
    params = demo.ReportParams.model_validate(_report(start_date=start, end_date=end))
    assert params.start_date == date.fromisoformat(start)


@pytest.mark.parametrize(
    "overrides",
    [
        {"format": "docx"},
        {"report_type": "weekly"},
        {"start_date": "01/02/2026"},
        {"end_date": None},
        {"include_charts": "perhaps"},
    ],
)
def test_report_refuses_malformed_fields(overrides: dict[str, Any]) -> None:
    _refusal(demo.ReportParams, _report(**overrides))


async def test_report_runs_four_phases_in_order_with_metadata() -> None:
    result, progress = await _run("generate_report", _report(format="excel", include_charts=True))
    percentages = progress.percentages
    assert percentages == sorted(percentages)
    assert percentages[0] == 0
    assert percentages[-1] == 100
    phases = [metadata["phase"] for _, _, metadata in progress.reports]
    assert list(dict.fromkeys(phases)) == ["query", "process", "generate", "upload"]
    bounds = {"query": (0, 30), "process": (30, 60), "generate": (60, 90), "upload": (90, 100)}
    for percentage, _, metadata in progress.reports:
        low, high = bounds[metadata["phase"]]
        assert low <= percentage <= high
    assert progress.reports[-1][2]["bytes_uploaded"] == result["size_bytes"]
    assert result["url"].endswith("/tenant-1/req-1.xlsx")
    assert result["format"] == "excel"
    assert result["record_count"] > 0
    assert result["include_charts"] is True


async def test_report_takes_a_few_seconds_of_simulated_work(no_waiting: list[float]) -> None:
    await _run("generate_report", _report())
    assert 2 <= sum(no_waiting) <= 3


async def test_process_data_reports_per_item_and_returns_per_item_results() -> None:
    result, progress = await _run("process_data", {"items": ["a", 2, {"k": 1}]})
    assert progress.percentages == pytest.approx([100 / 3, 200 / 3, 100])
    assert [r["output"] for r in result["results"]] == ["A", 4, {"k": 1}]
    assert result["processed"] == 3


def test_process_data_refuses_an_empty_list() -> None:
    _refusal(demo.ProcessDataParams, {"items": []})


async def test_bulk_operation_reports_per_item_and_counts_failures() -> None:
    payload = {"operation": "delete", "items": [{"id": "a"}, {"id": "b", "fail": True}]}
    result, progress = await _run("bulk_operation", payload)
    assert progress.percentages == [50, 100]
    assert (result["total"], result["succeeded"], result["failed"]) == (2, 1, 1)
    assert [r["success"] for r in result["results"]] == [True, False]


def test_bulk_operation_refuses_items_that_are_not_objects() -> None:
    _refusal(demo.BulkOperationParams, {"items": [1, 2]})
