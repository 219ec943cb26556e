"""The client's own CPU per DynamoDB call, aioboto3 against `AwsJsonSession`
(`python -m bench.client_calls`).

The server (`python -m adapters.moto_server`) runs in a process of its own, so
this process's CPU time (`time.process_time`) is the client's alone: building,
signing, sending, reading and parsing. Calls are sequential, the emulator's
shapes: a PutItem of a request item, a conditional UpdateItem returning
ALL_NEW, a GetItem, and a GetRecords of `--records` stream records. Evidence
for `docs/design-notes.md`; not part of `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from adapters.aws import client_kwargs, get_session
from adapters.awsjson import AwsJsonSession
from adapters.dynamodb.codec import to_item
from adapters.dynamodb.items import request_attributes
from adapters.dynamodb.tables import create_tables
from bench.moto_calls import _request, _start_server, bench_settings, first_shard_iterator
from streamer.settings import Settings

SESSIONS: dict[str, Callable[[], Any]] = {"aioboto3": get_session, "awsjson": AwsJsonSession}


async def _per_call_us(calls: int, call: Callable[[int], Awaitable[object]]) -> float:
    for n in range(min(100, calls)):
        await call(n)
    started = time.process_time()
    for n in range(calls):
        await call(n)
    return 1e6 * (time.process_time() - started) / calls


async def _measure(kind: str, settings: Settings, args: argparse.Namespace) -> dict[str, float]:
    session = SESSIONS[kind]()
    table = settings.requests_table
    figures: dict[str, float] = {}
    async with (
        session.client("dynamodb", **client_kwargs(settings)) as dynamodb,
        session.client("dynamodbstreams", **client_kwargs(settings)) as streams,
    ):
        base = 1_000_000 * (1 + list(SESSIONS).index(kind))

        async def put(n: int) -> object:
            item = to_item(request_attributes(_request(base + n)))
            return await dynamodb.put_item(TableName=table, Item=item)

        async def update(n: int) -> object:
            return await dynamodb.update_item(
                TableName=table,
                Key={"RequestID": {"S": _request(base + n).key}},
                UpdateExpression="SET #s = :s, #u = :u ADD #a :one",
                ConditionExpression="attribute_exists(RequestID)",
                ExpressionAttributeNames={"#s": "Status", "#u": "UpdatedAt", "#a": "Attempt"},
                ExpressionAttributeValues={
                    ":s": {"S": "RUNNING"},
                    ":u": {"S": "2026-12-01T12:00:01.000000Z"},
                    ":one": {"N": "1"},
                },
                ReturnValues="ALL_NEW",
            )

        async def get(n: int) -> object:
            return await dynamodb.get_item(
                TableName=table,
                Key={"RequestID": {"S": _request(base + n).key}},
                ConsistentRead=True,
            )

        figures["put_item"] = await _per_call_us(args.calls, put)
        figures["update_item"] = await _per_call_us(args.calls, update)
        figures["get_item"] = await _per_call_us(args.calls, get)

        iterator = await first_shard_iterator(dynamodb, streams, table)

        async def records(_: int) -> object:
            return await streams.get_records(ShardIterator=iterator, Limit=args.records)

        figures[f"get_records_{args.records}"] = await _per_call_us(args.calls // 4, records)
    return figures


async def _run(args: argparse.Namespace) -> None:
    server = _start_server(frozenset())
    try:
        settings = bench_settings(server.http_url)
        await create_tables(settings)
        results = {kind: await _measure(kind, settings, args) for kind in args.kinds}
    finally:
        server.stop()
    operations = list(next(iter(results.values())))
    print(f"client CPU per call, µs ({args.calls} sequential calls each)")
    print(f"{'':<20}" + "".join(f"{kind:>12}" for kind in results))
    for operation in operations:
        print(f"{operation:<20}" + "".join(f"{results[k][operation]:12.0f}" for k in results))


def main() -> None:
    """Parse arguments and run once."""
    parser = argparse.ArgumentParser(prog="python -m bench.client_calls", description=__doc__)
    parser.add_argument("--calls", type=int, default=2000, help="calls per operation (2000)")
    parser.add_argument("--records", type=int, default=10, help="records per GetRecords (10)")
    parser.add_argument(
        "--kinds", nargs="+", default=list(SESSIONS), choices=list(SESSIONS), help="clients"
    )
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
