"""Per-message CPU of the core's hot path, alone (`python -m bench.hotpath`).

Drives `Router.route` with the `echo` frame over the in-memory fakes, so no
socket and no database is involved: what is left is the core's own cost per
message, with JSON logging at INFO (as the emulator runs) and with it off.
`--profile` adds a cProfile of the INFO case. Evidence for the sync-path
findings in `docs/performance.md`; not part of the timed run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import pstats
import time
from datetime import UTC, datetime

from bench.apps import app
from bench.scenarios.sync_rtt import ECHO_FRAME
from streamer.auth import TokenVerifier
from streamer.clock import SystemClock
from streamer.logs import configure_logging
from streamer.models import Connection, ConnectionId, TenantId, UserId
from streamer.router import Router
from streamer.services import build_services
from streamer.settings import Settings
from streamer.testing import (
    InMemoryConnectionStore,
    InMemoryRequestStore,
    InMemorySubscriptionStore,
    RecordingNotifier,
)
from streamer.tokens import generate_rsa_key_pair


def _router() -> Router:
    _, public_pem = generate_rsa_key_pair()
    clock = SystemClock()
    settings = Settings(jwt_public_key=public_pem, rate_limit_per_minute=10**9)
    services = build_services(
        app=app,
        settings=settings,
        connections=InMemoryConnectionStore(),
        requests=InMemoryRequestStore(),
        subscriptions=InMemorySubscriptionStore(),
        notifier=RecordingNotifier(),
        clock=clock,
        verifier=TokenVerifier(public_pem, clock=clock),
    )
    return services.router


_CONNECTION = Connection(
    connection_id=ConnectionId("bench-conn"),
    user_id=UserId("bench"),
    tenant_id=TenantId("bench"),
    endpoint="http://127.0.0.1",
    connected_at=datetime.now(UTC),
    last_ping=datetime.now(UTC),
    expires_at=2**31,
)


async def _per_message_us(router: Router, count: int) -> float:
    for _ in range(200):
        await router.route(_CONNECTION, ECHO_FRAME)
    started = time.perf_counter()
    for _ in range(count):
        await router.route(_CONNECTION, ECHO_FRAME)
    return (time.perf_counter() - started) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    router = _router()
    with open(os.devnull, "w") as sink:  # the emulator writes its lines to a file or a pipe
        configure_logging("WARNING", stream=sink)
        quiet_us = asyncio.run(_per_message_us(router, args.count))
        logging.getLogger().setLevel(logging.INFO)
        info_us = asyncio.run(_per_message_us(router, args.count))
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            asyncio.run(_per_message_us(router, args.count))
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    print(f"Router.route(echo): {info_us:.1f} us/message with INFO logs, {quiet_us:.1f} without")


if __name__ == "__main__":
    main()
