"""Dev token helpers and JSON log lines."""

from __future__ import annotations

import io
import json
import logging
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest

from streamer.auth import TokenVerifier
from streamer.logs import JsonFormatter, configure_logging
from streamer.testing import ManualClock
from streamer.tokens import (
    generate_rsa_key_pair,
    load_or_create_dev_keys,
    mint_token,
    public_key_of,
)


def test_generated_pair_is_pkcs8_and_spki() -> None:
    private_pem, public_pem = generate_rsa_key_pair()
    assert private_pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert public_pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert public_key_of(private_pem) == public_pem


def test_minted_token_carries_the_claims() -> None:
    private_pem, public_pem = generate_rsa_key_pair()
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    token = mint_token(
        private_pem,
        sub="u1",
        tenant_id="t1",
        ttl_s=120,
        permissions=("read", "write"),
        issuer="iss",
        now=now,
        extra_claims={"role": "admin"},
    )
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(token, options={"verify_signature": False})
    epoch = int(now.timestamp())
    assert claims == {
        "sub": "u1",
        "tenant_id": "t1",
        "permissions": ["read", "write"],
        "iat": epoch,
        "nbf": epoch,
        "exp": epoch + 120,
        "iss": "iss",
        "role": "admin",
    }
    identity = TokenVerifier(public_pem, clock=ManualClock(now), issuer="iss").verify(token)
    assert identity.permissions == ("read", "write")


def test_dev_keys_are_made_once_and_reused(tmp_path: Path) -> None:
    directory = tmp_path / ".streamer"
    first = load_or_create_dev_keys(directory)
    second = load_or_create_dev_keys(directory)
    assert first == second
    assert first.private_path.read_text() == first.private_pem
    assert first.public_path.read_text() == first.public_pem
    assert stat.S_IMODE(first.private_path.stat().st_mode) == 0o600


def test_dev_public_key_is_rewritten_from_the_private_key(tmp_path: Path) -> None:
    keys = load_or_create_dev_keys(tmp_path)
    keys.public_path.unlink()
    assert load_or_create_dev_keys(tmp_path).public_pem == keys.public_pem
    assert keys.public_path.read_text() == keys.public_pem


def test_corrupt_dev_private_key_is_named(tmp_path: Path) -> None:
    (tmp_path / "dev_private.pem").write_text("garbage")
    with pytest.raises(ValueError, match=r"dev_private\.pem"):
        load_or_create_dev_keys(tmp_path)


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("streamer.test", logging.INFO, __file__, 1, "hello %s", ("x",), None)
    record.__dict__.update(extra)
    return record


def test_log_line_is_one_json_object_with_context() -> None:
    line = JsonFormatter().format(
        _record(connection_id="c1", request_id="r1", action="echo", duration_ms=12.5)
    )
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "INFO"
    assert parsed["logger"] == "streamer.test"
    assert parsed["msg"] == "hello x"
    assert parsed["ts"].endswith("Z")
    assert (parsed["connection_id"], parsed["request_id"], parsed["action"]) == ("c1", "r1", "echo")
    assert parsed["duration_ms"] == 12.5


def test_extras_outside_the_whitelist_never_reach_the_line() -> None:
    line = JsonFormatter().format(
        _record(payload={"card": "4111"}, token="eyJ.secret", request_id="r1")
    )
    assert "4111" not in line
    assert "secret" not in line
    assert json.loads(line)["request_id"] == "r1"


def test_exceptions_are_included_in_the_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    parsed = json.loads(JsonFormatter().format(record))
    assert "RuntimeError: boom" in parsed["exception"]


@pytest.fixture
def restored_root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_configure_logging_is_idempotent(restored_root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    before = len(restored_root_logger.handlers)
    configure_logging("debug", stream=stream)
    configure_logging("INFO", stream=stream)
    assert len(restored_root_logger.handlers) == before + 1
    assert restored_root_logger.level == logging.INFO
    logging.getLogger("streamer.x").info("ready", extra={"outcome": "ok"})
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["outcome"] for line in lines] == ["ok"]


def test_under_the_lambda_runtime_without_a_telemetry_fd_each_record_is_its_own_line(
    restored_root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    """awslambdaric's handler writes records to stdout as formatted (Lambda RIE,
    `sam local`): the JSON formatter ends each with a newline itself."""
    bootstrap = pytest.importorskip("awslambdaric.bootstrap")
    lambda_handler = bootstrap.LambdaLoggerHandler(bootstrap.StandardLogSink())
    restored_root_logger.handlers[:] = [lambda_handler]
    configure_logging("INFO")
    logger = logging.getLogger("streamer.x")
    logger.info("one", extra={"outcome": "a"})
    logger.warning("two", extra={"outcome": "b"})
    out = capsys.readouterr().out
    assert out.endswith("\n")
    assert [json.loads(line)["outcome"] for line in out.splitlines()] == ["a", "b"]
