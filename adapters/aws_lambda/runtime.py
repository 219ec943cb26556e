"""The Lambda composition root: one event loop and one client set per container.

Each entrypoint is a plain `def handler(event, context)` that calls `invoke`.
The first call in a container (the cold start) validates the settings, loads
the app, opens the DynamoDB client and the management-API client on one
module-level `asyncio.Runner`, and builds the core services; warm invocations
reuse all of it. The loop is never closed between invocations: a thawed
container must find its cached clients on the same, still open, loop (one
`asyncio.run` per invocation would leave them on a closed one).
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal, Protocol, TypeVar

from adapters import aws_lambda
from adapters.apigateway import ApiGatewayNotifier, open_management_client
from adapters.aws import get_threaded_session
from adapters.aws_lambda.metrics import Metric, MetricsBatch
from adapters.dynamodb import DynamoDBConnectionStore, DynamoDBStores
from adapters.jwks import UrllibJwksFetcher
from streamer.app import Streamer, load_app
from streamer.clock import SystemClock
from streamer.errors import ErrorCode, StreamerError
from streamer.logs import configure_logging
from streamer.models import ConnectionId
from streamer.ports import Clock, Notifier
from streamer.protocol import ServerMessage
from streamer.services import Services, build_services, build_verifier
from streamer.settings import Settings, SettingsError

__all__ = [
    "PUSHER_SETTINGS",
    "REQUIRED_ONE_OF",
    "REQUIRED_SETTINGS",
    "ActiveConnectionsGauge",
    "FunctionName",
    "LambdaContext",
    "Runtime",
    "current_runtime",
    "get_runner",
    "invoke",
    "remaining_time",
    "reset_for_tests",
]

logger = logging.getLogger("streamer.lambda")

FunctionName = Literal["connect", "disconnect", "router", "processor", "sweeper", "pusher"]

_TABLES_AND_REGION = ("CONNECTIONS_TABLE", "AWS_REGION")
_POSTING = ("CONNECTIONS_TABLE", "REQUESTS_TABLE", "WEBSOCKET_ENDPOINT", "AWS_REGION")
REQUIRED_SETTINGS: Final[Mapping[FunctionName, tuple[str, ...]]] = {
    "connect": _TABLES_AND_REGION,
    "disconnect": _TABLES_AND_REGION,
    "router": _POSTING,
    "processor": _POSTING,
    "sweeper": _POSTING,
}
"""The environment each function of the stack refuses to start without (DESIGN §7)."""
REQUIRED_ONE_OF: Final[Mapping[FunctionName, tuple[tuple[str, ...], ...]]] = {
    "connect": (("JWT_PUBLIC_KEY", "JWT_JWKS_URL"),),
}
"""Groups of settings of which a function needs at least one (a key, or an
identity provider's JWKS)."""
PUSHER_SETTINGS: Final = ("CONNECTIONS_TABLE", "WEBSOCKET_ENDPOINT", "AWS_REGION")
"""What a user's own pushing function (`adapters.aws_lambda.pusher`) needs."""

DEFAULT_REMAINING_MS: Final = 900_000
"""Assumed when there is no Lambda context (a local call): Lambda's maximum."""

T = TypeVar("T")


class LambdaContext(Protocol):
    """The parts of Lambda's context object Streamer reads."""

    aws_request_id: str
    function_name: str

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds before Lambda stops this invocation."""
        ...


def remaining_time(context: LambdaContext | None) -> timedelta:
    """How long this invocation may still run."""
    if context is None:
        return timedelta(milliseconds=DEFAULT_REMAINING_MS)
    return timedelta(milliseconds=max(0, context.get_remaining_time_in_millis()))


class _UnconfiguredNotifier:
    """Stands in where no `WEBSOCKET_ENDPOINT` is configured: every post fails."""

    async def send(self, connection_id: ConnectionId, message: ServerMessage) -> None:
        raise StreamerError(ErrorCode.INTERNAL_ERROR, "WEBSOCKET_ENDPOINT is not configured")


RECOUNT_INTERVAL_S: Final = 3600.0
"""Least time between two `Scan`s that correct the connection counter's drift."""


class ActiveConnectionsGauge:
    """The `ActiveConnections` metric, from the counter item the connections store
    keeps on every connect, disconnect and gone connection: one strongly
    consistent `GetItem`, however many connections there are.

    The sweeper's `refresh` also corrects the counter's drift (a crash between a
    record and its count, records DynamoDB's TTL deleted) with a `Scan`, at most
    once per `recount_interval_s` across every container: the last recount's
    time is kept in the counter item.

    Args:
        connections: the DynamoDB connections store.
        clock: time source.
        recount_interval_s: least time between two recounts (default an hour).
    """

    def __init__(
        self,
        connections: DynamoDBConnectionStore,
        *,
        clock: Clock,
        recount_interval_s: float = RECOUNT_INTERVAL_S,
    ) -> None:
        self._connections = connections
        self._clock = clock
        self._recount_interval_s = recount_interval_s

    async def current(self) -> int:
        """The counter's value."""
        return (await self._connections.count()).count

    async def refresh(self) -> int:
        """The counter's value, set from a `Scan` first when the last recount is
        older than the interval (or there never was one)."""
        now = self._clock.now()
        counted = await self._connections.count()
        last = counted.counted_at
        if last is not None and (now - last).total_seconds() < self._recount_interval_s:
            return counted.count
        return await self._connections.recount(now)


@dataclass(slots=True)
class Runtime:
    """What one container holds for its life: settings, clients, services.

    Args:
        settings: validated at cold start.
        app: the user's actions (`STREAMER_APP`).
        clock: the system clock.
        stores: the DynamoDB stores over one open client.
        notifier: the management-API notifier (or a stand-in that refuses when
            `WEBSOCKET_ENDPOINT` is not set).
        services: the core services built over those ports.
        active_connections: the `ActiveConnections` counter.
    """

    settings: Settings
    app: Streamer
    clock: Clock
    stores: DynamoDBStores
    notifier: Notifier
    services: Services
    active_connections: ActiveConnectionsGauge
    validated: set[str] = field(default_factory=set)
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack, repr=False)

    @property
    def management(self) -> ApiGatewayNotifier | None:
        """The management-API notifier, when one is configured."""
        return self.notifier if isinstance(self.notifier, ApiGatewayNotifier) else None

    def deadline(self, context: LambdaContext | None, *, margin: timedelta) -> datetime:
        """The wall time by which work must be handed back."""
        return self.clock.now() + remaining_time(context) - margin

    def metrics(self, context: LambdaContext | None) -> MetricsBatch:
        """A metrics batch tagged with the function and request id."""
        properties: dict[str, Any] = {}
        if context is not None:
            properties = {
                "function_name": context.function_name,
                "aws_request_id": context.aws_request_id,
            }
        return MetricsBatch(properties=properties)

    async def record_active_connections(self, metrics: MetricsBatch) -> None:
        """Put `ActiveConnections` (the counter, after this connect or disconnect)."""
        try:
            count = await self.active_connections.current()
        except Exception:
            # A metric never fails a connect or disconnect: log it, publish nothing.
            logger.warning("could not count active connections", exc_info=True)
            return
        metrics.set(Metric.ACTIVE_CONNECTIONS, count)

    async def aclose(self) -> None:
        """Close the clients (tests; a real container is simply frozen)."""
        await self._stack.aclose()


_runner: asyncio.Runner | None = None
_runtime: Runtime | None = None
_aws_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "aws_request_id", default=None
)


def _stamp_request_id(
    factory: Callable[..., logging.LogRecord],
) -> Callable[..., logging.LogRecord]:
    """A log record factory that adds the invocation's Lambda request id to every
    record made while it runs, whatever logger or handler is involved."""

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        request_id = _aws_request_id.get()
        if request_id is not None:
            record.aws_request_id = request_id
        return record

    make._streamer_stamp = True  # type: ignore[attr-defined]
    make.__wrapped__ = factory  # type: ignore[attr-defined]
    return make


def _configure_logging(level: str, wire_level: str | None = None) -> None:
    configure_logging(level, wire_level=wire_level)
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "_streamer_stamp", False):
        logging.setLogRecordFactory(_stamp_request_id(factory))


def get_runner() -> asyncio.Runner:
    """The container's event loop runner, made on first use and never closed."""
    global _runner
    if _runner is None:
        # A loop factory keeps the runner from installing its loop as the
        # thread's current one (the loop is only ever used through the runner).
        _runner = asyncio.Runner(loop_factory=asyncio.new_event_loop)
    return _runner


def current_runtime() -> Runtime | None:
    """The runtime built by the cold start, if there was one yet."""
    return _runtime


def _settings_for(function: FunctionName) -> Settings:
    try:
        for names in REQUIRED_ONE_OF.get(function, ()):
            if not any(os.environ.get(name, "").strip() for name in names):
                raise SettingsError(f"{' or '.join(names)} is required")
        required = PUSHER_SETTINGS if function == "pusher" else REQUIRED_SETTINGS[function]
        return Settings.from_env(required=required)
    except SettingsError as exc:
        logger.critical(f"invalid configuration for the {function} function: {exc}")
        raise


async def _build_runtime(settings: Settings) -> Runtime:
    stack = AsyncExitStack()
    try:
        try:
            app = load_app(settings.app)
        except ValueError as exc:
            raise SettingsError(f"STREAMER_APP: {exc}") from None
        clock = SystemClock()
        # botocore's clients, not aioboto3's: see adapters/aws.py.
        session = get_threaded_session()
        stores = await DynamoDBStores.open(settings, session=session)
        stack.push_async_callback(stores.aclose)
        notifier: Notifier
        if settings.websocket_endpoint:
            client = await stack.enter_async_context(
                open_management_client(settings, session=session)
            )
            notifier = ApiGatewayNotifier(
                client, sleep=clock.sleep, frame_policy=settings.frame_policy
            )
        else:
            notifier = _UnconfiguredNotifier()
        # The JWKS, if any, is fetched at the first token that needs it, never at
        # cold start; with neither key setting every token is refused.
        verifier = build_verifier(settings, clock=clock, fetcher=UrllibJwksFetcher())
        services = build_services(
            app=app,
            settings=settings,
            connections=stores.connections,
            requests=stores.requests,
            subscriptions=stores.subscriptions,
            notifier=notifier,
            clock=clock,
            verifier=verifier,
        )
    except BaseException:
        await stack.aclose()
        raise
    return Runtime(
        settings=settings,
        app=app,
        clock=clock,
        stores=stores,
        notifier=notifier,
        services=services,
        active_connections=ActiveConnectionsGauge(stores.connections, clock=clock),
        _stack=stack,
    )


async def _ensure_runtime(function: FunctionName) -> Runtime:
    global _runtime
    if _runtime is not None and function in _runtime.validated:
        return _runtime
    _configure_logging("INFO")
    settings = _settings_for(function)
    _configure_logging(settings.log_level, settings.wire_log_level)
    if _runtime is None:
        started = time.perf_counter()
        try:
            _runtime = await _build_runtime(settings)
        except SettingsError as exc:
            logger.critical(f"invalid configuration for the {function} function: {exc}")
            raise
        logger.info(
            "cold start",
            extra={
                "action": function,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
    _runtime.validated.add(function)
    return _runtime


def invoke(
    function: FunctionName,
    context: LambdaContext | None,
    work: Callable[[Runtime], Coroutine[Any, Any, T]],
) -> T:
    """Run one invocation's `work` on the container's loop and runtime.

    Raises:
        SettingsError: at a cold start with a missing or malformed setting
            (logged first as one line naming it).
    """
    runner = get_runner()
    request_id = context.aws_request_id if context is not None else None

    async def run() -> T:
        token = _aws_request_id.set(request_id)
        try:
            runtime = await _ensure_runtime(function)
            return await work(runtime)
        finally:
            _aws_request_id.reset(token)

    try:
        return runner.run(run())
    finally:
        _resume_collector()


_collector_paused = aws_lambda.COLD_START_PAUSED_GC


def _resume_collector() -> None:
    """After the first invocation: freeze what the cold start made, collect again."""
    global _collector_paused
    if _collector_paused:
        _collector_paused = False
        gc.freeze()
        gc.enable()


def reset_for_tests() -> None:
    """Close the runtime's clients and the loop, and take back the logging set-up,
    so the next call is a cold start."""
    global _runner, _runtime
    if _runner is not None:
        if _runtime is not None:
            _runner.run(_runtime.aclose())
        _runner.close()
    _runner = None
    _runtime = None
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_streamer_json", False)]:
        # Bound to the stream of the moment (a test's captured stderr): the next
        # cold start installs a fresh one.
        if type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
    factory = logging.getLogRecordFactory()
    while getattr(factory, "_streamer_stamp", False):
        factory = factory.__wrapped__  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
