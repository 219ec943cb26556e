"""`docs/performance.md`: the README's Performance section, written from a full run.

The prose lives next to this module (`doc/intro.md`, `doc/findings.md`,
`doc/method.md`); the table, machine, and curves come from the run.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.machine import Machine
from bench.metrics import Results
from bench.procs import REPO

__all__ = ["README_END", "README_START", "write_performance_doc", "write_readme_section"]

DOC_PARTS = Path(__file__).resolve().parent / "doc"
README_START = "<!-- bench:start (written by `make bench`) -->"
README_END = "<!-- bench:end -->"
_SYMBOLS = {"<=": "≤", ">=": "≥"}
_MARKS = {"met": "✅", "MISSED": "❌"}


def _goal(text: str) -> str:
    for ascii_op, symbol in _SYMBOLS.items():
        text = text.replace(ascii_op, symbol)
    return text


def _table(results: Results) -> str:
    lines = ["| metric | value | unit | goal | |", "|---|---:|---|---|---|"]
    for name, value, unit, goal, verdict in results.rows():
        mark = _MARKS.get(verdict, "")
        lines.append(f"| `{name}` | {value} | {unit} | {_goal(goal)} | {mark} |")
    return "\n".join(lines)


def _cpu_table(results: Results) -> str:
    if not results.cpu:
        return ""
    lines = [
        "CPU used by each server process during each scenario. In the emulator the "
        "event-loop thread is Streamer's own work (gateway, router, processor, poller, "
        "aiobotocore) and the other threads are almost all its embedded moto; the "
        "standalone moto of the idle-connection scenario is all database.\n",
        "| scenario | process | CPU s | event-loop thread s | other threads s |",
        "|---|---|---:|---:|---:|",
    ]
    for scenario, process, total, main in results.cpu:
        if total < 0.05:
            continue
        lines.append(
            f"| {scenario} | {process} | {total:.1f} | {main:.1f} | {max(0.0, total - main):.1f} |"
        )
    return "\n".join(lines) + "\n"


def _part(name: str) -> str:
    path = DOC_PARTS / name
    return path.read_text().rstrip() + "\n" if path.exists() else ""


def write_performance_doc(
    results: Results, machine: Machine, png: Path, path: Path | None = None
) -> Path:
    """Write the Performance section: intro, machine, table, curves, findings, method."""
    path = path or REPO / "docs" / "performance.md"
    png_link = Path("..") / png.relative_to(REPO)
    curves = json.dumps(results.curves, indent=2)
    parts = [
        _part("intro.md"),
        "### Last full run\n",
        f"Machine: {machine.one_line()}.\n",
        _table(results),
        "",
        f"![growth curves]({png_link.as_posix()})\n",
        "Growth curves (p50s; also in `bench/results/scaling.json`):\n",
        f"```json\n{curves}\n```\n",
        _cpu_table(results),
        _part("findings.md"),
        _part("method.md"),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return path


def write_readme_section(
    results: Results, machine: Machine, png: Path, readme: Path | None = None
) -> Path:
    """Replace the README's figures (between the bench markers) with this run's."""
    readme = readme or REPO / "README.md"
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} markers")
    body = "\n".join(
        [
            README_START,
            "",
            f"Last full run (`make bench`): {machine.one_line()}.",
            "",
            _table(results),
            "",
            f"![growth curves]({png.relative_to(REPO).as_posix()})",
            "",
        ]
    )
    readme.write_text(text[:start] + body + text[end:])
    return readme
