"""How big each scenario is in `--quick` and `--full` runs, and the shared set-up."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from bench.metrics import Results
from bench.procs import CACHE_DIR, ServerProcess, start_emulator
from streamer.settings import Settings, SettingsError
from streamer.tokens import generate_rsa_key_pair

__all__ = ["FULL", "QUICK", "Bench", "Sizes"]

BENCH_APP = "bench.apps:app"
MAX_CONNECTIONS_PER_USER = 100
"""Above what any scenario opens per user (idle connections: `connections_per_user`)."""


@dataclass(frozen=True, slots=True)
class Sizes:
    """Scenario sizes.

    Args:
        rtt_rounds, rtt_count, rtt_warmup: alternating rounds of sequential round trips.
        async_rounds, async_count: rounds of sequential `echo_async` requests.
        in_flight: requests in flight at once for the async growth curve.
        in_flight_rounds: rounds per curve point.
        in_flight_connections: at most this many connections carry them.
        progress_requests, progress_reports, progress_rounds: the progress burst.
        idle_levels: idle connections held for the sync growth curve (the last is
            `connections_held`'s target).
        idle_rtt_rounds, idle_rtt_count: round trips measured at each level.
        connections_per_user: idle connections opened with one user's token.
        connect_concurrency: handshakes the holder keeps in flight.
        connect_budget_s: time allowed for opening idle connections in all.
        push_levels: connections of one tenant a notification is pushed to.
        cold_rounds: fresh processes per side for the Lambda cold start.
        bundle_cold_rounds: fresh processes for the cold start from the unpacked bundle.
        zip_from_cache: reuse a bundle under `bench/.cache/` when one is there.
    """

    rtt_rounds: int
    rtt_count: int
    rtt_warmup: int
    async_rounds: int
    async_count: int
    in_flight: tuple[int, ...]
    in_flight_rounds: int
    in_flight_connections: int
    progress_requests: int
    progress_reports: int
    progress_rounds: int
    idle_levels: tuple[int, ...]
    idle_rtt_rounds: int
    idle_rtt_count: int
    connections_per_user: int
    connect_concurrency: int
    connect_budget_s: float
    push_levels: tuple[int, ...]
    cold_rounds: int
    bundle_cold_rounds: int
    zip_from_cache: bool


QUICK = Sizes(
    rtt_rounds=4,
    rtt_count=350,
    rtt_warmup=50,
    async_rounds=3,
    async_count=10,
    in_flight=(1, 10, 100, 500),
    in_flight_rounds=1,
    in_flight_connections=20,
    progress_requests=50,
    progress_reports=4,
    progress_rounds=1,
    idle_levels=(0, 100, 200, 400),
    idle_rtt_rounds=2,
    idle_rtt_count=200,
    connections_per_user=10,
    connect_concurrency=16,
    connect_budget_s=20,
    push_levels=(100, 400),
    cold_rounds=2,
    bundle_cold_rounds=1,
    zip_from_cache=True,
)

FULL = Sizes(
    rtt_rounds=8,
    rtt_count=2000,
    rtt_warmup=200,
    async_rounds=5,
    async_count=40,
    in_flight=(1, 10, 100, 500, 1000),
    in_flight_rounds=3,
    in_flight_connections=20,
    progress_requests=50,
    progress_reports=50,
    progress_rounds=2,
    idle_levels=(0, 1000, 5000, 10_000),
    idle_rtt_rounds=3,
    idle_rtt_count=1000,
    connections_per_user=10,
    connect_concurrency=16,
    connect_budget_s=150,
    push_levels=(1000, 10_000),
    cold_rounds=7,
    bundle_cold_rounds=5,
    zip_from_cache=False,
)


def _rate_limit_off() -> str:
    """`RATE_LIMIT_PER_MINUTE` that disables the limit: 0 where settings accept it."""
    try:
        Settings.from_env({"RATE_LIMIT_PER_MINUTE": "0"})
    except SettingsError:
        return str(10**9)
    return "0"


@dataclass
class Bench:
    """What every scenario shares: sizes, results, the key pair, tokens, the emulator set-up.

    Args:
        mode: "quick" or "full".
        sizes: the scenario sizes.
        results: where metrics go.
        profile_dir: when set, emulators run under pyinstrument and write profiles here.
    """

    mode: str
    sizes: Sizes
    results: Results
    profile_dir: Path | None = None
    private_pem: str = ""
    public_pem: str = ""
    _tokens: dict[str, str] = field(default_factory=dict)
    _signing_key: Any = None

    def __post_init__(self) -> None:
        self.private_pem, self.public_pem = generate_rsa_key_pair()
        # Loaded once: `mint_token` parses (and validates) the PEM on every call,
        # ~50 ms each, too slow for the thousand tokens of the idle connections.
        self._signing_key = serialization.load_pem_private_key(
            self.private_pem.encode(), password=None
        )

    def token(self, user: str, tenant: str = "bench") -> str:
        """A token for `user` (minted once), with the claims `streamer token` sets."""
        if user not in self._tokens:
            now = int(time.time())
            claims = {
                "sub": user,
                "tenant_id": tenant,
                "permissions": [],
                "iat": now,
                "nbf": now,
                "exp": now + 4 * 3600,
            }
            self._tokens[user] = jwt.encode(claims, self._signing_key, algorithm="RS256")
        return self._tokens[user]

    def holder_tokens(self, connections: int) -> list[str]:
        """Tokens for `connections` idle connections, `connections_per_user` each."""
        users = max(1, math.ceil(connections / self.sizes.connections_per_user))
        return [self.token(f"idle-{i}") for i in range(users)]

    def emulator_env(self) -> dict[str, str]:
        """Load settings: throttling and rate limit off, enough connections per user."""
        return {
            "JWT_PUBLIC_KEY": self.public_pem,
            "PROGRESS_MAX_PER_SECOND": "0",
            "RATE_LIMIT_PER_MINUTE": _rate_limit_off(),
            "MAX_CONNECTIONS_PER_USER": str(MAX_CONNECTIONS_PER_USER),
        }

    def start_emulator(self, name: str, extra_args: Sequence[str] = ()) -> ServerProcess:
        """A fresh emulator with the bench app, maybe under the profiler: empty tables
        and its own state folder (`--ephemeral`, as a test suite runs it), so no run
        restores what an earlier one left."""
        profile = None if self.profile_dir is None else self.profile_dir / f"profile-{name}.txt"
        state_dir = CACHE_DIR / "state" / name
        shutil.rmtree(state_dir, ignore_errors=True)
        return start_emulator(
            app=BENCH_APP,
            env=self.emulator_env(),
            name=name,
            extra_args=["--ephemeral", "--state-dir", str(state_dir), *extra_args],
            profile_to=profile,
        )
