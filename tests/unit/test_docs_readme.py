"""The README is product: it must give the two commands and document every setting."""

from __future__ import annotations

from pathlib import Path

from streamer.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_readme_gives_the_two_commands() -> None:
    assert "make run" in README
    assert "make test" in README


def test_readme_configuration_table_lists_every_setting_with_its_default() -> None:
    for doc in Settings.describe():
        row = next((line for line in README.splitlines() if line.startswith(f"| `{doc.env}`")), "")
        assert row, f"{doc.env} missing from the README's configuration table"
        if doc.default:
            assert f"`{doc.default}`" in row, f"{doc.env}'s default is not {doc.default!r}"


def test_readme_links_resolve_to_files_in_the_repository() -> None:
    root = Path(__file__).resolve().parents[2]
    for target in (
        "docs/client.md",
        "docs/lambda.md",
        "docs/design-notes.md",
        "docs/performance.md",
        "RELIABILITY.md",
        "bench/results/scaling.png",
    ):
        assert f"({target})" in README
        assert (root / target).is_file(), target
