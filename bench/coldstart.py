"""One Lambda cold start in this fresh process (`python -m bench.coldstart SIDE`);
prints `{"init_ms": ...}`.

`streamer`: import the router entrypoint and build its runtime (settings, app,
the DynamoDB and management-API clients, the services), as its first
invocation does. `boto3`: a bare handler that imports boto3 and builds the same
two clients. The clock starts at this module's first line, so the
interpreter's own start-up, the same for both, is left out.

`--path DIR` puts DIR first on `sys.path`: with an unpacked bundle and
`python3.12 -I -S -B` this is the router as Lambda runs it (its own wheels, no
site-packages, no `.pyc` to reuse).
"""

import time

_STARTED = time.perf_counter()

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402


def streamer_router(entry: str, function: str) -> None:
    importlib.import_module(entry)
    from adapters.aws_lambda.runtime import invoke

    async def nothing(runtime: Any) -> None:
        return None

    invoke(function, None, nothing)  # type: ignore[arg-type]


def bare_boto3() -> None:
    import boto3

    session = boto3.session.Session()
    region = os.environ["AWS_REGION"]
    session.client("dynamodb", region_name=region)
    session.client(
        "apigatewaymanagementapi", region_name=region, endpoint_url=os.environ["WEBSOCKET_ENDPOINT"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("side", choices=("streamer", "boto3"))
    parser.add_argument("--entry", default="adapters.aws_lambda.router")
    parser.add_argument("--function", default="router")
    parser.add_argument("--path", help="put this folder first on sys.path")
    args = parser.parse_args()
    if args.path:
        sys.path.insert(0, args.path)
    if args.side == "streamer":
        streamer_router(args.entry, args.function)
    else:
        bare_boto3()
    print(json.dumps({"init_ms": (time.perf_counter() - _STARTED) * 1000}), flush=True)


if __name__ == "__main__":
    main()
