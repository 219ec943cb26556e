"""The emulator's embedded DynamoDB runs in a child process that never outlives it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap

import aioboto3
import psutil
import pytest

from emulator.database import EmbeddedDynamoDB

WAIT_S = 30.0


async def test_it_serves_dynamodb_and_stops() -> None:
    database = await EmbeddedDynamoDB.start()
    try:
        session = aioboto3.Session(
            aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
        )
        async with session.client("dynamodb", endpoint_url=database.endpoint) as client:
            assert (await client.list_tables())["TableNames"] == []
    finally:
        await database.stop()
    await database.stop()  # idempotent


def test_it_exits_when_the_emulator_dies() -> None:
    """The parent is killed outright (no shutdown runs): the child's stdin closes."""
    parent = textwrap.dedent(
        """
        import asyncio, os
        from emulator.database import EmbeddedDynamoDB
        async def main():
            database = await EmbeddedDynamoDB.start()
            print(database._process.pid, flush=True)
            os._exit(9)
        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", parent], capture_output=True, text=True, timeout=WAIT_S
    )
    assert result.returncode == 9, result.stderr
    child = int(result.stdout.strip())
    with contextlib.suppress(psutil.NoSuchProcess):  # already gone and reaped
        psutil.Process(child).wait(timeout=WAIT_S)


async def test_a_database_that_cannot_start_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with pytest.raises(RuntimeError, match=r"did not start \(it exited with code 1\).*DYNAMODB"):
        await EmbeddedDynamoDB.start()
