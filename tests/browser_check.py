"""Whether the browser tests can run here, and the summary line when they could not."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "CHROMIUM",
    "ENABLE_COMMAND",
    "HAS_CHROMIUM",
    "SKIP_REASON",
    "report_skipped",
    "skipped_note",
]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HAS_CHROMIUM = Path(CHROMIUM).exists()
ENABLE_COMMAND = "sudo apt-get install -y chromium"
"""The one command that enables them (Debian's chromium; `make test` runs it as root)."""
SKIP_REASON = f"no chromium binary (enable with: {ENABLE_COMMAND})"


def skipped_note(stats: Mapping[str, Iterable[Any]]) -> str | None:
    """The line for the end of the test summary when browser tests were skipped
    for want of chromium (None when none were)."""
    skipped = [
        report
        for report in stats.get("skipped", ())
        if "browser" in getattr(report, "keywords", {}) and SKIP_REASON in str(report.longrepr)
    ]
    if not skipped:
        return None
    return (
        f"{len(skipped)} browser test(s) skipped: chromium is not installed. "
        f"Enable them with: {ENABLE_COMMAND}"
    )


def report_skipped(terminalreporter: Any) -> None:
    """What `pytest_terminal_summary` prints: a section naming the skipped browser
    tests and the command that enables them, when there were some."""
    note = skipped_note(terminalreporter.stats)
    if note is not None:
        terminalreporter.write_sep("=", "browser tests skipped", yellow=True)
        terminalreporter.write_line(note)
