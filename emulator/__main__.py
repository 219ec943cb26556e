"""`streamer-emulator` (also `python -m emulator`): run the emulator in the foreground.

Flags fall back to environment variables, then to defaults; the core settings
(tables, JWT, limits, `STREAMER_APP`, `DYNAMODB_ENDPOINT_URL`) come from the
environment as in Lambda (DESIGN §7). A start-up failure prints one line and
exits non-zero; SIGINT/SIGTERM shut down gracefully, a second one quits within a second.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from adapters.sigv4 import DevCredentials
from emulator.guard import parse_networks
from emulator.server import DYNAMODB_CLIENT_KINDS, DynamoDBClientKind, Emulator, EmulatorConfig
from streamer.cli import emulator_http_port
from streamer.logs import configure_logging
from streamer.settings import Settings, SettingsError

__all__ = ["main", "parse_config", "raise_open_file_limit", "run"]

T = TypeVar("T")

_SAMPLE_PAYLOAD = {
    "start_date": "2026-01-01",
    "end_date": "2026-03-31",
    "format": "pdf",
    "report_type": "quarterly",
}


class _StartupError(Exception):
    """A start-up failure, printed as one line."""


def _env(name: str, parse: Callable[[str], T], default: T) -> T:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise _StartupError(f"{name} is malformed: {raw!r}") from None


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(text)
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


def _client_kind(text: str) -> DynamoDBClientKind:
    for kind in DYNAMODB_CLIENT_KINDS:
        if text.strip().lower() == kind:
            return kind
    raise ValueError(text)


def _flag(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _arg(parse: Callable[[str], T], what: str) -> Callable[[str], T]:
    def checked(text: str) -> T:
        try:
            return parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None

    return checked


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer-emulator",
        description=(
            "API Gateway WebSocket + DynamoDB Streams processing on one machine. "
            "Core settings (tables, JWT_PUBLIC_KEY, limits) come from the environment."
        ),
    )
    add = parser.add_argument
    add(
        "--app",
        metavar="MODULE:ATTR",
        help="the app as module:attribute (env STREAMER_APP; streamer.demo:app)",
    )
    add(
        "--host",
        metavar="HOST",
        help="interface to bind (env EMULATOR_HOST; 127.0.0.1, 0.0.0.0 in Docker)",
    )
    add(
        "--port",
        metavar="N",
        type=_arg(_port, "a port"),
        help="WebSocket port (env EMULATOR_PORT; 3001)",
    )
    add(
        "--http-port",
        metavar="N",
        type=_arg(_port, "a port"),
        help="HTTP port: @connections, /health, console "
        "(env EMULATOR_HTTP_PORT; the WebSocket port + 1, so 3002)",
    )
    add(
        "--dynamodb-endpoint",
        metavar="URL",
        help="DynamoDB endpoint (env DYNAMODB_ENDPOINT_URL); absent: an embedded moto server",
    )
    add(
        "--dynamodb-client",
        choices=DYNAMODB_CLIENT_KINDS,
        help="client of the stores and the stream: awsjson (lean, plain-HTTP moto or "
        "DynamoDB Local), aioboto3, or auto: awsjson on the embedded moto "
        "(env EMULATOR_DYNAMODB_CLIENT; auto)",
    )
    add(
        "--poll-interval",
        metavar="SECONDS",
        type=_arg(_positive, "a positive number"),
        help="seconds between stream polls while busy (env EMULATOR_POLL_INTERVAL; 0.05)",
    )
    add(
        "--idle-poll-interval",
        metavar="SECONDS",
        type=_arg(_positive, "a positive number"),
        help="longest pause between stream polls once idle; a request made through this "
        "emulator is read at once anyway (env EMULATOR_IDLE_POLL_INTERVAL; 0.5)",
    )
    add(
        "--batch-size",
        metavar="N",
        type=_arg(int, "an integer"),
        help="stream records per read (env EMULATOR_BATCH_SIZE; 10)",
    )
    add(
        "--idle-timeout",
        metavar="SECONDS",
        type=_arg(_positive, "a positive number"),
        help="seconds without traffic before a socket closes (env EMULATOR_IDLE_TIMEOUT; 600)",
    )
    add(
        "--max-connection-duration",
        metavar="SECONDS",
        type=_arg(_positive, "a positive number"),
        help="seconds a socket may stay open (env EMULATOR_MAX_CONNECTION_DURATION; 7200)",
    )
    add(
        "--sweep-interval",
        metavar="SECONDS",
        type=_arg(_positive, "a positive number"),
        help="seconds between sweeps of expired leases (env EMULATOR_SWEEP_INTERVAL; 10)",
    )
    add(
        "--drain-timeout",
        metavar="SECONDS",
        type=_arg(float, "a number"),
        help="seconds running actions may finish at shutdown (env EMULATOR_DRAIN_TIMEOUT; 10)",
    )
    add(
        "--state-dir",
        metavar="DIR",
        type=Path,
        help="dev keys, stream checkpoints and saved tables (env EMULATOR_STATE_DIR; .streamer)",
    )
    add(
        "--ephemeral",
        action="store_true",
        default=None,
        help="keep nothing across restarts: the embedded moto starts empty "
        "(env EMULATOR_EPHEMERAL; off: requests and subscriptions are saved in the state folder)",
    )
    add(
        "--save-interval",
        metavar="SECONDS",
        type=_arg(_positive, "a positive number"),
        help="seconds between saves of the embedded moto's tables; a kill -9 loses at most "
        "this much, a graceful stop nothing (env EMULATOR_SAVE_INTERVAL; 5)",
    )
    add("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING, ERROR (env LOG_LEVEL; INFO)")
    add(
        "--allow-unsigned",
        action="store_true",
        default=None,
        help="serve the management API without checking SigV4 signatures "
        "(env EMULATOR_ALLOW_UNSIGNED; off)",
    )
    add(
        "--allowed-hosts",
        metavar="NAMES",
        help="comma list of Host names served besides localhost and IP addresses "
        "(env EMULATOR_ALLOWED_HOSTS)",
    )
    add(
        "--trusted-networks",
        metavar="CIDRS",
        help="comma list of networks whose callers may use the console's API and get dev "
        "tokens (env EMULATOR_TRUSTED_NETWORKS; 127.0.0.0/8,::1/128)",
    )
    return parser


def parse_config(argv: Sequence[str] | None = None) -> EmulatorConfig:
    """The emulator configuration from flags, then the environment, then defaults.

    Raises:
        SystemExit: bad flags (argparse prints the usage).
        SettingsError: a malformed setting (one line naming it).
    """
    args = _parser().parse_args(argv)
    environ = dict(os.environ)
    if args.app:
        environ["STREAMER_APP"] = args.app
    if args.dynamodb_endpoint:
        environ["DYNAMODB_ENDPOINT_URL"] = args.dynamodb_endpoint
    if args.log_level:
        environ["LOG_LEVEL"] = args.log_level
    settings = Settings.from_env(environ)
    defaults = EmulatorConfig()
    try:
        ws_port = _first(args.port, _env("EMULATOR_PORT", _port, None))
        config = EmulatorConfig(
            settings=settings,
            host=args.host or _env("EMULATOR_HOST", str, defaults.host),
            port=_first(ws_port, defaults.port),
            http_port=_first(
                args.http_port,
                _env("EMULATOR_HTTP_PORT", _port, _http_port_for(ws_port, defaults.http_port)),
            ),
            poll_interval_s=_first(
                args.poll_interval,
                _env("EMULATOR_POLL_INTERVAL", _positive, defaults.poll_interval_s),
            ),
            idle_poll_interval_s=_first(
                args.idle_poll_interval,
                _env("EMULATOR_IDLE_POLL_INTERVAL", _positive, defaults.idle_poll_interval_s),
            ),
            batch_size=_first(
                args.batch_size, _env("EMULATOR_BATCH_SIZE", int, defaults.batch_size)
            ),
            idle_timeout_s=_first(
                args.idle_timeout,
                _env("EMULATOR_IDLE_TIMEOUT", _positive, defaults.idle_timeout_s),
            ),
            max_connection_s=_first(
                args.max_connection_duration,
                _env("EMULATOR_MAX_CONNECTION_DURATION", _positive, defaults.max_connection_s),
            ),
            sweep_interval_s=_first(
                args.sweep_interval,
                _env("EMULATOR_SWEEP_INTERVAL", _positive, defaults.sweep_interval_s),
            ),
            drain_timeout_s=_first(
                args.drain_timeout,
                _env("EMULATOR_DRAIN_TIMEOUT", float, defaults.drain_timeout_s),
            ),
            state_dir=args.state_dir or _env("EMULATOR_STATE_DIR", Path, defaults.state_dir),
            persist=not _first(args.ephemeral, _env("EMULATOR_EPHEMERAL", _flag, False)),
            save_interval_s=_first(
                args.save_interval,
                _env("EMULATOR_SAVE_INTERVAL", _positive, defaults.save_interval_s),
            ),
            dynamodb_client=_first(
                args.dynamodb_client,
                _env("EMULATOR_DYNAMODB_CLIENT", _client_kind, defaults.dynamodb_client),
            ),
        )
        config = dataclasses.replace(config, **_security_fields(args))
    except _StartupError as exc:
        raise SettingsError(str(exc)) from None
    if not 1 <= config.batch_size <= 1000:
        raise SettingsError(f"batch size must be 1 to 1000, got {config.batch_size}")
    if config.drain_timeout_s < 0:
        raise SettingsError(f"drain timeout must be >= 0, got {config.drain_timeout_s}")
    return config


def _security_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The HTTP side's access settings from flags and the environment."""
    allow_unsigned = _first(args.allow_unsigned, _env("EMULATOR_ALLOW_UNSIGNED", _flag, False))
    hosts = args.allowed_hosts or os.environ.get("EMULATOR_ALLOWED_HOSTS", "")
    networks = args.trusted_networks or os.environ.get("EMULATOR_TRUSTED_NETWORKS", "")
    fields: dict[str, Any] = {
        "verify_signatures": not allow_unsigned,
        "allowed_hosts": tuple(h.strip().lower() for h in hosts.split(",") if h.strip()),
    }
    if networks.strip():
        try:
            parse_networks(networks)
        except ValueError:
            raise _StartupError(f"trusted networks are malformed: {networks!r}") from None
        fields["trusted_networks"] = tuple(n.strip() for n in networks.split(",") if n.strip())
    key_id = os.environ.get("EMULATOR_ACCESS_KEY_ID", "").strip()
    secret = os.environ.get("EMULATOR_SECRET_ACCESS_KEY", "").strip()
    if bool(key_id) != bool(secret):
        raise _StartupError("set both EMULATOR_ACCESS_KEY_ID and EMULATOR_SECRET_ACCESS_KEY")
    if key_id:
        fields["management_credentials"] = DevCredentials(key_id, secret)
    return fields


def _http_port_for(ws_port: int | None, default: int) -> int:
    """The HTTP port when only the WebSocket one is given: the next one, the rule
    `streamer send` uses to find the dev-token endpoint from its `--url`."""
    return default if ws_port is None else emulator_http_port(ws_port)


def _first(value: T | None, fallback: T) -> T:
    return fallback if value is None else value


def banner(emulator: Emulator) -> str:
    """What the CLI prints once the emulator is up: URLs, a dev token, commands to try."""
    host = emulator.url_host
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    assert emulator.gateway is not None
    assert emulator.http is not None
    ws_url = f"ws://{shown}:{emulator.gateway.port}"
    http_url = f"http://{shown}:{emulator.http.port}"
    where = "embedded moto, " if emulator.is_moto_embedded else ""
    moto = f" ({where}{emulator.dynamodb_client} client)"
    assert emulator.app is not None
    lines = [
        f"Streamer emulator: app {emulator.app.name!r}, "
        f"actions {', '.join(sorted(emulator.app.actions))}",
        f"  WebSocket API   {ws_url}   (any stage path, e.g. {ws_url}/prod)",
        f"  HTTP            {http_url}   (console, /@connections/{{id}}, /health)",
        f"  DynamoDB        {emulator.dynamodb_endpoint}{moto}",
    ]
    credentials = emulator.management_credentials
    if not emulator.config.verify_signatures:
        lines += [
            "",
            "WARNING: the management API does not check signatures (--allow-unsigned): "
            "any local process can post to, read and close every connection.",
        ]
    elif credentials is not None:
        lines += [
            "",
            "The management API (/@connections/{id}) takes SigV4-signed calls (service "
            "execute-api) by these dev credentials; the production notifier finds them "
            f"in {emulator.config.state_dir}/ when WEBSOCKET_ENDPOINT={http_url}:",
            f"  AWS_ACCESS_KEY_ID={credentials.access_key_id}",
            f"  AWS_SECRET_ACCESS_KEY={credentials.secret_access_key}",
        ]
    if emulator.dev_keys is not None:
        token = emulator.mint_dev_token()
        hours = emulator.config.dev_token_ttl_s / 3600
        payload = json.dumps(_SAMPLE_PAYLOAD, separators=(",", ":"))
        lines += [
            "",
            f"Dev keys in {emulator.dev_keys.directory}/ (no JWT_PUBLIC_KEY set). "
            f"A token for dev-user in dev-tenant, valid {hours:g} h:",
            "",
            token,
            "",
            "Try:",
            f'  wscat -c "{ws_url}?Authorization={token}"',
            f'  > {{"action":"generate_report","payload":{payload}}}',
            "",
            f"  streamer send generate_report{_send_options(emulator, ws_url)} "
            f"--payload '{payload}'",
        ]
    else:
        lines += ["", "Tokens are checked against JWT_PUBLIC_KEY / JWT_JWKS_URL."]
    if emulator.table_state is not None:
        kept = f"; requests are kept in {emulator.table_state.path.parent}/ for the next start"
    else:
        kept = ""
    lines += [
        "",
        f"Ctrl-C stops (running actions get the drain time, then go back to PENDING{kept}).",
    ]
    return "\n".join(lines)


def _send_options(emulator: Emulator, ws_url: str) -> str:
    """What `streamer send` needs beyond its defaults (ws://localhost:3001, .streamer/)."""
    options = ""
    if ws_url != "ws://localhost:3001":
        options += f" --url {ws_url}"
    if emulator.dev_keys is not None and emulator.dev_keys.directory != Path(".streamer"):
        options += f" --keys-dir {emulator.dev_keys.directory}"
    return options


HARD_EXIT_S = 0.6
"""After a second signal, the process ends by then whatever is still running."""


async def run(config: EmulatorConfig, *, on_ready: Callable[[Emulator], None] | None = None) -> int:
    """Run until SIGINT or SIGTERM, then shut down gracefully; returns the exit status.

    The first signal starts the graceful shutdown (drain, hand back, save). A
    second one cuts the drain short (running actions are handed back at once)
    and ends the process within `HARD_EXIT_S` whatever is left, with status
    128 + the signal's number.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    running: Emulator | None = None
    seen: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        # A plain handler, not the loop's: it runs at once even while the loop is
        # busy, and it touches the loop only through call_soon_threadsafe.
        seen.append(signum)
        if len(seen) == 1:
            loop.call_soon_threadsafe(stop.set)
        elif len(seen) == 2:
            os.write(2, b"Quitting now.\n")
            if running is not None:
                loop.call_soon_threadsafe(running.hurry)
            _exit_after(HARD_EXIT_S, 128 + signum)

    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, on_signal) for signum in signals}
    try:
        async with Emulator(config) as emulator:
            running = emulator
            if on_ready is not None:
                on_ready(emulator)
            await stop.wait()
            print("Shutting down… (Ctrl-C again quits at once)", file=sys.stderr, flush=True)
    finally:
        if not seen:
            # No signal (start-up failed): leave the process as it was. After a
            # signal the handler stays until exit, so a late Ctrl-C never turns
            # into a KeyboardInterrupt traceback during interpreter shutdown.
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    return 128 + seen[1] if len(seen) > 1 else 0


def _exit_after(delay_s: float, status: int) -> None:
    """End the process in `delay_s` from a thread, even if the loop is busy."""

    # No flush before `os._exit`: the main thread may hold a stream's lock (it
    # was interrupted anywhere), and waiting for it would hang the exit. What
    # matters was written unbuffered (`os.write`, the log handlers' flushes).
    timer = threading.Timer(delay_s, os._exit, args=(status,))
    timer.daemon = True
    timer.start()


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit, so idle
    sockets run out of the HTTP side's cap, never of file descriptors; returns
    the soft limit now in force (-1 where the platform has none)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # e.g. macOS caps it below an infinite hard limit
            return int(soft)
        return int(target)
    return int(soft)


def main(argv: Sequence[str] | None = None) -> int:
    """The `streamer-emulator` command; returns the exit status."""
    raise_open_file_limit()
    try:
        config = parse_config(argv)
        configure_logging(config.settings.log_level, wire_level=config.settings.wire_log_level)
        if config.settings.log_level != "DEBUG" and config.settings.wire_log_level is None:
            # One line per socket close and per moto call drowns what matters.
            logging.getLogger("emulator.websockets").setLevel(logging.WARNING)
    except SettingsError as exc:
        print(f"streamer-emulator: {exc}", file=sys.stderr)
        return 2
    tune_garbage_collector()
    try:
        status = asyncio.run(
            run(config, on_ready=lambda emulator: print(banner(emulator), flush=True))
        )
        if status != 0:
            # A second signal: the shutdown is done, and the interpreter's own
            # teardown (a full garbage collection of moto's and botocore's
            # objects, seconds on a busy machine) is not worth waiting for.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
        return status
    except KeyboardInterrupt:  # a signal before the handlers are installed
        return 130
    except OSError as exc:
        print(f"streamer-emulator: cannot start: {_one_line(exc)}", file=sys.stderr)
        return 1
    except (ValueError, SettingsError, RuntimeError) as exc:
        print(f"streamer-emulator: {_one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"streamer-emulator: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 1


GC_THRESHOLDS = (50_000, 20, 20)
"""Young-generation collections every 50,000 allocations rather than 700."""


def tune_garbage_collector() -> None:
    """Collect less often: with 10,000 sockets open, CPython's default thresholds
    spent a third of a tenant push's CPU in the collector (`gc_collect_main`),
    walking objects that live as long as their sockets. Almost everything the
    emulator frees goes by reference count; the cycles the collector exists for
    still go, a little later."""
    gc.set_threshold(*GC_THRESHOLDS)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
