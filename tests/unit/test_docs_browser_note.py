"""`make test` on a machine without chromium: the summary says the browser tests
were skipped and gives the one command that enables them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from browser_check import ENABLE_COMMAND, SKIP_REASON, report_skipped, skipped_note


def _skipped(reason: str, *, browser: bool) -> Any:
    keywords = {"browser": 1} if browser else {}
    return SimpleNamespace(keywords=keywords, longrepr=("test_x.py", 1, f"Skipped: {reason}"))


class FakeReporter:
    def __init__(self, stats: dict[str, list[Any]]) -> None:
        self.stats = stats
        self.lines: list[str] = []

    def write_sep(self, sep: str, title: str, **markup: bool) -> None:
        self.lines.append(title)

    def write_line(self, line: str) -> None:
        self.lines.append(line)


def test_skipped_browser_tests_are_named_with_the_command_that_enables_them() -> None:
    reporter = FakeReporter({"skipped": [_skipped(SKIP_REASON, browser=True)] * 2})
    report_skipped(reporter)
    assert reporter.lines[0] == "browser tests skipped"
    assert reporter.lines[1].startswith("2 browser test(s) skipped")
    assert reporter.lines[1].endswith(f"Enable them with: {ENABLE_COMMAND}")


def test_nothing_is_said_when_no_browser_test_was_skipped_for_chromium() -> None:
    assert skipped_note({}) is None
    assert skipped_note({"skipped": [_skipped("other reason", browser=True)]}) is None
    assert skipped_note({"skipped": [_skipped(SKIP_REASON, browser=False)]}) is None
    reporter = FakeReporter({"passed": []})
    report_skipped(reporter)
    assert reporter.lines == []


def test_make_test_installs_chromium_when_it_can() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    makefile = (root / "Makefile").read_text()
    test_target = makefile[makefile.index("\ntest:") :].split("\n\n")[0]
    assert ".ci/browser-deps" in test_target
    script = (root / ".ci" / "browser-deps").read_text()
    assert "apt-get install -y -qq chromium" in script
    assert 'id -u)" = 0' in script
