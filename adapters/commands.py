"""The installed `streamer` command: the core's subcommands plus those that need AWS.

`streamer.cli` holds the core's subcommands (`token`, `send`, `status`,
`cancel`, `listen`, `asyncapi`, `codegen`); this module adds `tables`, `lambda
build` and `push`, which reach DynamoDB and the management API or build the bundle,
and is what `[project.scripts] streamer` runs. A new AWS-bound subcommand is one
`_add_*` function listed in `AWS_COMMANDS`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamer import cli
from streamer.cli import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    AddCommand,
    CliError,
    Subcommands,
    load_json_argument,
)
from streamer.errors import StreamerError
from streamer.settings import Settings, SettingsError

__all__ = ["AWS_COMMANDS", "DEFAULT_EMULATOR_HTTP", "main"]

DEFAULT_EMULATOR_HTTP = "http://localhost:3002"
"""Where `streamer push` finds the emulator's management API by default."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run `streamer` with `argv` (default: the process's); returns the exit code."""
    return cli.main(argv, extra=AWS_COMMANDS)


# aioboto3 and the bundle builder are imported inside the handlers, so that
# `streamer send` (which runs this module too) starts quickly.


def _add_tables(commands: Subcommands) -> None:
    """`streamer tables create|delete|list`."""
    tables = commands.add_parser(
        "tables",
        help="create, delete or list the DynamoDB tables",
        description="Manage the three tables named by CONNECTIONS_TABLE, REQUESTS_TABLE and "
        "SUBSCRIPTIONS_TABLE on AWS or any endpoint (moto, DynamoDB Local).",
    )
    tables.add_argument("operation", choices=["create", "delete", "list"])
    tables.add_argument(
        "--endpoint-url",
        default=None,
        help="a DynamoDB endpoint, e.g. http://localhost:5000 (default: DYNAMODB_ENDPOINT_URL, "
        "else AWS)",
    )
    tables.set_defaults(handler=_cmd_tables)


def _add_lambda(commands: Subcommands) -> None:
    """`streamer lambda build`."""
    lambda_ = commands.add_parser(
        "lambda",
        help="build the Lambda deployment bundle",
        description="Build the zip the four Lambda functions are deployed from.",
    )
    lambda_commands = lambda_.add_subparsers(dest="lambda_command", required=True, metavar="STEP")
    build = lambda_commands.add_parser(
        "build",
        help="build the deployable zip",
        description="Build the deployable zip with dependencies for the Lambda runtime.",
    )
    build.add_argument("--output", type=Path, default=Path("dist"), help="directory (dist)")
    build.add_argument("--arch", choices=["x86_64", "arm64"], default="x86_64")
    target = build.add_mutually_exclusive_group()
    target.add_argument(
        "--python",
        dest="python_version",
        default="3.12",
        help="the Lambda runtime's Python (3.12); bytecode is compiled by a working "
        "interpreter of it found on PATH or among pyenv's versions",
    )
    target.add_argument(
        "--this-python",
        action="store_true",
        help="build for the Python running this command (its version becomes the runtime)",
    )
    build.add_argument(
        "--python-exe",
        metavar="PATH",
        help="the interpreter of that version to compile the bytecode with",
    )
    build.set_defaults(handler=_cmd_lambda_build)


def _add_push(commands: Subcommands) -> None:
    """`streamer push (--connection ID | --tenant T [--user U]) [--topic NAME] --data JSON`."""
    push = commands.add_parser(
        "push",
        help="push a notification to a connection, a user or a tenant",
        description="Send a `notification` to one connection, every connection of a user in "
        "a tenant, or every connection of a tenant, and print the summary (sent, gone, "
        "failed). Exits 1 when nothing was delivered. With WEBSOCKET_ENDPOINT set it uses "
        "the settings of the Lambda functions (CONNECTIONS_TABLE, AWS_REGION, AWS "
        "credentials); otherwise the emulator at --emulator. Best effort: a client that "
        "is not connected at that moment does not get it later.",
    )
    target = push.add_mutually_exclusive_group(required=True)
    target.add_argument("--connection", metavar="ID", help="one connection id")
    target.add_argument("--tenant", metavar="T", help="every connection of a tenant")
    push.add_argument("--user", metavar="U", help="with --tenant: only this user's connections")
    push.add_argument("--topic", metavar="NAME", help="the notification's topic")
    push.add_argument(
        "--data",
        required=True,
        metavar="JSON|@FILE",
        help="the notification's data: any JSON value, @path to read it from a file, @- stdin",
    )
    push.add_argument(
        "--emulator",
        default=DEFAULT_EMULATOR_HTTP,
        metavar="URL",
        help=f"the emulator's HTTP side when WEBSOCKET_ENDPOINT is not set "
        f"({DEFAULT_EMULATOR_HTTP})",
    )
    push.set_defaults(handler=_cmd_push)


AWS_COMMANDS: tuple[AddCommand, ...] = (_add_tables, _add_lambda, _add_push)
"""The subcommands that need AWS libraries, after the core's in `--help`: add a new one here."""


def _cmd_tables(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise CliError(str(exc)) from None
    if args.endpoint_url:
        settings = dataclasses.replace(settings, dynamodb_endpoint_url=args.endpoint_url)
    return asyncio.run(_tables(args.operation, settings))


async def _tables(operation: str, settings: Settings) -> int:
    from adapters.dynamodb import create_tables, delete_tables, list_tables

    names = [settings.connections_table, settings.requests_table, settings.subscriptions_table]
    try:
        if operation == "create":
            created = await create_tables(settings)
            for name in names:
                print(f"{name}\t{'created' if name in created else 'exists'}")
        elif operation == "delete":
            deleted = await delete_tables(settings)
            for name in names:
                print(f"{name}\t{'deleted' if name in deleted else 'missing'}")
        else:
            for name, status in (await list_tables(settings)).items():
                print(f"{name}\t{status}")
    except StreamerError as exc:
        raise CliError(f"DynamoDB: {exc.message}") from None
    return EXIT_OK


def _cmd_lambda_build(args: argparse.Namespace) -> int:
    from adapters.aws_lambda.bundle import build_bundle, running_python_version

    try:
        path = build_bundle(
            args.output,
            arch=args.arch,
            python_version=running_python_version() if args.this_python else args.python_version,
            python_exe=args.python_exe,
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise CliError(f"lambda build: {exc}") from None
    print(path)
    return EXIT_OK


def _cmd_push(args: argparse.Namespace) -> int:
    if args.user is not None and args.tenant is None:
        raise CliError("--user needs --tenant (a user id is unique within a tenant)", EXIT_USAGE)
    data = load_json_argument(args.data, flag="--data", what="data")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise CliError(str(exc)) from None
    if not settings.websocket_endpoint:
        settings = _emulator_settings(settings, args.emulator.rstrip("/"))
    return asyncio.run(_push(args, settings, data))


async def _push(args: argparse.Namespace, settings: Settings, data: Any) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from adapters.push import open_pusher
    from streamer.errors import StreamerError
    from streamer.push import PushIncomplete, PushTarget, ToConnection, ToTenant, ToUser

    target: PushTarget
    if args.connection is not None:
        target = ToConnection(args.connection)
    elif args.user is not None:
        target = ToUser(args.tenant, args.user)
    else:
        target = ToTenant(args.tenant)
    try:
        async with open_pusher(settings) as pusher:
            summary = await pusher.push(target, data, topic=args.topic)
    except PushIncomplete as exc:
        print(json.dumps(exc.summary.as_dict()))
        raise CliError(f"{exc.code.value}: {exc.message}") from None
    except StreamerError as exc:
        raise CliError(f"{exc.code.value}: {exc.message}", EXIT_USAGE) from None
    except (BotoCoreError, ClientError) as exc:
        raise CliError(f"AWS: {exc}") from None
    print(json.dumps(summary.as_dict()))
    if not summary.is_delivered:
        print("streamer: nothing was delivered", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _emulator_settings(settings: Settings, emulator: str) -> Settings:
    """The settings that reach a running emulator: its management API, and the
    DynamoDB it reports in `/health` (unless DYNAMODB_ENDPOINT_URL says otherwise)."""
    try:
        with urllib.request.urlopen(f"{emulator}/health", timeout=5) as response:
            health = json.loads(response.read().decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise CliError(
            f"no WEBSOCKET_ENDPOINT set and no emulator answers at {emulator} ({exc}); "
            "start one with `make run`, or set WEBSOCKET_ENDPOINT and CONNECTIONS_TABLE "
            "to push through AWS"
        ) from None
    endpoint = settings.dynamodb_endpoint_url
    if endpoint is None and isinstance(health, dict):
        reported = health.get("dynamodb_endpoint")
        endpoint = reported if isinstance(reported, str) and reported else None
    return dataclasses.replace(
        settings, websocket_endpoint=emulator, dynamodb_endpoint_url=endpoint
    )


if __name__ == "__main__":
    sys.exit(main())
