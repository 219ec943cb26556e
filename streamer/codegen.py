"""`streamer codegen typescript`: the TypeScript types of an app's actions, from its AsyncAPI
document.

The document (`streamer.asyncapi`) goes to the TypeScript client's
`scripts/codegen.mjs`, which turns its schemas into TypeScript with
json-schema-to-typescript, so `client.request("generate_report", {...})` is
checked by `tsc`. That script and its library live in `clients/typescript`
(after `npm ci` there); this module finds them and runs them with node.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["TS_CLIENT_DIR_ENV", "CodegenError", "find_ts_client_dir", "typescript_module"]

TS_CLIENT_DIR_ENV = "STREAMER_TS_CLIENT_DIR"
"""Where `clients/typescript` is, when not beside this package (a non-editable install)."""
_SCRIPT = Path("scripts") / "codegen.mjs"
_LIBRARY = Path("node_modules") / "json-schema-to-typescript"


class CodegenError(Exception):
    """The types could not be generated; the message says what to do."""


def find_ts_client_dir(explicit: Path | None = None) -> Path:
    """The TypeScript client's folder: `explicit`, else `$STREAMER_TS_CLIENT_DIR`,
    else `clients/typescript` of the checkout this package runs from.

    Raises:
        CodegenError: no such folder, or its dev dependencies are not installed.
    """
    from_env = os.environ.get(TS_CLIENT_DIR_ENV, "").strip()
    if explicit is not None:
        folder = explicit
    elif from_env:
        folder = Path(from_env)
    else:
        folder = Path(__file__).resolve().parents[1] / "clients" / "typescript"
    if not (folder / _SCRIPT).is_file():
        raise CodegenError(
            f"no TypeScript client tooling in {folder}: pass --ts-client DIR or set "
            f"{TS_CLIENT_DIR_ENV} to the repository's clients/typescript"
        )
    if not (folder / _LIBRARY).is_dir():
        raise CodegenError(
            f"json-schema-to-typescript is not installed in {folder}: run `npm ci` there"
        )
    return folder


def typescript_module(
    document: Mapping[str, Any],
    *,
    ts_client_dir: Path,
    node: str | None = None,
    timeout_s: float = 120.0,
) -> str:
    """The TypeScript source declaring `Actions` (and its payload and result types).

    Raises:
        CodegenError: node is missing, failed, or took longer than `timeout_s`.
    """
    executable = node or shutil.which("node")
    if executable is None:
        raise CodegenError("node is not on PATH (Node 20 or later generates the types)")
    try:
        completed = subprocess.run(
            [executable, str(_SCRIPT), "-"],
            input=json.dumps(document),
            capture_output=True,
            text=True,
            cwd=ts_client_dir,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CodegenError(f"node took longer than {timeout_s:g} s to generate the types") from None
    except OSError as exc:
        raise CodegenError(f"cannot run node: {exc.strerror or exc}") from None
    if completed.returncode != 0:
        last = completed.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise CodegenError(f"generating the types failed: {last[0]}")
    return completed.stdout
