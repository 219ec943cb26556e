"""`python -m bench --quick | --full`: run every scenario, print the table, write results.

Quick writes `bench/results/quick.json`; full writes `bench/results/latest.json`,
`bench/results/scaling.json`, `bench/results/run.json` (machine, CPU per
scenario), `bench/results/scaling.png` and `docs/performance.md`. `--render`
rewrites the PNG and `docs/performance.md` from those files without running
anything (after editing `bench/doc/*.md`). `--full --only a,b` writes only
`bench/results/full-a-b.json`. Exits non-zero when a scenario failed to produce
its metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from bench.config import FULL, QUICK, Bench
from bench.machine import Machine, describe_machine
from bench.metrics import Results
from bench.plot import plot_scaling
from bench.procs import (
    CACHE_DIR,
    REPO,
    ServerProcess,
    raise_fd_limit,
    start_echo_server,
    start_moto,
)
from bench.report import write_performance_doc, write_readme_section
from bench.scenarios import (
    async_latency,
    connect_rate,
    connections,
    lambda_cold,
    lambda_zip,
    progress,
    push,
    sync_rtt,
    test_suites,
)

RESULTS_DIR = REPO / "bench" / "results"
SCENARIOS = (
    "sync", "async", "progress", "connect", "connections", "push", "zip", "cold", "tests",
)  # fmt: skip


def _step(
    results: Results, name: str, work: Callable[[], None], watch: Sequence[ServerProcess] = ()
) -> None:
    started = time.monotonic()
    print(f"» {name}", flush=True)
    cpu_before = [proc.cpu_seconds() for proc in watch]
    try:
        work()
    except Exception as exc:
        traceback.print_exc()
        results.fail(name, f"{type(exc).__name__}: {exc}")
        print(f"  {name} FAILED after {time.monotonic() - started:.1f} s", flush=True)
    else:
        print(f"  {name} done in {time.monotonic() - started:.1f} s", flush=True)
    for proc, (main_before, total_before) in zip(watch, cpu_before, strict=True):
        main_after, total_after = proc.cpu_seconds()
        results.cpu.append((name, proc.name, total_after - total_before, main_after - main_before))
        print(
            f"    {proc.name} CPU: {total_after - total_before:.1f} s "
            f"({main_after - main_before:.1f} s on the event-loop thread)",
            flush=True,
        )


def _emulator_scenarios(bench: Bench, chosen: set[str]) -> None:
    results = bench.results
    with start_echo_server() as raw, bench.start_emulator("emulator") as emulator:
        watch = (emulator, raw)
        if "sync" in chosen:
            _step(results, "sync", lambda: sync_rtt.run(bench, raw, emulator), watch)
        if "async" in chosen:
            _step(results, "async", lambda: async_latency.run(bench, emulator), watch)
        if "progress" in chosen:
            _step(results, "progress", lambda: progress.run(bench, emulator, raw), watch)
        if "connect" in chosen:
            _step(results, "connect", lambda: connect_rate.run(bench, raw, emulator), watch)


def _idle_scenario(bench: Bench) -> None:
    # A fresh emulator on a standalone moto: the emulator's memory growth is
    # then only the idle connections', the database's is measured apart.
    with start_moto() as moto:
        # The standalone moto is the emulator's own server: the emulator's client for it.
        args = ("--dynamodb-endpoint", moto.http_url or "", "--dynamodb-client", "awsjson")
        with bench.start_emulator("emulator-idle", args) as emulator:
            # Its clean shutdown runs every idle socket's $disconnect: not measured.
            emulator.stop_timeout_s = 5.0 if bench.profile_dir is None else 60.0
            _step(
                bench.results,
                "connections",
                lambda: connections.run(bench, emulator, moto),
                (emulator, moto),
            )


def _push_scenario(bench: Bench) -> None:
    # The index on a standalone moto, as DynamoDB is another service in production.
    with start_moto() as moto:
        # The holder's sockets are idle between levels: keep API Gateway's 10-minute
        # idle close out of the measurement.
        args = (
            "--dynamodb-endpoint",
            moto.http_url or "",
            "--dynamodb-client",
            "awsjson",
            "--idle-timeout",
            "7200",
        )
        with bench.start_emulator("emulator-push", args) as emulator:
            emulator.stop_timeout_s = 5.0 if bench.profile_dir is None else 60.0
            _step(bench.results, "push", lambda: push.run(bench, emulator), (emulator, moto))


def _with_servers(results: Results, label: str, work: Callable[[], None]) -> None:
    """Run scenarios whose servers may fail to start; a failure is noted, the run goes on."""
    try:
        work()
    except Exception as exc:
        traceback.print_exc()
        results.fail(label, f"{type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="every scenario small (default)")
    size.add_argument("--full", action="store_true", help="full sizes, a few minutes")
    parser.add_argument(
        "--only", help=f"comma list of scenarios to run (of {', '.join(SCENARIOS)})"
    )
    parser.add_argument(
        "--profile", action="store_true", help="run the emulators under pyinstrument"
    )
    parser.add_argument(
        "--render", action="store_true", help="redraw the PNG and doc from the last full run"
    )
    args = parser.parse_args(argv)
    if args.render:
        return _render()
    mode = "full" if args.full else "quick"
    chosen = set(args.only.split(",")) if args.only else set(SCENARIOS)
    unknown = chosen - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")

    raise_fd_limit()
    started_at = datetime.now(UTC)
    started = time.monotonic()
    # A full run of some scenarios is kept beside the full run's results, named after
    # them (`full-cold.json`); a quick partial run stays in the cache.
    partial = f"{mode}-{'-'.join(s for s in SCENARIOS if s in chosen)}"
    results = Results(mode if not args.only else partial if mode == "full" else f"{mode}-partial")
    profile_dir = RESULTS_DIR if args.profile else None
    bench = Bench(mode, FULL if mode == "full" else QUICK, results, profile_dir=profile_dir)
    print(f"bench {mode}: {', '.join(s for s in SCENARIOS if s in chosen)}", flush=True)

    if chosen & {"sync", "async", "progress", "connect"}:
        _with_servers(results, "emulator", lambda: _emulator_scenarios(bench, chosen))
    if "connections" in chosen:
        _with_servers(results, "emulator-idle", lambda: _idle_scenario(bench))
    if "push" in chosen:
        _with_servers(results, "emulator-push", lambda: _push_scenario(bench))
    if "zip" in chosen:
        _step(results, "zip", lambda: lambda_zip.run(bench))
    if "cold" in chosen:
        _step(results, "cold", lambda: lambda_cold.run(bench))
    if "tests" in chosen and mode == "full":  # the whole suite: never in a quick run
        _step(results, "tests", lambda: test_suites.run(bench))

    machine = describe_machine(started_at)
    written = [results.write(RESULTS_DIR if not args.only or mode == "full" else CACHE_DIR)]
    if mode == "full" and not args.only:
        scaling = RESULTS_DIR / "scaling.json"
        scaling.write_text(json.dumps(results.curves, indent=2) + "\n")
        run = RESULTS_DIR / "run.json"
        run.write_text(json.dumps({"machine": machine.as_json(), "cpu": results.cpu}, indent=2))
        png = plot_scaling(
            results, machine, RESULTS_DIR / "scaling.png", idle_target=max(FULL.idle_levels)
        )
        written += [scaling, run, png, write_performance_doc(results, machine, png)]
        written.append(write_readme_section(results, machine, png))
    else:
        png = plot_scaling(
            results,
            machine,
            CACHE_DIR / f"scaling-{mode}.png",
            idle_target=max(bench.sizes.idle_levels),
        )
        written.append(png)

    print()
    print(results.table())
    print()
    print(f"machine: {machine.one_line()}")
    for path in written:
        print(f"wrote {path.relative_to(REPO)}")
    missing = results.missing() if not args.only else []
    for scenario, reason in results.failures.items():
        print(f"FAILED {scenario}: {reason}", file=sys.stderr)
    if missing:
        print(f"missing metrics: {', '.join(missing)}", file=sys.stderr)
    print(f"total {time.monotonic() - started:.1f} s")
    return 1 if results.failures or missing else 0


def _render() -> int:
    results = Results.load("full", json.loads((RESULTS_DIR / "latest.json").read_text()))
    results.curves = json.loads((RESULTS_DIR / "scaling.json").read_text())
    run = json.loads((RESULTS_DIR / "run.json").read_text())
    results.cpu = [tuple(row) for row in run["cpu"]]
    machine = Machine.from_json(run["machine"])
    png = plot_scaling(
        results, machine, RESULTS_DIR / "scaling.png", idle_target=max(FULL.idle_levels)
    )
    doc = write_performance_doc(results, machine, png)
    readme = write_readme_section(results, machine, png)
    print(f"wrote {png.relative_to(REPO)}, {doc.relative_to(REPO)}, {readme.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
