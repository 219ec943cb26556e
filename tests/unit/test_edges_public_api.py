"""The public surface of `streamer`, and the core's independence from AWS and sockets."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import streamer

FORBIDDEN = ("aioboto3", "aiobotocore", "botocore", "boto3", "websockets", "moto")
ALLOWED_TO_USE_SOCKETS = {"streamer.client", "streamer.cli"}


def test_public_names_are_pinned() -> None:
    assert sorted(streamer.__all__) == [
        "ErrorCode",
        "Progress",
        "Request",
        "RequestCancelled",
        "Retryable",
        "Streamer",
        "StreamerError",
        "load_app",
    ]
    for name in streamer.__all__:
        assert getattr(streamer, name) is not None


def _core_modules() -> list[str]:
    package_dir = Path(streamer.__file__).parent
    names = [f"streamer.{m.name}" for m in pkgutil.iter_modules([str(package_dir)])]
    return sorted(n for n in names if n not in ALLOWED_TO_USE_SOCKETS)


def test_core_modules_import_no_aws_or_socket_library() -> None:
    """Every module of the core (client and CLI aside) loads without them."""
    modules = _core_modules()
    assert "streamer.settings" in modules
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == []


def _imports_by_core_module() -> dict[str, set[str]]:
    """Every module each core module imports, at top level or inside a function."""
    package_dir = Path(streamer.__file__).parent
    imported: dict[str, set[str]] = {}
    for path in sorted(package_dir.glob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        imported[f"streamer.{path.stem}"] = names
    return imported


def test_no_core_module_imports_adapters_or_emulator() -> None:
    """Arrows point inward: not even a function-level import leaves the core."""
    outward = {
        module: sorted(n for n in names if n.split(".")[0] in ("adapters", "emulator"))
        for module, names in _imports_by_core_module().items()
    }
    assert {module: names for module, names in outward.items() if names} == {}


def test_core_modules_import_each_other_without_a_cycle() -> None:
    imports = _imports_by_core_module()
    edges = {module: (names & imports.keys()) - {module} for module, names in imports.items()}
    done: set[str] = set()

    def cycle_from(module: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
        if module in path:
            return (*path[path.index(module) :], module)
        if module in done:
            return None
        for target in sorted(edges[module]):
            found = cycle_from(target, (*path, module))
            if found:
                return found
        done.add(module)
        return None

    cycles = [found for module in sorted(edges) if (found := cycle_from(module, ()))]
    assert cycles == []
