"""The three stores over one shared client: `open_stores` and `DynamoDBStores`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

from botocore.config import Config

from adapters.aws import client_kwargs, get_session
from adapters.dynamodb.connections import DynamoDBConnectionStore
from adapters.dynamodb.requests import DynamoDBRequestStore
from adapters.dynamodb.subscriptions import DynamoDBSubscriptionStore
from streamer.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

__all__ = ["DynamoDBStores", "open_stores"]


@dataclass(slots=True)
class DynamoDBStores:
    """The three stores over one shared client; close it with `aclose()`.

    Use `async with open_stores(settings) as stores:`, or for a holder that
    outlives any one block (a Lambda container) `stores = await
    DynamoDBStores.open(settings)` and, at shutdown, `await stores.aclose()`.

    Args:
        connections: the connections store.
        requests: the requests store.
        subscriptions: the subscriptions store.
        client: the shared DynamoDB client (for health checks and stream readers).
    """

    connections: DynamoDBConnectionStore
    requests: DynamoDBRequestStore
    subscriptions: DynamoDBSubscriptionStore
    client: DynamoDBClient
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack, repr=False)

    @classmethod
    async def open(
        cls, settings: Settings, *, session: Any | None = None, config: Config | None = None
    ) -> Self:
        """Open one DynamoDB client and build the stores over it.

        Args:
            settings: table names, region, `dynamodb_endpoint_url`.
            session: an aioboto3 session; the process's one when None.
            config: the botocore config (retries, timeouts); `client_config()` when None.
        """
        stack = AsyncExitStack()
        session = session if session is not None else get_session()
        try:
            client: DynamoDBClient = await stack.enter_async_context(
                session.client("dynamodb", **client_kwargs(settings, config=config))
            )
        except BaseException:
            await stack.aclose()
            raise
        return cls(
            connections=DynamoDBConnectionStore(client, settings.connections_table),
            requests=DynamoDBRequestStore(client, settings.requests_table),
            subscriptions=DynamoDBSubscriptionStore(client, settings.subscriptions_table),
            client=client,
            _stack=stack,
        )

    async def aclose(self) -> None:
        """Close the shared client (idempotent)."""
        await self._stack.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


@contextlib.asynccontextmanager
async def open_stores(
    settings: Settings, *, session: Any | None = None, config: Config | None = None
) -> AsyncIterator[DynamoDBStores]:
    """The three DynamoDB stores over one client, closed when the block ends.

    Args:
        settings: table names, region, `dynamodb_endpoint_url`.
        session: an aioboto3 session; the process's one when None.
        config: the botocore config (retries, timeouts); `client_config()` when None.
    """
    stores = await DynamoDBStores.open(settings, session=session, config=config)
    try:
        yield stores
    finally:
        await stores.aclose()
