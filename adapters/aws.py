"""The AWS sessions and the client settings every AWS adapter shares.

Two kinds of session make the same clients: the process's aioboto3 session
(the emulator, the CLI: long-lived processes on one event loop) and
`ThreadedSession`, botocore's own clients behind the same `await client.op(...)`
face (the Lambda functions: botocore is what Lambda's runtime ships, it imports
in a fraction of aiobotocore's aiohttp stack, and its connection pool notices a
socket the server closed while the container was frozen instead of failing on
it and retrying). A third, `adapters.awsjson.AwsJsonSession`, takes the same
`client_kwargs` for DynamoDB and its Streams on a local plain-HTTP endpoint:
the emulator's calls to its embedded moto.

Clients made with `client_kwargs` retry throttling, 5xx and connection errors
with backoff (botocore's standard retry mode), time out instead of hanging, and
talk to `DYNAMODB_ENDPOINT_URL` (moto, DynamoDB Local) when it is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from botocore.config import Config

from streamer.settings import Settings

if TYPE_CHECKING:
    import aioboto3
    import botocore.session

__all__ = [
    "DUMMY_CREDENTIALS",
    "ThreadedClient",
    "ThreadedSession",
    "client_config",
    "client_kwargs",
    "get_session",
    "get_threaded_session",
]

DUMMY_CREDENTIALS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "aws_session_token": "testing",
}
"""What a local endpoint (moto, DynamoDB Local) is given when nothing is configured."""

_session: aioboto3.Session | None = None
_threaded_session: ThreadedSession | None = None


def get_session() -> aioboto3.Session:
    """The process's aioboto3 session, made on first use (never at import, and
    aioboto3 itself is only imported then: the Lambda functions never load it)."""
    global _session
    if _session is None:
        import aioboto3

        _session = aioboto3.Session()
    return _session


def get_threaded_session() -> ThreadedSession:
    """The process's `ThreadedSession` (the Lambda functions'), made on first use."""
    global _threaded_session
    if _threaded_session is None:
        _threaded_session = ThreadedSession()
    return _threaded_session


_PASSED_THROUGH: Final = frozenset({"can_paginate", "get_paginator", "get_waiter"})
"""Client methods that do no I/O and are plain methods on both kinds of client."""


class ThreadedClient:
    """A botocore client whose API calls are awaited: each runs on the session's
    threads (with the caller's context variables), never on the event loop.

    Only API operations (`await client.get_item(...)`), `exceptions` and `meta`
    are offered, which is all the stores and the notifier use. A cancelled
    await leaves its call to finish on its thread; the result is dropped.

    Args:
        client: the botocore client.
        executor: the threads calls run on.
    """

    def __init__(self, client: Any, executor: ThreadPoolExecutor) -> None:
        self._client = client
        self._executor = executor
        self.exceptions = client.exceptions
        self.meta = client.meta

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name.startswith("_") or name in _PASSED_THROUGH or not callable(attribute):
            return attribute
        call = self._awaitable(attribute)
        setattr(self, name, call)
        return call

    def _awaitable(self, operation: Callable[..., Any]) -> Callable[..., Coroutine[Any, Any, Any]]:
        executor = self._executor

        @functools.wraps(operation)
        async def call(*args: Any, **kwargs: Any) -> Any:
            context = contextvars.copy_context()
            bound = functools.partial(context.run, operation, *args, **kwargs)
            return await asyncio.get_running_loop().run_in_executor(executor, bound)

        return call


class ThreadedSession:
    """Makes `ThreadedClient`s: `async with session.client("dynamodb", **kwargs)`,
    as an aioboto3 session is used. One botocore session (credentials, endpoint
    data, loaded models) is shared by its clients.

    Args:
        max_workers: threads for calls in flight at once across its clients (the
            processor runs many requests over one client); made as needed.
    """

    def __init__(self, *, max_workers: int = 50) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="streamer-aws"
        )
        self._botocore: botocore.session.Session | None = None
        self._botocore_lock = threading.Lock()

    @contextlib.asynccontextmanager
    async def client(self, service: str, **kwargs: Any) -> AsyncIterator[Any]:
        """An open client of `service`, closed (its connections) when the block ends."""
        loop = asyncio.get_running_loop()
        made = await loop.run_in_executor(
            self._executor, functools.partial(self._create_client, service, kwargs)
        )
        try:
            yield ThreadedClient(made, self._executor)
        finally:
            made.close()

    @property
    def botocore_session(self) -> botocore.session.Session:
        """The botocore session its clients come from (made on first use), e.g. to
        register an event hook on."""
        with self._botocore_lock:
            if self._botocore is None:
                import botocore.session

                self._botocore = botocore.session.get_session()
            return self._botocore

    def _create_client(self, service: str, kwargs: dict[str, Any]) -> Any:
        return self.botocore_session.create_client(service, **kwargs)

    def shutdown(self) -> None:
        """Stop its threads (tests; a Lambda container is simply frozen)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def client_config(
    *,
    max_attempts: int = 5,
    connect_timeout_s: float = 3.0,
    read_timeout_s: float = 10.0,
    max_pool_connections: int = 50,
) -> Config:
    """The botocore `Config` of every client.

    Args:
        max_attempts: total tries per call (first try included) for throttling,
            5xx and connection errors, with exponential backoff and jitter.
        connect_timeout_s: seconds to wait for a TCP connection.
        read_timeout_s: seconds to wait for a response once connected.
        max_pool_connections: HTTP connections kept per client; the processor
            runs many requests at once over one client.
    """
    return Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        max_pool_connections=max_pool_connections,
    )


def client_kwargs(
    settings: Settings,
    *,
    endpoint_url: str | None = None,
    config: Config | None = None,
) -> dict[str, Any]:
    """Keyword arguments for `session.client(service, **kwargs)`.

    Args:
        settings: region and `dynamodb_endpoint_url` come from here.
        endpoint_url: overrides `settings.dynamodb_endpoint_url` (e.g. for another
            service); None keeps the settings' value.
        config: the botocore config; `client_config()` when None.
    """
    url = endpoint_url if endpoint_url is not None else settings.dynamodb_endpoint_url
    kwargs: dict[str, Any] = {
        "region_name": settings.aws_region,
        "config": config if config is not None else client_config(),
    }
    if url:
        kwargs["endpoint_url"] = url
        if not _has_configured_credentials():
            kwargs.update(DUMMY_CREDENTIALS)
    return kwargs


def _has_configured_credentials() -> bool:
    # Checked without a network call: the full chain would probe the instance
    # metadata service, which only times out on a laptop.
    if os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE"):
        return True
    shared = os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")
    return Path(shared).expanduser().is_file()
