"""Lambda cold start: fresh processes, alternating between the router's first
invocation and a bare boto3 handler's (a DynamoDB client and one `GetItem`);
medians of each. Both talk to a moto server and a stub management API.

Two pairs. From the project's virtualenv (bytecode cached, site-packages):
`lambda_cold_*`. As Lambda runs them, `lambda_bundle_cold_*`: under an
interpreter of the bundle's Python with `-I -S -B` (no site-packages, nothing
written, as Lambda's read-only `/var/task`), the router from the unpacked zip
that `streamer lambda build` makes (its wheels and bytecode), the bare handler
from a tree standing for Lambda's own `/var/runtime`: the same boto3 and
botocore releases, installed whole (every service's data) and compiled to
bytecode. The zip is the one the `zip` scenario keeps, built here when there is
none.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.config import Bench
from bench.metrics import MetricSpec, median
from bench.procs import CACHE_DIR, HOST, REPO, python_env, start_moto
from bench.scenarios.lambda_zip import build, cached_bundle

UNPACKED = CACHE_DIR / "lambda-unpacked"
LAMBDA_RUNTIME = CACHE_DIR / "lambda-runtime-boto3"
CPU_RATIO = MetricSpec(
    "lambda_bundle_cold_cpu_ratio", "x", note="CPU time; steadier on a shared machine"
)
SCRIPT = Path(__file__).resolve().parent.parent / "coldstart.py"
CONNECTION_ID = "bench-cold-connection"

LAMBDA_ENV = {
    "CONNECTIONS_TABLE": "streamer-connections-bench",
    "REQUESTS_TABLE": "streamer-requests-bench",
    "SUBSCRIPTIONS_TABLE": "streamer-subscriptions-bench",
    "AWS_REGION": "us-east-1",
    "LOG_LEVEL": "WARNING",
    "AWS_LAMBDA_FUNCTION_NAME": "streamer-router-bench",
}
"""The router's environment as the Pulumi program deploys it (no `JWT_PUBLIC_KEY`:
only the connect function verifies tokens), and the name Lambda sets."""


class _ManagementApi(BaseHTTPRequestHandler):
    """Answers every `POST /@connections/{id}` with 200, as API Gateway does."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def _management_api() -> Iterator[str]:
    server = ThreadingHTTPServer((HOST, 0), _ManagementApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}/prod"
    finally:
        server.shutdown()
        server.server_close()


async def _register_connection(env: dict[str, str]) -> None:
    from adapters.dynamodb import create_tables, open_stores
    from streamer.models import Connection, ConnectionId, TenantId, UserId
    from streamer.settings import Settings

    settings = Settings.from_env(env)
    await create_tables(settings)
    now = datetime.now(UTC)
    async with open_stores(settings) as stores:
        await stores.connections.put(
            Connection(
                connection_id=ConnectionId(CONNECTION_ID),
                user_id=UserId("bench-user"),
                tenant_id=TenantId("bench-tenant"),
                endpoint=env["WEBSOCKET_ENDPOINT"],
                connected_at=now,
                last_ping=now,
                expires_at=int((now + timedelta(days=1)).timestamp()),
            )
        )


def _cold_ms(argv: Sequence[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU milliseconds of one fresh process's cold start."""
    done = subprocess.run(
        list(argv), cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"cold start ({' '.join(argv[-4:])}) failed:\n{done.stderr[-2000:]}")
    last = json.loads(done.stdout.strip().splitlines()[-1])
    return float(last["init_ms"]), float(last["cpu_ms"])


@dataclass(frozen=True, slots=True)
class _Pair:
    """Medians of both sides: wall and CPU milliseconds."""

    ours_ms: float
    bare_ms: float
    ours_cpu_ms: float
    bare_cpu_ms: float


def _alternate(ours: Sequence[str], bare: Sequence[str], env: dict[str, str], rounds: int) -> _Pair:
    """Medians of `rounds` fresh processes each, alternating which goes first."""
    # One unrecorded pair first: it fills the page cache for both sides.
    _cold_ms(ours, env)
    _cold_ms(bare, env)
    samples: dict[str, list[tuple[float, float]]] = {"ours": [], "bare": []}
    for index in range(rounds):
        order = ("ours", "bare") if index % 2 == 0 else ("bare", "ours")
        for side in order:
            samples[side].append(_cold_ms(ours if side == "ours" else bare, env))
    return _Pair(
        ours_ms=median(wall for wall, _ in samples["ours"]),
        bare_ms=median(wall for wall, _ in samples["bare"]),
        ours_cpu_ms=median(cpu for _, cpu in samples["ours"]),
        bare_cpu_ms=median(cpu for _, cpu in samples["bare"]),
    )


def run(bench: Bench) -> None:
    """Record `lambda_cold_*` (virtualenv) and `lambda_bundle_cold_*` (the unpacked zip)."""
    rounds = bench.sizes.cold_rounds
    with start_moto() as moto, _management_api() as management:
        env = python_env(
            {
                **LAMBDA_ENV,
                "DYNAMODB_ENDPOINT_URL": moto.http_url or "",
                "WEBSOCKET_ENDPOINT": management,
            }
        )
        env.pop("JWT_PUBLIC_KEY", None)
        asyncio.run(_register_connection(env))
        side_args = ("--connection", CONNECTION_ID)
        venv = _alternate(
            [sys.executable, "-m", "bench.coldstart", "streamer", *side_args],
            [sys.executable, "-m", "bench.coldstart", "boto3", *side_args],
            env,
            rounds,
        )
        bench.results.record("lambda_cold_init_ms", venv.ours_ms)
        bench.results.record("boto3_cold_init_ms", venv.bare_ms)
        bench.results.record("lambda_cold_ratio", venv.ours_ms / venv.bare_ms)

        python, tree = _bundle_interpreter_and_tree()
        runtime_tree = _lambda_runtime_tree(python)
        lambda_like = [python, "-I", "-S", "-B", str(SCRIPT)]
        bundled = _alternate(
            [*lambda_like, "streamer", *side_args, "--path", str(tree)],
            [*lambda_like, "boto3", *side_args, "--path", str(runtime_tree)],
            env,
            rounds,
        )
        bench.results.record("lambda_bundle_cold_ms", bundled.ours_ms)
        bench.results.record("boto3_bundle_cold_ms", bundled.bare_ms)
        bench.results.record("lambda_bundle_cold_ratio", bundled.ours_ms / bundled.bare_ms)
        bench.results.record(CPU_RATIO.name, bundled.ours_cpu_ms / bundled.bare_cpu_ms, CPU_RATIO)


def _bundle_interpreter_and_tree() -> tuple[str, Path]:
    """An interpreter of the bundle's Python and the unpacked bundle (built if missing).

    Raises:
        InterpreterNotFound: no interpreter of the bundle's Python here.
    """
    from adapters.aws_lambda.bundle import find_interpreter, read_manifest

    bundle = cached_bundle() or build()
    try:
        manifest = read_manifest(bundle)
    except ValueError:
        # Kept from before bundles had a manifest (and bytecode): rebuild.
        bundle = build()
        manifest = read_manifest(bundle)
    python = find_interpreter(manifest.python_version)
    stamp = UNPACKED / ".from"
    if not stamp.exists() or stamp.read_text() != str(bundle.stat().st_mtime_ns):
        if UNPACKED.exists():
            shutil.rmtree(UNPACKED)
        with zipfile.ZipFile(bundle) as archive:
            archive.extractall(UNPACKED)
        stamp.write_text(str(bundle.stat().st_mtime_ns))
    return python, UNPACKED


def _lambda_runtime_tree(python: str) -> Path:
    """boto3 and botocore as Lambda's runtime ships them: whole, with bytecode
    (the bundle's releases, so only what the bundle does to them differs)."""
    from adapters.aws_lambda.bundle import requirement_pins

    pins = [pin for pin in requirement_pins() if pin.split("==")[0] in ("boto3", "botocore")]
    stamp = LAMBDA_RUNTIME / ".pins"
    if stamp.exists() and stamp.read_text() == " ".join(pins):
        return LAMBDA_RUNTIME
    if LAMBDA_RUNTIME.exists():
        shutil.rmtree(LAMBDA_RUNTIME)
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile"]
    install += ["--disable-pip-version-check", "--target", str(LAMBDA_RUNTIME), *pins]
    subprocess.run(install, check=True, capture_output=True)
    compile_all = [python, "-m", "compileall", "-q", "-j", "0"]
    compile_all += ["--invalidation-mode", "unchecked-hash", str(LAMBDA_RUNTIME)]
    subprocess.run(compile_all, check=False, capture_output=True)
    stamp.write_text(" ".join(pins))
    return LAMBDA_RUNTIME
