"""The `streamer` command against a local emulator: the fallback dev token follows
the `--url`, and the progress bar fits the terminal it draws on."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import termios
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from emulator.__main__ import parse_config
from streamer import cli


class DevTokenServer:
    """Answers `/api/dev-token` like the emulator; records the paths asked for."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.paths.append(self.path)
                body = b'{"token": "not-a-real-token"}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def dev_token_server() -> Iterator[DevTokenServer]:
    server = DevTokenServer()
    try:
        yield server
    finally:
        server.close()


def test_send_fetches_its_fallback_token_from_the_url_host_and_next_port(
    dev_token_server: DevTokenServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--url ws://HOST:N` asks HOST:N+1 (the emulator's HTTP port for N), not 3002."""
    monkeypatch.delenv("STREAMER_TOKEN", raising=False)
    ws_port = dev_token_server.server.server_port - 1
    status = cli.main(
        [
            "send",
            "echo",
            "--url",
            f"ws://127.0.0.1:{ws_port}",
            "--keys-dir",
            str(tmp_path / "no-keys"),
            "--sub",
            "ada",
            "--timeout",
            "5",
        ]
    )
    assert status == cli.EXIT_CONNECTION  # nothing listens on the WebSocket port
    (path,) = dev_token_server.paths
    assert path.startswith("/api/dev-token?")
    assert "sub=ada" in path


@pytest.mark.parametrize(
    ("ws_port", "http_port"), [(None, 3002), (3001, 3002), (3011, 3012), (0, 0), (65535, 0)]
)
def test_the_http_port_rule_is_the_websocket_port_plus_one(
    ws_port: int | None, http_port: int
) -> None:
    assert cli.emulator_http_port(ws_port) == http_port


def test_the_emulator_serves_http_on_the_next_port_unless_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("EMULATOR_PORT", "EMULATOR_HTTP_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert parse_config(["--port", "3011"]).http_port == 3012
    assert parse_config(["--port", "3011", "--http-port", "4000"]).http_port == 4000
    assert parse_config([]).http_port == 3002
    monkeypatch.setenv("EMULATOR_PORT", "5001")
    assert parse_config([]).http_port == 5002


def _terminal(columns: int) -> tuple[io.TextIOWrapper, int]:
    """A pseudo-terminal `columns` wide: (the stream a program writes to, the
    reading end)."""
    reader, writer = pty.openpty()
    fcntl.ioctl(writer, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    return io.TextIOWrapper(os.fdopen(writer, "wb", buffering=0), encoding="utf-8"), reader


def test_the_bar_fits_the_terminal_it_draws_on_not_stdouts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Drawn on a 40-column stderr while stdout is piped: every redraw fits in 40."""
    monkeypatch.delenv("COLUMNS", raising=False)
    stream, reader = _terminal(40)
    try:
        bar = cli._ProgressBar(stream)
        for step in range(1, 4):
            message = f"step {step} of a long report with a long message " * 2
            bar.update(SimpleNamespace(percentage=step * 30, message=message))
        bar.close()
        output = os.read(reader, 65536).decode("utf-8")
    finally:
        stream.close()
        os.close(reader)
    drawn = [part.removeprefix("\x1b[2K") for part in output.replace("\n", "\r").split("\r")]
    assert [line for line in drawn if line]  # it drew
    assert max(len(line) for line in drawn) < 40


def test_the_bar_writes_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    bar = cli._ProgressBar(stream)
    bar.update(SimpleNamespace(percentage=50, message="half"))
    bar.update(SimpleNamespace(percentage=100, message="done"))
    bar.close()
    assert stream.getvalue() == "progress  50.0% half\nprogress 100.0% done\n"
