"""The `streamer` command's core: dev tokens, talking to the API (send, status, cancel,
listen), and the app's AsyncAPI document and typed clients (asyncapi, codegen).

Exit codes: 0 success; 1 a local failure (no token, AWS unreachable…); 2 the
server answered with an error (`CODE: message` on stderr); 3 the WebSocket could
not be opened, was refused or was lost; 4 no answer within `--timeout`;
64 bad usage; 130 interrupted.

The subcommands that need AWS (`tables`, `lambda build`, `push`) live in
`adapters.commands`, which builds the installed `streamer` command from this
parser plus its own: the core imports no adapter.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn, TypeAlias
from urllib.parse import urlencode, urlsplit, urlunsplit

__all__ = [
    "CORE_COMMANDS",
    "EXIT_CONNECTION",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SERVER_ERROR",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "AddCommand",
    "CliError",
    "Subcommands",
    "build_parser",
    "emulator_http_port",
    "main",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_SERVER_ERROR = 2
EXIT_CONNECTION = 3
EXIT_TIMEOUT = 4
EXIT_USAGE = 64
EXIT_INTERRUPTED = 130

DEFAULT_URL = "ws://localhost:3001"
DEFAULT_KEYS_DIR = ".streamer"
DEFAULT_SUB = "dev-user"
DEFAULT_TENANT = "dev-tenant"
EMULATOR_HTTP_PORT = 3002


def emulator_http_port(ws_port: int | None) -> int:
    """The emulator's HTTP port for a WebSocket port: the next one (3001 → 3002).

    `streamer-emulator --port N` without `--http-port` serves HTTP on N + 1, so
    the CLI finds the dev-token endpoint from the `--url` alone. None (a URL
    without a port) is the default 3002; port 0 (pick a free one) stays 0.
    """
    if ws_port is None:
        return EMULATOR_HTTP_PORT
    if ws_port == 0:
        return 0
    return ws_port + 1 if ws_port < 65535 else 0


class CliError(Exception):
    """A failure to report on stderr, with its exit code.

    Args:
        message: what is printed, as is.
        exit_code: what the process exits with.
    """

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class _Parser(argparse.ArgumentParser):
    """argparse that exits 64 on bad usage, so exit code 2 stays "the server said no"."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


Subcommands: TypeAlias = "argparse._SubParsersAction[_Parser]"
"""What `add_subparsers()` returns; each subcommand adds itself to it."""
AddCommand: TypeAlias = Callable[[Subcommands], None]
"""Adds one subcommand (its parser, and `handler=` a function of the args to an exit code)."""


def build_parser(extra: Sequence[AddCommand] = ()) -> argparse.ArgumentParser:
    """The argument parser of `streamer`: the core's subcommands, then `extra` ones.

    Args:
        extra: subcommands from outside the core (the AWS-bound ones, see
            `adapters.commands`), added after `CORE_COMMANDS`.
    """
    parser = _Parser(
        prog="streamer",
        description="Talk to a Streamer WebSocket API and manage its resources.",
        epilog="Exit codes: 0 ok, 1 local failure, 2 server error, 3 connection failure, "
        "4 timeout, 64 usage.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the client does")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (*CORE_COMMANDS, *extra):
        add(commands)
    return parser


def _add_token(commands: Subcommands) -> None:
    """`streamer token`: mint a JWT."""
    token = commands.add_parser(
        "token",
        help="mint a JWT (the dev key by default)",
        description="Mint an RS256 JWT with the dev key in .streamer/ (made on first use) "
        "or the private key given; print it on stdout.",
    )
    _add_key_options(token)
    _add_identity_options(token)
    token.add_argument("--ttl", type=float, default=3600, help="seconds until it expires (3600)")
    token.add_argument(
        "--permissions",
        action="append",
        default=[],
        metavar="LIST",
        help="comma-separated permissions; may be repeated",
    )
    token.add_argument("--issuer", help="the `iss` claim (for JWT_ISSUER)")
    token.set_defaults(handler=_cmd_token)


def _add_send(commands: Subcommands) -> None:
    """`streamer send ACTION`: run an action, print its result."""
    send = commands.add_parser(
        "send",
        help="run an action and print its result",
        description="Send one action. A sync action prints its JSON result; an async one "
        "shows a live progress bar on stderr, then prints the result on stdout.",
    )
    send.add_argument("action", help="the action's name, e.g. echo or generate_report")
    send.add_argument(
        "--payload",
        default="{}",
        metavar="JSON|@FILE",
        help="the payload: a JSON object, @path to read one from a file, or @- for stdin",
    )
    send.add_argument("--id", dest="request_id", help="the request id (default: a random one)")
    _add_connection_options(send)
    send.add_argument(
        "--timeout", type=float, default=900.0, help="seconds to wait for the result (900)"
    )
    send.add_argument(
        "--json", action="store_true", help="print every server message as one JSON line"
    )
    send.set_defaults(handler=_cmd_send)


def _add_status(commands: Subcommands) -> None:
    """`streamer status ID`: a request's stored state."""
    status = commands.add_parser(
        "status",
        help="show the stored state of an async request",
        description="Print the stored state of an async request as JSON. With --follow, "
        "subscribe and wait for it to finish, then print its result.",
    )
    status.add_argument("request_id", metavar="ID")
    status.add_argument("--follow", action="store_true", help="wait for the result")
    _add_connection_options(status)
    status.add_argument("--timeout", type=float, default=900.0, help="seconds to wait (900)")
    status.set_defaults(handler=_cmd_status)


def _add_cancel(commands: Subcommands) -> None:
    """`streamer cancel ID`."""
    cancel = commands.add_parser(
        "cancel",
        help="cancel an async request",
        description="Cancel a pending or running async request and print the server's answer.",
    )
    cancel.add_argument("request_id", metavar="ID")
    _add_connection_options(cancel)
    cancel.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (30)")
    cancel.set_defaults(handler=_cmd_cancel)


def _add_listen(commands: Subcommands) -> None:
    """`streamer listen`: print the notifications pushed to this connection."""
    listen = commands.add_parser(
        "listen",
        help="print the notifications pushed to this connection",
        description="Connect and print every notification (server push) as one JSON line "
        "on stdout as it comes, until Ctrl-C or --count. The connection id goes to stderr "
        "(for `streamer push --connection`).",
    )
    listen.add_argument("--topic", help="only notifications of this topic")
    listen.add_argument("--count", type=int, metavar="N", help="exit after N notifications")
    _add_connection_options(listen)
    listen.set_defaults(handler=_cmd_listen)


def _add_asyncapi(commands: Subcommands) -> None:
    """`streamer asyncapi`: print the app's AsyncAPI 3.0 document."""
    asyncapi = commands.add_parser(
        "asyncapi",
        help="print the app's AsyncAPI 3.0 document",
        description="Print the AsyncAPI 3.0 document of the app: the WebSocket server and "
        "its auth, every action with its payload and result schemas, the built-ins, every "
        "server message and the error codes. The emulator serves the same at /asyncapi.json.",
    )
    _add_app_option(asyncapi)
    asyncapi.add_argument(
        "--url",
        default=DEFAULT_URL,
        help=f"the WebSocket URL of the document's local server ({DEFAULT_URL})",
    )
    asyncapi.add_argument("--out", type=Path, help="write to this file instead of stdout")
    asyncapi.set_defaults(handler=_cmd_asyncapi)


def _add_codegen(commands: Subcommands) -> None:
    """`streamer codegen typescript`: the app's action types for @streamer/client."""
    codegen = commands.add_parser(
        "codegen",
        help="generate a typed client from the app's actions",
        description="Generate the types of the app's actions for a client.",
    )
    languages = codegen.add_subparsers(dest="language", required=True, metavar="LANGUAGE")
    typescript = languages.add_parser(
        "typescript",
        help="the Actions map for @streamer/client",
        description="Write the app's action names with their payload and result types "
        "(from the AsyncAPI schemas, through json-schema-to-typescript) for "
        "`new StreamerClient<Actions>(url, { token })`. Needs node and `npm ci` in "
        "clients/typescript.",
    )
    _add_app_option(typescript)
    typescript.add_argument("--out", type=Path, required=True, help="the .ts file to write")
    typescript.add_argument(
        "--ts-client",
        type=Path,
        metavar="DIR",
        help="the clients/typescript folder (env STREAMER_TS_CLIENT_DIR; the checkout's)",
    )
    typescript.set_defaults(handler=_cmd_codegen_typescript)


CORE_COMMANDS: tuple[AddCommand, ...] = (
    _add_token,
    _add_send,
    _add_status,
    _add_cancel,
    _add_listen,
    _add_asyncapi,
    _add_codegen,
)
"""The subcommands that need no AWS library, in `--help` order: add a new one here."""


def _add_app_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--app",
        metavar="MODULE:ATTR",
        help="the app as module:attribute (env STREAMER_APP; streamer.demo:app)",
    )


def _add_key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--private-key", type=Path, metavar="FILE", help="an RSA private key PEM to sign with"
    )
    parser.add_argument(
        "--keys-dir",
        type=Path,
        default=Path(DEFAULT_KEYS_DIR),
        help=f"where the dev key pair lives ({DEFAULT_KEYS_DIR})",
    )


def _add_identity_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sub", default=DEFAULT_SUB, help=f"the user id ({DEFAULT_SUB})")
    parser.add_argument(
        "--tenant", default=DEFAULT_TENANT, help=f"the tenant id ({DEFAULT_TENANT})"
    )


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("STREAMER_URL") or DEFAULT_URL,
        help=f"the WebSocket API (STREAMER_URL, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token",
        help="the JWT (default: STREAMER_TOKEN, else a dev token from .streamer/ keys, "
        "else the emulator's /api/dev-token on the --url host, port + 1)",
    )
    parser.add_argument(
        "--keys-dir",
        type=Path,
        default=Path(DEFAULT_KEYS_DIR),
        help=f"the dev keys for a default token ({DEFAULT_KEYS_DIR})",
    )
    _add_identity_options(parser)


def main(argv: Sequence[str] | None = None, *, extra: Sequence[AddCommand] = ()) -> int:
    """Run `streamer` with `argv` (default: the process's); returns the exit code.

    Args:
        argv: the arguments after the program name.
        extra: subcommands beyond the core's (see `build_parser`).
    """
    parser = build_parser(extra)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="streamer: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.handler(args)
    except CliError as exc:
        print(exc.message, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("streamer: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


# -- token -----------------------------------------------------------------------------------


def _cmd_token(args: argparse.Namespace) -> int:
    from streamer.tokens import mint_token

    permissions = [p.strip() for group in args.permissions for p in group.split(",") if p.strip()]
    try:
        token = mint_token(
            _private_key(args),
            sub=args.sub,
            tenant_id=args.tenant,
            ttl_s=args.ttl,
            permissions=permissions,
            issuer=args.issuer,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(token)
    return EXIT_OK


def _private_key(args: argparse.Namespace) -> str:
    from streamer.tokens import load_or_create_dev_keys

    if args.private_key is not None:
        try:
            return str(args.private_key.read_text(encoding="ascii"))
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read {args.private_key}: {exc}") from None
    try:
        return load_or_create_dev_keys(args.keys_dir).private_pem
    except (OSError, ValueError) as exc:
        raise CliError(f"dev keys: {exc}") from None


def _default_token(args: argparse.Namespace) -> str:
    """--token, else STREAMER_TOKEN, else a dev token, so `streamer send echo` just works."""
    if args.token:
        return str(args.token)
    if os.environ.get("STREAMER_TOKEN"):
        return os.environ["STREAMER_TOKEN"]
    from streamer.tokens import DEV_PRIVATE_KEY_FILE, load_or_create_dev_keys, mint_token

    if (args.keys_dir / DEV_PRIVATE_KEY_FILE).exists():
        try:
            keys = load_or_create_dev_keys(args.keys_dir)
        except (OSError, ValueError) as exc:
            raise CliError(f"dev keys: {exc}") from None
        return mint_token(keys.private_pem, sub=args.sub, tenant_id=args.tenant)
    token = _emulator_dev_token(args.url, sub=args.sub, tenant=args.tenant)
    if token is None:
        raise CliError(
            f"no token: pass --token, set STREAMER_TOKEN, or run the emulator here "
            f"(it keeps dev keys in {args.keys_dir}/)"
        )
    return token


def _emulator_dev_token(ws_url: str, *, sub: str, tenant: str) -> str | None:
    """Ask a local emulator's HTTP side for a dev token; None when it has none."""
    parts = urlsplit(ws_url)
    if parts.scheme != "ws" or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    try:
        ws_port = parts.port
    except ValueError:
        return None
    query = urlencode({"sub": sub, "tenant": tenant})
    http_port = emulator_http_port(ws_port)
    url = urlunsplit(("http", f"{host}:{http_port}", "/api/dev-token", query, ""))
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            body = response.read().decode("utf-8")
    except (OSError, urllib.error.URLError, UnicodeDecodeError):
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.strip() or None
    token = parsed.get("token") if isinstance(parsed, dict) else parsed
    return token if isinstance(token, str) and token else None


# -- send, status, cancel --------------------------------------------------------------------


def _cmd_send(args: argparse.Namespace) -> int:
    payload = _load_payload(args.payload)
    token = _default_token(args)
    return asyncio.run(_send(args, payload, token))


async def _send(args: argparse.Namespace, payload: dict[str, Any], token: str) -> int:
    from streamer.client import StreamerClient
    from streamer.protocol import Acknowledgment, ServerMessage, encode

    bar = _ProgressBar(sys.stderr)

    def tap(message: ServerMessage) -> None:
        if args.json:
            print(encode(message), flush=True)
        elif isinstance(message, Acknowledgment):
            bar.note(f"request {message.request_id} {message.status}")

    client = StreamerClient(args.url, token=token, on_message=tap, max_reconnect_attempts=5)
    with _reporting_errors(bar):
        async with client:
            result = await client.request(
                args.action,
                payload,
                on_progress=None if args.json else bar.update,
                timeout=args.timeout,
                request_id=args.request_id,
            )
    bar.close()
    if not args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    return asyncio.run(_status(args, _default_token(args)))


async def _status(args: argparse.Namespace, token: str) -> int:
    from streamer.client import StreamerClient

    bar = _ProgressBar(sys.stderr)
    with _reporting_errors(bar):
        async with StreamerClient(args.url, token=token, max_reconnect_attempts=5) as client:
            if args.follow:
                result = await client.follow(
                    args.request_id, on_progress=bar.update, timeout=args.timeout
                )
                bar.close()
                print(json.dumps(result, indent=2, ensure_ascii=False))
            else:
                snapshot = await client.status(args.request_id, timeout=args.timeout)
                print(json.dumps(dict(snapshot.raw), indent=2, ensure_ascii=False))
    return EXIT_OK


def _cmd_cancel(args: argparse.Namespace) -> int:
    return asyncio.run(_cancel(args, _default_token(args)))


async def _cancel(args: argparse.Namespace, token: str) -> int:
    from streamer.client import StreamerClient

    with _reporting_errors(_ProgressBar(sys.stderr)):
        async with StreamerClient(args.url, token=token, reconnect=False) as client:
            snapshot = await client.cancel(args.request_id, timeout=args.timeout)
    print(json.dumps(dict(snapshot.raw), indent=2, ensure_ascii=False))
    return EXIT_OK


def _cmd_listen(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise CliError("--count must be at least 1", EXIT_USAGE)
    return asyncio.run(_listen(args, _default_token(args)))


async def _listen(args: argparse.Namespace, token: str) -> int:
    from streamer.client import StreamerClient
    from streamer.protocol import encode

    with _reporting_errors(_ProgressBar(sys.stderr)):
        async with StreamerClient(args.url, token=token) as client:
            inbox = client.notifications(topic=args.topic)
            connection_id = await client.ping()
            print(f"listening on connection {connection_id}; Ctrl-C stops", file=sys.stderr)
            sys.stderr.flush()
            received = 0
            async for note in inbox:
                print(encode(note), flush=True)
                received += 1
                if args.count is not None and received >= args.count:
                    break
    return EXIT_OK


# -- asyncapi and codegen --------------------------------------------------------------------


def _app_document(args: argparse.Namespace, url: str = DEFAULT_URL) -> dict[str, Any]:
    from streamer.app import load_app
    from streamer.asyncapi import asyncapi_document
    from streamer.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
        app = load_app(args.app or settings.app)
    except (SettingsError, ValueError) as exc:
        raise CliError(f"streamer: {exc}") from None
    return asyncapi_document(app, async_threshold_s=settings.async_threshold_s, server_url=url)


def _cmd_asyncapi(args: argparse.Namespace) -> int:
    text = json.dumps(_app_document(args, args.url), indent=2, ensure_ascii=False) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        _write(args.out, text)
    return EXIT_OK


def _cmd_codegen_typescript(args: argparse.Namespace) -> int:
    from streamer.codegen import CodegenError, find_ts_client_dir, typescript_module

    document = _app_document(args)
    try:
        source = typescript_module(document, ts_client_dir=find_ts_client_dir(args.ts_client))
    except CodegenError as exc:
        raise CliError(f"streamer: {exc}") from None
    _write(args.out, source)
    print(f"wrote {args.out}", file=sys.stderr)
    return EXIT_OK


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"streamer: cannot write {path}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _reporting_errors(bar: _ProgressBar) -> Iterator[None]:
    """Turn client errors into `CliError`s: `CODE: message` and the exit code that fits."""
    from streamer.client import RequestTimeout, StreamerConnectionError
    from streamer.errors import StreamerError

    try:
        yield
    except StreamerConnectionError as exc:
        bar.close()
        label = exc.code.value if exc.status_code else "CONNECTION_FAILED"
        raise CliError(f"{label}: {exc.message}", EXIT_CONNECTION) from None
    except RequestTimeout as exc:
        bar.close()
        raise CliError(f"{exc.code.value}: {exc.message}", EXIT_TIMEOUT) from None
    except StreamerError as exc:
        bar.close()
        text = f"{exc.code.value}: {exc.message}"
        if exc.details:
            text += "\n" + json.dumps(exc.details, indent=2, ensure_ascii=False, default=str)
        raise CliError(text, EXIT_SERVER_ERROR) from None


def load_json_argument(text: str, *, flag: str, what: str) -> Any:
    """The JSON value of a `--payload`/`--data` argument: the text itself, or
    `@FILE` (`@` or `@-` for standard input).

    Raises:
        CliError: EXIT_USAGE when the file cannot be read or the text is not JSON.
    """
    source = flag
    if text.startswith("@"):
        path = text[1:]
        source = path or "-"
        try:
            text = sys.stdin.read() if path in ("", "-") else Path(path).read_text("utf-8")
        except OSError as exc:
            raise CliError(f"cannot read the {what}: {exc}", EXIT_USAGE) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CliError(f"{source} is not JSON: {exc}", EXIT_USAGE) from None


def _load_payload(text: str) -> dict[str, Any]:
    payload = load_json_argument(text, flag="--payload", what="payload")
    if not isinstance(payload, dict):
        source = "--payload" if not text.startswith("@") else (text[1:] or "-")
        raise CliError(f"{source} must be a JSON object", EXIT_USAGE)
    return payload


def _columns(stream: IO[str]) -> int:
    """The width of the terminal `stream` draws on (not stdout's: piped output
    must not change the bar); `COLUMNS` overrides it, 80 when unknown."""
    override = os.environ.get("COLUMNS", "")
    if override.isdigit() and int(override) > 0:
        return int(override)
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        return 80


class _ProgressBar:
    """A one-line progress bar on a terminal; one line per update otherwise.

    Args:
        stream: where it draws (stderr).
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._is_tty = stream.isatty()
        self._drawn = False
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        self._glyphs = ("█", "░") if encoding == "utf8" else ("#", ".")

    def update(self, update: Any) -> None:
        """Draw a `ProgressUpdate`."""
        percentage = max(0.0, min(100.0, float(update.percentage)))
        message = str(update.message or "")
        if not self._is_tty:
            self._stream.write(f"progress {percentage:5.1f}% {message}\n".rstrip() + "\n")
            self._stream.flush()
            return
        columns = _columns(self._stream)
        width = max(10, min(40, columns // 3))
        filled = round(width * percentage / 100)
        full, empty = self._glyphs
        line = f"{full * filled}{empty * (width - filled)} {percentage:5.1f}%  {message}"
        self._stream.write("\r\x1b[2K" + line[: columns - 1])
        self._stream.flush()
        self._drawn = True

    def note(self, text: str) -> None:
        """A line of its own (above the bar)."""
        if self._drawn:
            self._stream.write("\r\x1b[2K")
            self._drawn = False
        self._stream.write(text + "\n")
        self._stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
