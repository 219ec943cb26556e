"""Shared fixtures: dummy AWS credentials, one moto server per session, fresh tables."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from browser_check import report_skipped
from dynamodb_sessions import SESSION_KINDS, make_session

from adapters.dynamodb import DynamoDBStores, create_tables, delete_tables, open_stores
from adapters.moto_server import LocalMotoServer
from streamer.settings import Settings

_DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say when the browser tests were skipped, and the one command that enables them."""
    report_skipped(terminalreporter)


@pytest.fixture(scope="session", autouse=True)
def _dummy_aws_credentials() -> Iterator[None]:
    """No test can reach a real AWS account: credentials are fake, region fixed."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in _DUMMY_AWS_ENV.items():
            patch.setenv(name, value)
        patch.delenv("AWS_PROFILE", raising=False)
        yield


@pytest.fixture(scope="session")
def moto_endpoint(_dummy_aws_credentials: None) -> Iterator[str]:
    """URL of one moto server on a free loopback port, shared by the whole session.

    A `LocalMotoServer`: moto's threaded server, but applying one call at a time,
    so conditional writes are atomic as on DynamoDB (`ThreadedMotoServer` lets
    two concurrent claims of one item both succeed).
    """
    server = LocalMotoServer()
    server.start()
    try:
        yield server.endpoint
    finally:
        server.stop()


@pytest.fixture
async def dynamodb_settings(moto_endpoint: str) -> AsyncIterator[Settings]:
    """Settings naming three freshly created tables (unique names) on the moto server."""
    suffix = uuid.uuid4().hex[:12]
    settings = dataclasses.replace(
        Settings(),
        connections_table=f"streamer-connections-{suffix}",
        requests_table=f"streamer-requests-{suffix}",
        subscriptions_table=f"streamer-subscriptions-{suffix}",
        dynamodb_endpoint_url=moto_endpoint,
        aws_region="us-east-1",
    )
    await create_tables(settings)
    yield settings
    await delete_tables(settings)


@pytest.fixture(params=SESSION_KINDS)
def dynamodb_session(request: pytest.FixtureRequest) -> Any:
    """Each kind of session the DynamoDB adapters run on in turn: aioboto3's (AWS, any
    endpoint) and `AwsJsonSession` (the emulator's embedded moto)."""
    return make_session(request.param)


@pytest.fixture
async def dynamodb_stores(
    dynamodb_settings: Settings, dynamodb_session: Any
) -> AsyncIterator[DynamoDBStores]:
    """The DynamoDB stores bound to `dynamodb_settings`, sharing one client of each
    kind of session in turn."""
    async with open_stores(dynamodb_settings, session=dynamodb_session) as stores:
        yield stores


@pytest.fixture
async def aioboto3_stores(dynamodb_settings: Settings) -> AsyncIterator[DynamoDBStores]:
    """The DynamoDB stores over an aioboto3 client (for a fixture that picks the kind)."""
    async with open_stores(dynamodb_settings, session=make_session("aioboto3")) as stores:
        yield stores


@pytest.fixture
async def awsjson_stores(dynamodb_settings: Settings) -> AsyncIterator[DynamoDBStores]:
    """The DynamoDB stores over an `AwsJsonClient` (for a fixture that picks the kind)."""
    async with open_stores(dynamodb_settings, session=make_session("awsjson")) as stores:
        yield stores
