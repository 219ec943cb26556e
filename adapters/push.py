"""Server push from any backend process: a `Pusher` built from the same settings
as the Lambda functions (DynamoDB stores + the management-API notifier).

Example:
    >>> from adapters.push import open_pusher
    >>> async with open_pusher() as pusher:      # settings from the environment
    ...     summary = await pusher.to_user("acme", "alice", {"invoice": 42}, topic="billing")

Inside a Lambda function, use `adapters.aws_lambda.pusher.push` instead: it keeps
the clients on the container's event loop across warm invocations.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from adapters.apigateway import ApiGatewayNotifier, open_management_client
from adapters.dynamodb import open_stores
from streamer.clock import SystemClock
from streamer.delivery import Delivery
from streamer.push import DEFAULT_PUSH_CONCURRENCY, Pusher
from streamer.settings import Settings

__all__ = ["open_pusher"]


@contextlib.asynccontextmanager
async def open_pusher(
    settings: Settings | None = None, *, concurrency: int = DEFAULT_PUSH_CONCURRENCY
) -> AsyncIterator[Pusher]:
    """A `Pusher` over DynamoDB and the management API, clients closed at the end.

    Args:
        settings: `CONNECTIONS_TABLE`, `SUBSCRIPTIONS_TABLE`, `WEBSOCKET_ENDPOINT`
            (the API's `https://…/stage`, or the emulator's `http://localhost:3002`),
            `AWS_REGION`, `DYNAMODB_ENDPOINT_URL`; read from the environment when None.
        concurrency: sends in flight at once (default 50).

    Raises:
        SettingsError: a malformed setting (from the environment).
        ValueError: `WEBSOCKET_ENDPOINT` is not set.
    """
    if settings is None:
        settings = Settings.from_env()
    if not settings.websocket_endpoint:
        raise ValueError("WEBSOCKET_ENDPOINT is required to push to connections")
    clock = SystemClock()
    async with open_stores(settings) as stores, open_management_client(settings) as client:
        delivery = Delivery(
            notifier=ApiGatewayNotifier(client, sleep=clock.sleep),
            connections=stores.connections,
            subscriptions=stores.subscriptions,
            clock=clock,
        )
        yield Pusher(
            connections=stores.connections,
            delivery=delivery,
            clock=clock,
            concurrency=concurrency,
        )
