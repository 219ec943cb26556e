"""The README's Python blocks run as written: the client snippet against a live
emulator (its dev keys in `.streamer/` of the working folder), the app snippet
imported as a module."""

from __future__ import annotations

import ast
import asyncio
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import EmulatorFactory

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
RUN_TIMEOUT_S = 60.0
REPORTS_APP = 'app = Streamer("reports")'
SHARING_APP = 'app = Streamer("sharing")'


async def _run(script: Path, cwd: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(RUN_TIMEOUT_S):
        output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode("utf-8", "replace")


def _block(marker: str) -> str:
    (block,) = [block for block in BLOCKS if marker in block]
    return block


def test_every_python_block_at_least_compiles() -> None:
    """Blocks that are excerpts (no imports of their own) still parse; the two that
    are whole programs are run below."""
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    for number, block in enumerate(BLOCKS, start=1):
        compile(block, f"README.md python block {number}", "exec", flags=flags)
    assert "asyncio.run(main())" in _block("StreamerClient(")
    assert "app = Streamer(" in _block(REPORTS_APP)
    assert "asyncio.run(main())" in _block("open_pusher")


async def test_the_client_snippet_runs_as_written_against_the_emulator(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """Only the port changes (the test's emulator is on a free one)."""
    client_block = _block("StreamerClient(")
    assert '"ws://localhost:3001"' in client_block
    state = tmp_path / ".streamer"
    async with emulator_factory(
        app="streamer.demo:app", state_dir=state, settings={"jwt_public_key": None}
    ) as harness:
        port = harness.ws_url.rsplit(":", 1)[1]
        script = tmp_path / "snippet.py"
        script.write_text(client_block.replace("localhost:3001", f"127.0.0.1:{port}"))
        status, output = await _run(script, cwd=tmp_path)
    assert status == 0, output
    lines = output.splitlines()
    assert lines[-1].startswith("https://reports.example.com/dev-tenant/")
    assert any(line.endswith("%") or "%" in line for line in lines[:-1])


async def test_the_app_snippet_imports_and_registers_its_actions(tmp_path: Path) -> None:
    app_block = _block(REPORTS_APP)
    script = tmp_path / "snippet_app.py"
    script.write_text(app_block + "\nprint(sorted(app.actions))\n")
    status, output = await _run(script, cwd=tmp_path)
    assert status == 0, output
    assert output.strip() == "['echo', 'generate_report']"


async def test_the_push_action_snippet_imports_and_registers_its_action(tmp_path: Path) -> None:
    """The server-push section's action is a whole module, payload model included."""
    block = _block(SHARING_APP)
    script = tmp_path / "snippet_share.py"
    script.write_text(block + "\nprint(sorted(app.actions), app.actions['share_report'].mode)\n")
    status, output = await _run(script, cwd=tmp_path)
    assert status == 0, output
    assert output.strip() == "['share_report'] async"
