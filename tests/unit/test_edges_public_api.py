"""The public surface of `streamer`, and the core's independence from AWS and sockets."""

from __future__ import annotations

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
