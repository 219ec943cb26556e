"""A checkpoint file the emulator cannot read: the stream is read again from its
start (TRIM_HORIZON), so PENDING requests written meanwhile are not skipped; no
file at all is still a first start (LATEST)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_emulator_streams import ScriptedProcessor, _pending, running_poller

from adapters.dynamodb import DynamoDBStores, open_stores
from emulator.checkpoints import CheckpointFile
from streamer.models import request_key
from streamer.settings import Settings

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/requests/stream/2026-01-01T00:00:00.000"

CORRUPT = {
    "not json": '{"streams": {',
    "empty": "",
    "not utf-8": b"\xff\xfe\x00garbage",
    "a list": "[1, 2]",
    "no streams": '{"version": 1}',
    "a broken entry": json.dumps({"streams": {ARN: {"shards": 3}}}),
    "an entry without finished": json.dumps({"streams": {ARN: {"shards": {}}}}),
}


@pytest.fixture
async def stores(dynamodb_settings: Settings) -> AsyncIterator[DynamoDBStores]:
    async with open_stores(dynamodb_settings) as opened:
        yield opened


@pytest.mark.parametrize("content", CORRUPT.values(), ids=list(CORRUPT))
def test_a_corrupt_checkpoint_file_reads_every_shard_from_its_start(
    tmp_path: Path, content: str | bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cp.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="emulator.checkpoints"):
        state = CheckpointFile(path, ARN).state
    assert (state.is_known, state.positions, state.finished) == (True, {}, set())
    assert [r.getMessage() for r in caplog.records] == [
        "the stream checkpoint file is unreadable; reading every shard from its start"
    ]


def test_a_checkpoint_file_that_is_a_folder_is_unreadable(tmp_path: Path) -> None:
    assert CheckpointFile(tmp_path, ARN).state.is_known is True


def test_no_checkpoint_file_is_a_first_start(tmp_path: Path) -> None:
    assert CheckpointFile(tmp_path / "cp.json", ARN).state.is_known is False


def test_a_file_without_this_stream_is_a_first_start(tmp_path: Path) -> None:
    """Another stream's entry (a table made again) says nothing about this one."""
    path = tmp_path / "cp.json"
    path.write_text('{"version": 1, "streams": {"other": {"shards": {}, "finished": []}}}')
    assert CheckpointFile(path, ARN).state.is_known is False


async def test_a_pending_request_written_before_a_start_on_a_corrupt_checkpoint_is_run(
    dynamodb_settings: Settings, stores: DynamoDBStores, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "cp.json"
    checkpoint.write_text("{ truncated", encoding="utf-8")
    await stores.requests.enqueue(_pending("while-down"))
    processor = ScriptedProcessor()
    async with running_poller(dynamodb_settings, stores, processor, checkpoint):
        await stores.requests.enqueue(_pending("after"))
        await processor.wait_for(lambda: len(processor.finished) == 2)
    assert processor.started_keys() == [
        request_key("t", "u", "while-down"),
        request_key("t", "u", "after"),
    ]
