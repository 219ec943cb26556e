"""Which interpreter compiles the bundle's bytecode, and the manifest that says what
the bundle is for."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

from adapters.aws_lambda.bundle import (
    MANIFEST_NAME,
    BundleManifest,
    InterpreterNotFound,
    find_interpreter,
    read_manifest,
    running_python_version,
)


def _fake_python(path: Path, version: str | None) -> Path:
    """An executable that answers like an interpreter of `version`, or fails like a
    pyenv shim whose version is not installed (None)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = f"echo {version}" if version else "echo 'pyenv: version not installed' >&2; exit 127"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def no_interpreters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty PATH and pyenv root; returns the pyenv root."""
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    return tmp_path / "pyenv"


def test_the_running_interpreter_compiles_for_its_own_version() -> None:
    assert find_interpreter(running_python_version()) == sys.executable


def test_a_pyenv_shim_that_does_not_run_is_passed_over_for_pyenvs_installed_version(
    no_interpreters: Path, tmp_path: Path
) -> None:
    _fake_python(tmp_path / "bin" / "python3.99", None)
    _fake_python(no_interpreters / "versions" / "3.99.1" / "bin" / "python3.99", "3.99")
    newest = _fake_python(no_interpreters / "versions" / "3.99.10" / "bin" / "python3.99", "3.99")
    _fake_python(no_interpreters / "versions" / "3.9.99" / "bin" / "python3.9", "3.9")
    assert find_interpreter("3.99") == str(newest)


def test_a_working_interpreter_on_path_is_taken(no_interpreters: Path, tmp_path: Path) -> None:
    on_path = _fake_python(tmp_path / "bin" / "python3.99", "3.99")
    assert find_interpreter("3.99") == str(on_path)


def test_with_none_the_error_is_one_line_saying_how_to_get_one(no_interpreters: Path) -> None:
    with pytest.raises(InterpreterNotFound) as missing:
        find_interpreter("3.99")
    message = str(missing.value)
    assert "\n" not in message
    assert "no working Python 3.99" in message
    assert "pyenv install 3.99" in message
    assert "--python-exe" in message
    assert "--this-python" in message


def test_a_given_interpreter_of_another_version_is_refused(tmp_path: Path) -> None:
    other = _fake_python(tmp_path / "python", "3.98")
    with pytest.raises(InterpreterNotFound, match=r"is not a working Python 3\.99 \(it is"):
        find_interpreter("3.99", python_exe=str(other))


def test_a_given_interpreter_of_the_version_is_used(tmp_path: Path) -> None:
    given = _fake_python(tmp_path / "python", "3.99")
    assert find_interpreter("3.99", python_exe=str(given)) == str(given)


def test_the_manifest_reads_back_what_was_written(tmp_path: Path) -> None:
    manifest = BundleManifest(python_version="3.12", architecture="arm64", streamer_version="1")
    bundle = tmp_path / "b.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr(MANIFEST_NAME, manifest.to_json())
    assert read_manifest(bundle) == manifest
    assert manifest.runtime == "python3.12"


@pytest.mark.parametrize(
    "text",
    [
        "{",
        "[]",
        '{"python_version": "3.12"}',
        '{"python_version": "x", "architecture": "arm64", "streamer_version": "1"}',
        '{"python_version": "3.12", "architecture": "sparc", "streamer_version": "1"}',
    ],
)
def test_a_malformed_manifest_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match=MANIFEST_NAME):
        BundleManifest.from_json(text)


def test_a_zip_without_a_manifest_says_to_rebuild(tmp_path: Path) -> None:
    bundle = tmp_path / "old.zip"
    with zipfile.ZipFile(bundle, "w"):
        pass
    with pytest.raises(ValueError, match="rebuild it with `streamer lambda build`"):
        read_manifest(bundle)
