"""The emulator's composition root: adapters and core services wired into one
process (WebSocket gateway, HTTP side, stream poller, sweeper).

`Emulator(config)` is an async context manager, so the CLI, tests and benchmarks
all start the same thing; ports may be 0 and the actual URLs are exposed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from adapters.aws import client_kwargs, get_session
from adapters.awsjson import get_awsjson_session, under_way_context
from adapters.dynamodb import DynamoDBStores, create_tables, open_stores
from adapters.jwks import UrllibJwksFetcher
from adapters.sigv4 import DevCredentials, load_or_create_dev_credentials
from adapters.streams.reader import ShardReader
from emulator.database import EmbeddedDynamoDB
from emulator.gateway import Gateway, SocketRegistry
from emulator.guard import DEFAULT_TRUSTED_NETWORKS, AccessPolicy, parse_networks
from emulator.http import HttpSide
from emulator.notifier import LocalNotifier, RemoteEndpoints, RoutingNotifier
from emulator.persistence import STATE_FILE, TableState
from emulator.stores import LiveConnectionStore, WakingRequestStore
from emulator.streams import StreamPoller
from streamer.app import Streamer, load_app
from streamer.clock import SystemClock
from streamer.errors import StreamerError
from streamer.keys import JWKS_MIN_REFETCH_S
from streamer.services import Services, build_services, build_verifier
from streamer.settings import Settings
from streamer.tokens import DevKeys, load_or_create_dev_keys, mint_token

__all__ = [
    "CHECKPOINT_FILE",
    "DYNAMODB_CLIENT_KINDS",
    "DynamoDBClientKind",
    "Emulator",
    "EmulatorConfig",
]

log = logging.getLogger("emulator")

CHECKPOINT_FILE = "stream-checkpoints.json"
"""Name of the poller's checkpoint file under the state folder."""

DynamoDBClientKind = Literal["auto", "awsjson", "aioboto3"]
DYNAMODB_CLIENT_KINDS: Final[tuple[DynamoDBClientKind, ...]] = ("auto", "awsjson", "aioboto3")
"""What `EmulatorConfig.dynamodb_client` may be."""


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """How to run the emulator.

    Args:
        settings: the core settings (tables, JWT, limits); `dynamodb_endpoint_url`
            None starts an embedded moto server in this process.
        app: the Streamer app, or an import string; None uses `settings.app`.
        host: interface both servers bind (`0.0.0.0` inside Docker).
        port: WebSocket port (0 picks a free one).
        http_port: HTTP port (management API, health, console; 0 picks one).
        poll_interval_s: pause of the stream poller after an empty read while
            busy; requests made through this emulator wake it at once.
        idle_poll_interval_s: the longest pause once the stream has been idle
            (never below `poll_interval_s`): how late records written by
            another process may be read.
        batch_size: records per `GetRecords` call.
        idle_timeout_s: sockets without traffic either way close after it (1001).
        max_connection_s: sockets close this long after connecting (1001).
        sweep_interval_s: how often expired leases are swept.
        drain_timeout_s: at shutdown, how long running actions may go on before
            they are cancelled and handed back to PENDING.
        state_dir: dev keys, stream checkpoints and saved tables (`.streamer/`).
        persist: keep the embedded moto's requests and subscriptions across
            restarts in `state_dir` (ignored with an external DynamoDB, which
            keeps its own state).
        save_interval_s: seconds between saves while running: what a kill -9
            may lose (a graceful shutdown always saves).
        create_tables: create missing tables at start.
        dev_token_ttl_s: lifetime of the printed and console dev tokens.
        shard_refresh_s: how often the poller looks for new shards.
        start_timeout_s: how long the poller may take to find its starting
            positions before start-up fails.
        jwks_min_refetch_s: least time between two fetches of `JWT_JWKS_URL`
            (a minute, as in Lambda; tests shrink it).
        process_stream: run the stream poller (the processor); off, requests stay
            PENDING for another processor (the Lambda one in the parity test).
        verify_signatures: the management API requires SigV4 signed by the dev
            credentials, as API Gateway requires IAM-signed calls; False serves it
            unsigned (said at start).
        management_credentials: the credentials it accepts; None loads or makes
            them under `state_dir` (emulators sharing a table share them).
        allowed_hosts: `Host` names served besides loopback names and IP literals.
        trusted_networks: callers allowed to use the console's API (dev tokens,
            the connection list): loopback unless told otherwise.
        max_http_connections: sockets the HTTP side holds at most.
        http_idle_timeout_s: an HTTP socket with no complete request this long after
            it opened or was answered is closed (the header and the idle timeout).
        write_timeout_s: a WebSocket send waiting this long for a client that does
            not read closes the socket with 1001 (and `$disconnect` runs).
        table_check_interval_s: with `create_tables`, how often the tables are
            looked for; missing ones (DynamoDB came back empty) are created again.
        dynamodb_client: the client of the stores, the stream poller and the table
            saver: `awsjson` (`adapters.awsjson`, a fraction of aiobotocore's CPU per
            call, for a plain-HTTP moto or DynamoDB Local), `aioboto3`, or `auto`:
            awsjson on the embedded moto, aioboto3 on any other endpoint. Table
            creation and the management API stay on aioboto3.
    """

    settings: Settings = field(default_factory=Settings)
    app: Streamer | str | None = None
    host: str = "127.0.0.1"
    port: int = 3001
    http_port: int = 3002
    poll_interval_s: float = 0.05
    idle_poll_interval_s: float = 0.5
    batch_size: int = 10
    idle_timeout_s: float = 600.0
    max_connection_s: float = 7200.0
    sweep_interval_s: float = 10.0
    drain_timeout_s: float = 10.0
    state_dir: Path = Path(".streamer")
    persist: bool = False
    save_interval_s: float = 5.0
    create_tables: bool = True
    dev_token_ttl_s: float = 24 * 3600.0
    shard_refresh_s: float = 5.0
    start_timeout_s: float = 30.0
    process_stream: bool = True
    verify_signatures: bool = True
    management_credentials: DevCredentials | None = None
    allowed_hosts: tuple[str, ...] = ()
    trusted_networks: tuple[str, ...] = DEFAULT_TRUSTED_NETWORKS
    max_http_connections: int = 256
    http_idle_timeout_s: float = 15.0
    write_timeout_s: float = 10.0
    table_check_interval_s: float = 2.0
    jwks_min_refetch_s: float = JWKS_MIN_REFETCH_S
    dynamodb_client: DynamoDBClientKind = "auto"


class Emulator:
    """API Gateway WebSocket + the stream-driven processor, on one machine.

    Use as `async with Emulator(config) as emulator:`; the attributes below are
    set once it has started.

    Args:
        config: what to run and where.
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.settings = config.settings
        self.app: Streamer | None = None
        self.dev_keys: DevKeys | None = None
        self.management_credentials: DevCredentials | None = config.management_credentials
        """What the management API accepts (and this emulator signs with)."""
        self.dynamodb_endpoint: str | None = config.settings.dynamodb_endpoint_url
        self.is_moto_embedded = False
        self.dynamodb_client: DynamoDBClientKind = config.dynamodb_client
        """The client the stores use (`auto` resolved at start)."""
        self.services: Services | None = None
        self.stores: DynamoDBStores | None = None
        self.registry = SocketRegistry()
        self.gateway: Gateway | None = None
        self.http: HttpSide | None = None
        self.poller: StreamPoller | None = None
        self.table_state: TableState | None = None
        self._stack = AsyncExitStack()
        self._background: asyncio.Task[None] | None = None
        self._started_at = 0.0
        self._tables: dict[str, Any] = {"status": "unchecked"}
        """What the table watcher last saw (`/health`)."""
        self._hurry = asyncio.Event()

    # -- URLs --------------------------------------------------------------------

    @property
    def url_host(self) -> str:
        """The host to put in URLs (loopback when bound to every interface)."""
        host = self.config.host
        return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host

    @property
    def ws_url(self) -> str:
        """`ws://HOST:PORT` of the WebSocket API."""
        assert self.gateway is not None, "the emulator is not started"
        return f"ws://{self.url_host}:{self.gateway.port}"

    @property
    def http_url(self) -> str:
        """`http://HOST:PORT` of the HTTP side."""
        assert self.http is not None, "the emulator is not started"
        return f"http://{self.url_host}:{self.http.port}"

    def mint_dev_token(self, sub: str = "dev-user", tenant_id: str = "dev-tenant") -> str:
        """A token signed with the dev keys.

        Raises:
            RuntimeError: the emulator uses a configured `JWT_PUBLIC_KEY`.
        """
        if self.dev_keys is None:
            raise RuntimeError("no dev keys: JWT_PUBLIC_KEY is configured")
        return mint_token(
            self.dev_keys.private_pem,
            sub=sub,
            tenant_id=tenant_id,
            ttl_s=self.config.dev_token_ttl_s,
            issuer=self.settings.jwt_issuer,
        )

    def health(self) -> dict[str, Any]:
        """The `/health` body."""
        poller = self.poller
        background = self._background
        failed = background is not None and background.done()
        return {
            "status": "degraded" if failed else "ok",
            "connections": len(self.registry),
            "dynamodb_endpoint": self.dynamodb_endpoint,
            "moto_embedded": self.is_moto_embedded,
            "dynamodb_client": self.dynamodb_client,
            "poller": {
                "lag_ms": round(poller.lag_ms, 1) if poller else None,
                "in_flight": poller.in_flight if poller else 0,
                "shards": poller.shards if poller else 0,
                "records_handled": poller.records_handled if poller else 0,
            },
            "poller_lag_ms": round(poller.lag_ms, 1) if poller else None,
            "ws_url": self.ws_url if self.gateway else None,
            "http_url": self.http_url if self.http else None,
            "tables": dict(self._tables),
            "uptime_s": round(time.monotonic() - self._started_at, 1),
        }

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Emulator:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _start(self) -> None:
        config = self.config
        self._started_at = time.monotonic()
        app = config.app if config.app is not None else config.settings.app
        self.app = load_app(app) if isinstance(app, str) else app

        settings = config.settings
        if settings.dynamodb_endpoint_url is None:
            # Not moto's ThreadedMotoServer: it lets two concurrent conditional writes
            # both win. A child process: moto's CPU stays off this event loop.
            moto = await EmbeddedDynamoDB.start()
            self._stack.push_async_callback(moto.stop)
            self.dynamodb_endpoint = moto.endpoint
            self.is_moto_embedded = True
            settings = dataclasses.replace(settings, dynamodb_endpoint_url=self.dynamodb_endpoint)
        if self.management_credentials is None:
            self.management_credentials = load_or_create_dev_credentials(config.state_dir)
        if not config.verify_signatures:
            log.warning("the management API does not check signatures: anyone can call it")
        if settings.jwt_public_key is None and settings.jwt_jwks_url is None:
            self.dev_keys = load_or_create_dev_keys(config.state_dir)
            settings = dataclasses.replace(settings, jwt_public_key=self.dev_keys.public_pem)
        self.settings = settings

        clock = SystemClock()
        verifier = build_verifier(
            settings,
            clock=clock,
            fetcher=UrllibJwksFetcher(),
            jwks_min_refetch_s=config.jwks_min_refetch_s,
        )
        session = get_session()
        if self.dynamodb_client == "auto":
            self.dynamodb_client = "awsjson" if self.is_moto_embedded else "aioboto3"
        # The calls of every request (stores, stream, saves): the lean client where the
        # endpoint is a local moto; aiobotocore's CPU per call bounded the loop there.
        store_session = get_awsjson_session() if self.dynamodb_client == "awsjson" else session
        if config.create_tables:
            created = await create_tables(settings, session=session)
            if created:
                log.info("created tables: %s", ", ".join(created))
        if config.persist and self.is_moto_embedded:
            # Closed after the background tasks (pushed before them): the last
            # save sees the requests the drain handed back to PENDING.
            self.table_state = TableState(
                settings,
                session=store_session,
                path=config.state_dir / STATE_FILE,
                interval_s=config.save_interval_s,
            )
            self._stack.push_async_callback(self.table_state.close)
        self.stores = await self._stack.enter_async_context(
            open_stores(settings, session=store_session)
        )

        local = LocalNotifier(self.registry, frame_policy=settings.frame_policy)
        assert self.management_credentials is not None
        remote = RemoteEndpoints(settings, self.management_credentials, session=session)
        self._stack.push_async_callback(remote.aclose)
        # Emulators may share the table: a socket another one holds is reached
        # through the management API its connection record names.
        notifier = RoutingNotifier(
            local=local,
            connections=self.stores.connections,
            own_endpoint=lambda: self.http_url if self.http is not None else "",
            remote=remote,
        )
        # One process holds every socket and reads the stream: the stores can
        # count connections from the sockets and wake the poller on enqueue.
        connection_records = self.stores.connections

        async def recorded_connections() -> int:
            # The counter item: every process's connections, not only this one's.
            return (await connection_records.count()).count

        self.services = services = build_services(
            app=self.app,
            settings=settings,
            connections=LiveConnectionStore(
                connection_records, self.registry, recorded=recorded_connections
            ),
            requests=WakingRequestStore(
                self.stores.requests,
                self._wake_poller,
                self.table_state.mark_changed if self.table_state is not None else None,
            ),
            subscriptions=self.stores.subscriptions,
            notifier=notifier,
            clock=clock,
            verifier=verifier,
        )

        if config.process_stream:
            streams_client = await self._stack.enter_async_context(
                store_session.client("dynamodbstreams", **client_kwargs(settings))
            )
            reader = ShardReader(
                streams=streams_client,
                dynamodb=self.stores.client,
                table_name=settings.requests_table,
            )
            self.poller = StreamPoller(
                reader=reader,
                processor=services.processor,
                clock=clock,
                checkpoint_path=config.state_dir / CHECKPOINT_FILE,
                batch_size=config.batch_size,
                poll_interval_s=config.poll_interval_s,
                idle_poll_interval_s=config.idle_poll_interval_s,
                shard_refresh_s=config.shard_refresh_s,
            )
        self._background = asyncio.create_task(self._run_background(), name="emulator-background")
        self._stack.push_async_callback(self._stop_background)
        if self.poller is not None:
            await self._wait_poller_ready()
        if self.table_state is not None:
            await self._restore_tables(self.table_state)

        gateway = Gateway(
            connections=services.connections,
            router=services.router,
            registry=self.registry,
            clock=clock,
            endpoint="",  # replaced below once the HTTP port is known
            health=self.health,
            idle_timeout_s=config.idle_timeout_s,
            max_lifetime_s=config.max_connection_s,
            frame_policy=settings.frame_policy,
            write_timeout_s=config.write_timeout_s,
        )
        self.gateway = gateway
        self.http = HttpSide(
            registry=self.registry,
            notifier=local,
            gateway=gateway,
            app=self.app,
            async_threshold_s=settings.async_threshold_s,
            health=self.health,
            dev_token=self.mint_dev_token if self.dev_keys is not None else None,
            dev_token_ttl_s=config.dev_token_ttl_s,
            ws_url=lambda: self.ws_url,
            max_message_bytes=settings.max_message_bytes,
            policy=AccessPolicy(
                allowed_hosts=frozenset(h.lower() for h in config.allowed_hosts),
                trusted_networks=parse_networks(config.trusted_networks),
                verify_signatures=config.verify_signatures,
            ),
            credentials=self.management_credentials,
            clock=clock,
            max_connections=config.max_http_connections,
            idle_timeout_s=config.http_idle_timeout_s,
        )
        await self.http.start(config.host, config.http_port)
        self._stack.push_async_callback(self.http.close)
        gateway.set_endpoint(self.http_url)
        await gateway.start(config.host, config.port)
        self._stack.push_async_callback(gateway.close, frame_drain_s=config.drain_timeout_s)

    async def _restore_tables(self, table_state: TableState) -> None:
        # After the poller is ready: it starts a new stream at its end (LATEST),
        # so the restored PENDING items' INSERT records are read and run again;
        # finished ones are filtered out as any non-claimable image is.
        report = await table_state.restore()
        if report.saved_at is not None:
            log.info(
                "restored %s saved at %s from %s",
                ", ".join(f"{count} {role}" for role, count in report.items.items()),
                report.saved_at,
                table_state.path,
            )
        self._wake_poller()
        table_state.start()

    def _wake_poller(self) -> None:
        if self.poller is not None:
            self.poller.wake()

    async def _wait_poller_ready(self) -> None:
        assert self.poller is not None
        assert self._background is not None
        ready = asyncio.ensure_future(self.poller.wait_ready())
        try:
            await asyncio.wait(
                [ready, self._background],
                timeout=self.config.start_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            is_ready = ready.done()
        finally:
            ready.cancel()
        if not is_ready and not self._background.done():
            raise RuntimeError(
                f"the stream poller could not start reading the requests table's stream "
                f"within {self.config.start_timeout_s:g} s (see the log)"
            )
        if self._background.done():
            self._background.result()  # raises what stopped it
            raise RuntimeError("the stream poller stopped during start-up")

    async def _run_background(self) -> None:
        async with asyncio.TaskGroup() as group:
            # The processor's and the sweeper's calls to the embedded DynamoDB finish
            # work under way: a full connection pool serves them before new work (the
            # router's enqueues), as separate Lambda invocations never wait behind
            # each other (`adapters.awsjson.http`).
            if self.poller is not None:
                group.create_task(
                    self.poller.run(), name="stream-poller", context=under_way_context()
                )
            group.create_task(self._sweep_forever(), name="sweeper", context=under_way_context())
            if self.config.create_tables:
                group.create_task(self._watch_tables(), name="table-watcher")

    async def _watch_tables(self) -> None:
        """Create the tables again whenever they are missing (moto restarted empty),
        so handshakes and requests work again with nobody running `tables create`."""
        settings = self.settings
        names = (settings.connections_table, settings.requests_table, settings.subscriptions_table)
        recreated = 0
        # The stores' own client: no second client (and its first-call set-up, which
        # for aiobotocore loads the CA bundle even for http://) just to look.
        assert self.stores is not None
        client: Any = self.stores.client
        while True:
            await asyncio.sleep(self.config.table_check_interval_s)
            seen: dict[str, Any] = {"checked_at": _now_text()}
            try:
                missing = [name for name in names if not await _exists(client, name)]
                if missing:
                    log.warning("tables are missing, creating them again: %s", missing)
                    # The looks above are three calls: a moto restarted between them
                    # answered for some tables before it lost them. What the creation
                    # made was missing too, so report both.
                    created = await create_tables(settings)
                    missing = [name for name in names if name in missing or name in created]
                    recreated += 1
                    log.warning("created the missing tables again: %s", missing)
                    seen.update(last_missing=missing, recreated_at=_now_text())
                seen["status"] = "ok"
            except Exception as exc:  # DynamoDB unreachable: look again at the next tick
                log.warning("could not check the tables: %s", type(exc).__name__)
                seen["status"] = "unreachable"
            previous = self._tables
            for key in ("last_missing", "recreated_at"):
                if key not in seen and key in previous:
                    seen[key] = previous[key]
            seen["recreated"] = recreated
            self._tables = seen

    async def _sweep_forever(self) -> None:
        assert self.services is not None
        while True:
            try:
                report = await self.services.sweeper.sweep_once()
                if report.requeued or report.failed:
                    log.info(
                        "swept expired leases: %d requeued, %d failed",
                        report.requeued,
                        report.failed,
                    )
            except StreamerError as exc:  # the store is unreachable: try at the next tick
                log.warning("sweep failed: %s", exc.message)
            except Exception:
                log.exception("sweep failed")
            await asyncio.sleep(self.config.sweep_interval_s)

    def hurry(self) -> None:
        """Cut a shutdown's drain short: running actions are handed back now."""
        self._hurry.set()

    async def _stop_background(self) -> None:
        """Drain the poller within the drain time (or until `hurry`), then cancel
        what is left (its requests go back to PENDING) and the sweeper."""
        background = self._background
        if background is None:
            return
        if self.poller is not None and not background.done():
            drain = asyncio.ensure_future(self.poller.stop(self.config.drain_timeout_s))
            hurried = asyncio.ensure_future(self._hurry.wait())
            try:
                await asyncio.wait({drain, hurried}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                hurried.cancel()
                drain.cancel()
            left = drain.result() if drain.done() and not drain.cancelled() else None
            if left:
                log.warning("drain time is up: handing %d running request(s) back", left)
            elif left is None:
                log.warning("drain cut short: handing the running requests back")
        background.cancel()
        try:
            await background
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("a background task had failed")

    async def close(self) -> None:
        """Graceful shutdown: stop accepting and close sockets with 1001, let
        running actions finish within the drain time or hand them back, stop the
        background tasks, the HTTP side, the stores and the embedded moto."""
        await self._stack.aclose()


async def _exists(client: Any, name: str) -> bool:
    try:
        await client.describe_table(TableName=name)
    except client.exceptions.ResourceNotFoundException:
        return False
    return True


def _now_text() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
