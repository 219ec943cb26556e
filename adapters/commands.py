"""The installed `streamer` command: the core's subcommands plus those that need AWS.

`streamer.cli` holds the core's subcommands (`token`, `send`, `status`,
`cancel`, `asyncapi`, `codegen`); this module adds `tables` and `lambda build`, which reach DynamoDB
or build the bundle, and is what `[project.scripts] streamer` runs. A new
AWS-bound subcommand is one `_add_*` function listed in `AWS_COMMANDS`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from streamer import cli
from streamer.cli import EXIT_OK, AddCommand, CliError, Subcommands
from streamer.settings import Settings, SettingsError

__all__ = ["AWS_COMMANDS", "main"]


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
    build.add_argument("--python", dest="python_version", default="3.12", help="(3.12)")
    build.add_argument(
        "--compile",
        dest="compile_bytecode",
        action="store_true",
        help="ship .pyc files (faster cold start, ~4.5 MB more; needs that Python on PATH)",
    )
    build.set_defaults(handler=_cmd_lambda_build)


AWS_COMMANDS: tuple[AddCommand, ...] = (_add_tables, _add_lambda)
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
    from botocore.exceptions import BotoCoreError, ClientError

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
    except (BotoCoreError, ClientError) as exc:
        raise CliError(f"DynamoDB: {exc}") from None
    return EXIT_OK


def _cmd_lambda_build(args: argparse.Namespace) -> int:
    from adapters.aws_lambda.bundle import build_bundle

    try:
        path = build_bundle(
            args.output,
            arch=args.arch,
            python_version=args.python_version,
            compile_bytecode=args.compile_bytecode,
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise CliError(f"lambda build: {exc}") from None
    print(path)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
