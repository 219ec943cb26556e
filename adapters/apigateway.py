"""The core's `Notifier` over the API Gateway Management API (`@connections`).

Botocore errors are translated at this edge, in `map_client_errors`, and never
leak inward: `GoneException` (410) becomes `ConnectionGone`, a refused payload
(413) becomes `PAYLOAD_TOO_LARGE`, throttling and 5xx are retried here with
exponential backoff and full jitter, then surface as `INTERNAL_ERROR`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

from adapters.aws import client_config, client_kwargs, get_session
from adapters.sigv4 import DevCredentials, load_dev_credentials
from streamer.errors import ConnectionGone, ErrorCode, StreamerError
from streamer.frames import FramePolicy
from streamer.models import ConnectionId
from streamer.protocol import ServerMessage
from streamer.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_apigatewaymanagementapi import ApiGatewayManagementApiClient

__all__ = [
    "HANDLED_ERROR_CODES",
    "ApiGatewayNotifier",
    "ConnectionInfo",
    "DeliveryUnavailable",
    "ErrorKind",
    "RetryPolicy",
    "emulator_credentials",
    "management_endpoint",
    "map_client_errors",
    "open_management_client",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class DeliveryUnavailable(StreamerError):
    """The management API throttled or failed (5xx, network) past every retry.

    Args:
        message: what went wrong, without AWS internals.
    """

    def __init__(self, message: str = "could not reach the connection") -> None:
        super().__init__(ErrorCode.INTERNAL_ERROR, message)


class ErrorKind(Enum):
    """How a management-API error is treated."""

    GONE = "gone"
    """The connection does not exist any more: `ConnectionGone`."""
    TOO_LARGE = "too_large"
    """The message is over API Gateway's 128 KB limit: `PAYLOAD_TOO_LARGE`."""
    TRANSIENT = "transient"
    """Throttling, 5xx, network: retried, then `DeliveryUnavailable`."""
    FATAL = "fatal"
    """Refused for good (403 wrong endpoint or IAM, 400): `INTERNAL_ERROR` at once."""


HANDLED_ERROR_CODES: Final[dict[str, ErrorKind]] = {
    "GoneException": ErrorKind.GONE,
    "PayloadTooLargeException": ErrorKind.TOO_LARGE,
    "LimitExceededException": ErrorKind.TRANSIENT,
    "TooManyRequestsException": ErrorKind.TRANSIENT,
    "ThrottlingException": ErrorKind.TRANSIENT,
    "Throttling": ErrorKind.TRANSIENT,
    "InternalServerError": ErrorKind.TRANSIENT,
    "InternalFailure": ErrorKind.TRANSIENT,
    "ServiceUnavailable": ErrorKind.TRANSIENT,
    "ServiceUnavailableException": ErrorKind.TRANSIENT,
    "ForbiddenException": ErrorKind.FATAL,
    "BadRequestException": ErrorKind.FATAL,
}
"""Every error code the management API documents (plus the generic AWS
throttling/5xx codes), and how each is treated; pinned by a test."""

_KIND_BY_STATUS: Final[dict[int, ErrorKind]] = {
    410: ErrorKind.GONE,
    413: ErrorKind.TOO_LARGE,
    429: ErrorKind.TRANSIENT,
}


def _kind_of(error: ClientError) -> ErrorKind:
    code = str(error.response.get("Error", {}).get("Code", ""))
    if code in HANDLED_ERROR_CODES:
        return HANDLED_ERROR_CODES[code]
    # A server that sets no error type (a proxy, a stand-in) still says it by status.
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if status in _KIND_BY_STATUS:
        return _KIND_BY_STATUS[status]
    if status >= 500:
        return ErrorKind.TRANSIENT
    return ErrorKind.FATAL


@contextlib.contextmanager
def map_client_errors(connection_id: str) -> Iterator[None]:
    """Translate botocore errors of one management-API call into the core's errors.

    Raises:
        ConnectionGone: 410 / `GoneException`.
        StreamerError: PAYLOAD_TOO_LARGE for 413 / `PayloadTooLargeException`;
            INTERNAL_ERROR for a refusal that retrying cannot fix (403, 400).
        DeliveryUnavailable: throttling, 5xx or a network error (retryable).
    """
    try:
        yield
    except ClientError as exc:
        kind = _kind_of(exc)
        if kind is ErrorKind.GONE:
            raise ConnectionGone(connection_id) from exc
        if kind is ErrorKind.TOO_LARGE:
            raise StreamerError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                "message is over API Gateway's 128 KB limit",
            ) from exc
        if kind is ErrorKind.TRANSIENT:
            raise DeliveryUnavailable("the management API is throttling or failing") from exc
        logger.error(
            "management API refused the call",
            extra={"connection_id": connection_id, "code": _code_of(exc)},
        )
        raise StreamerError(ErrorCode.INTERNAL_ERROR, "could not deliver the message") from exc
    except (ConnectionError, HTTPClientError) as exc:
        raise DeliveryUnavailable("the management API could not be reached") from exc
    except BotoCoreError as exc:
        raise StreamerError(ErrorCode.INTERNAL_ERROR, "could not deliver the message") from exc


def _code_of(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter for transient errors.

    Args:
        max_attempts: tries per call, the first included (default 4).
        base_delay_s: the cap of the first wait; doubled each retry (default 0.05).
        max_delay_s: the largest cap (default 1.0).
    """

    max_attempts: int = 4
    base_delay_s: float = 0.05
    max_delay_s: float = 1.0

    def delay_s(self, retry: int, rng: random.Random) -> float:
        """The wait before retry number `retry` (0-based): uniform in [0, cap]."""
        cap = min(self.max_delay_s, self.base_delay_s * (2**retry))
        return rng.uniform(0.0, cap)


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """What `GetConnection` says about a connection."""

    connected_at: datetime | None
    last_active_at: datetime | None
    source_ip: str
    user_agent: str


class ApiGatewayNotifier:
    """`Notifier` posting to connections through the management API.

    Args:
        client: an open aioboto3 `apigatewaymanagementapi` client whose endpoint
            is `https://{domain}/{stage}` (or the emulator's HTTP side).
        retry: backoff for throttling, 5xx and network errors.
        sleep: how to wait between retries (a clock's `sleep` in tests).
        rng: the jitter's randomness.
        frame_policy: the message limit, checked before posting (API Gateway's
            by default; it would answer 413).
    """

    def __init__(
        self,
        client: ApiGatewayManagementApiClient,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        rng: random.Random | None = None,
        frame_policy: FramePolicy | None = None,
    ) -> None:
        self._client = client
        self._frame_policy = frame_policy or FramePolicy()
        self._retry = retry if retry is not None else RetryPolicy()
        self._sleep = sleep if sleep is not None else asyncio.sleep
        self._rng = rng if rng is not None else random.Random()

    async def send(self, connection_id: ConnectionId, message: ServerMessage) -> None:
        """Post one message (`PostToConnection`).

        Raises:
            ConnectionGone: the connection no longer exists.
            StreamerError: PAYLOAD_TOO_LARGE (over the core's limit, or refused
                with 413), or INTERNAL_ERROR after retries.
        """
        data = self._frame_policy.outbound(message).encode("utf-8")

        async def post() -> None:
            await self._client.post_to_connection(ConnectionId=connection_id, Data=data)

        await self._with_retries(connection_id, post)

    async def get_connection(self, connection_id: ConnectionId) -> ConnectionInfo:
        """What API Gateway knows about an open connection (`GetConnection`).

        Raises:
            ConnectionGone: the connection no longer exists.
        """

        async def get() -> Any:
            return await self._client.get_connection(ConnectionId=connection_id)

        reply = await self._with_retries(connection_id, get)
        identity = reply.get("Identity", {})
        return ConnectionInfo(
            connected_at=reply.get("ConnectedAt"),
            last_active_at=reply.get("LastActiveAt"),
            source_ip=str(identity.get("SourceIp", "")),
            user_agent=str(identity.get("UserAgent", "")),
        )

    async def delete_connection(self, connection_id: ConnectionId) -> bool:
        """Close a connection (`DeleteConnection`); False when it was already gone."""

        async def delete() -> None:
            await self._client.delete_connection(ConnectionId=connection_id)

        try:
            await self._with_retries(connection_id, delete)
        except ConnectionGone:
            return False
        return True

    async def _with_retries(self, connection_id: str, call: Callable[[], Awaitable[T]]) -> T:
        retry = 0
        while True:
            try:
                with map_client_errors(connection_id):
                    return await call()
            except DeliveryUnavailable:
                retry += 1
                if retry >= self._retry.max_attempts:
                    logger.warning(
                        "management API unavailable, giving up",
                        extra={"connection_id": connection_id, "attempt": retry},
                    )
                    raise
                await self._sleep(self._retry.delay_s(retry - 1, self._rng))


def management_endpoint(url: str) -> str:
    """The HTTPS endpoint of the management API from what users put in
    `WEBSOCKET_ENDPOINT`: `wss://` becomes `https://`, `ws://` `http://`, no
    trailing slash (botocore appends `/@connections/{id}` to the path)."""
    url = url.strip().rstrip("/")
    if url.startswith("wss://"):
        return "https://" + url.removeprefix("wss://")
    if url.startswith("ws://"):
        return "http://" + url.removeprefix("ws://")
    return url


def emulator_credentials(
    endpoint: str, environ: Mapping[str, str] | None = None
) -> DevCredentials | None:
    """The emulator's dev credentials when `endpoint` is an emulator (plain HTTP:
    API Gateway is HTTPS only), else None (the usual AWS credentials sign).

    Taken from `EMULATOR_ACCESS_KEY_ID` and `EMULATOR_SECRET_ACCESS_KEY` when both
    are set, else from the emulator's state folder (`EMULATOR_STATE_DIR`, default
    `.streamer`), where the emulator saves them.
    """
    if not endpoint.startswith("http://"):
        return None
    environ = os.environ if environ is None else environ
    key_id = environ.get("EMULATOR_ACCESS_KEY_ID", "").strip()
    secret = environ.get("EMULATOR_SECRET_ACCESS_KEY", "").strip()
    if key_id and secret:
        return DevCredentials(key_id, secret)
    return load_dev_credentials(Path(environ.get("EMULATOR_STATE_DIR") or ".streamer"))


@contextlib.asynccontextmanager
async def open_management_client(
    settings: Settings,
    *,
    session: Any | None = None,
    endpoint: str | None = None,
    credentials: DevCredentials | None = None,
) -> AsyncIterator[ApiGatewayManagementApiClient]:
    """An open management-API client on `settings.websocket_endpoint`.

    Botocore's own retries are off (one attempt per call): `ApiGatewayNotifier`
    retries, so a throttled post is not retried twice over. Pointed at the
    emulator, it signs with the emulator's dev credentials (`emulator_credentials`).

    Args:
        settings: the endpoint, region and AWS settings.
        session: the aioboto3 session (the process's by default).
        endpoint: another endpoint than `settings.websocket_endpoint`.
        credentials: sign with these instead of finding them.

    Raises:
        ValueError: `websocket_endpoint` is not set.
    """
    url = endpoint or settings.websocket_endpoint
    if not url:
        raise ValueError("WEBSOCKET_ENDPOINT is required to post to connections")
    session = session if session is not None else get_session()
    url = management_endpoint(url)
    kwargs = client_kwargs(settings, endpoint_url=url, config=client_config(max_attempts=1))
    if credentials is None:
        credentials = await asyncio.to_thread(emulator_credentials, url)
    if credentials is not None:
        kwargs.pop("aws_session_token", None)
        kwargs.update(credentials.client_kwargs())
    async with session.client("apigatewaymanagementapi", **kwargs) as client:
        yield client
