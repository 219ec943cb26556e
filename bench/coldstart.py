"""One Lambda cold start in this fresh process (`python bench/coldstart.py SIDE`);
prints `{"init_ms": ..., "cpu_ms": ...}`: wall and CPU time (all threads) from
this module's first line to the first answer.

`streamer`: import the router entrypoint and run its first invocation (settings,
app, the DynamoDB and management-API clients, the services, then one `echo`
frame from a registered connection: a `GetItem` and a post). `boto3`: a bare
handler that imports boto3, builds a DynamoDB client and runs one `GetItem`.
Both talk to the endpoints in the environment (`DYNAMODB_ENDPOINT_URL`,
`WEBSOCKET_ENDPOINT`). The interpreter's own start-up, the same for both, is
left out.

`--path DIR` puts DIR first on `sys.path`: with an unpacked bundle and
`python3.12 -I -S -B` this is the function as Lambda runs it (its own wheels and
bytecode, no site-packages, nothing written). Only the standard library is
imported here before the side runs.
"""

import time

_STARTED = time.perf_counter()
_CPU_STARTED = time.process_time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402


class _Context:
    """The parts of Lambda's context object the handlers read."""

    aws_request_id = "00000000-0000-4000-8000-000000000001"
    function_name = "streamer-router-bench"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def message_event(connection_id: str) -> dict[str, Any]:
    """An API Gateway `$default` event carrying one sync `echo` frame."""
    return {
        "requestContext": {
            "routeKey": "$default",
            "eventType": "MESSAGE",
            "messageId": "bench-message",
            "requestId": "bench-request",
            "stage": "prod",
            "connectionId": connection_id,
            "connectedAt": 1_707_502_303_419,
            "requestTimeEpoch": 1_707_502_307_421,
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "apiId": "abc123",
            "identity": {"sourceIp": "192.0.2.1"},
        },
        "body": json.dumps({"id": "bench-1", "action": "echo", "payload": {"n": 1}}),
        "isBase64Encoded": False,
    }


def streamer_router(connection_id: str) -> None:
    from adapters.aws_lambda.router import handler

    answer = handler(message_event(connection_id), _Context())
    if answer != {"statusCode": 200}:
        raise SystemExit(f"router answered {answer}")


def bare_boto3(connection_id: str) -> None:
    import boto3

    client = boto3.client(
        "dynamodb",
        region_name=os.environ["AWS_REGION"],
        endpoint_url=os.environ.get("DYNAMODB_ENDPOINT_URL") or None,
    )
    item = client.get_item(
        TableName=os.environ["CONNECTIONS_TABLE"], Key={"ConnectionID": {"S": connection_id}}
    )
    if "Item" not in item:
        raise SystemExit(f"no connection {connection_id}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("side", choices=("streamer", "boto3"))
    parser.add_argument("--connection", required=True, help="a registered connection id")
    parser.add_argument("--path", help="put this folder first on sys.path")
    args = parser.parse_args()
    if args.path:
        sys.path.insert(0, args.path)
    if args.side == "streamer":
        streamer_router(args.connection)
    else:
        bare_boto3(args.connection)
    init_ms = (time.perf_counter() - _STARTED) * 1000
    cpu_ms = (time.process_time() - _CPU_STARTED) * 1000
    print(json.dumps({"init_ms": init_ms, "cpu_ms": cpu_ms}), flush=True)


if __name__ == "__main__":
    main()
