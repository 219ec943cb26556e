"""The HTTP side's access decisions and the log redactor, as plain functions."""

from __future__ import annotations

import logging

import pytest

from emulator.guard import AccessPolicy, parse_networks
from streamer.logs import SecretRedactor, redact


@pytest.mark.parametrize(
    ("host", "served"),
    [
        ("localhost:3002", True),
        ("127.0.0.1:3002", True),
        ("[::1]:3002", True),
        ("192.168.1.20:3002", True),
        ("app.localhost:3002", True),
        ("evil.example:3002", False),
        ("evil.example", False),
        ("localhost.evil.example", False),
        ("", False),
        (None, True),
    ],
)
def test_only_loopback_names_ip_literals_and_configured_names_are_served(
    host: str | None, served: bool
) -> None:
    assert AccessPolicy().is_served_host(host) is served


def test_a_configured_name_is_served() -> None:
    assert AccessPolicy(allowed_hosts=frozenset({"emulator"})).is_served_host("emulator:3002")


@pytest.mark.parametrize(
    ("address", "trusted"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.5", False),
        ("", False),
    ],
)
def test_only_loopback_callers_are_trusted_by_default(address: str, trusted: bool) -> None:
    assert AccessPolicy().is_trusted_caller(address) is trusted


def test_trusted_networks_widen_the_callers() -> None:
    policy = AccessPolicy(trusted_networks=parse_networks("172.16.0.0/12"))
    assert policy.is_trusted_caller("172.17.0.1")
    assert not policy.is_trusted_caller("127.0.0.1")


@pytest.mark.parametrize(
    "text",
    [
        "GET /?Authorization=opaque-secret HTTP/1.0",
        "x-amz-security-token:opaque-secret",
        "{'X-Amz-Security-Token': b'opaque-secret'}",
        "Authorization: Bearer opaque-secret",
        '{"token": "opaque-secret"}',
        "aws_secret_access_key=opaque-secret",
    ],
)
def test_redact_removes_secrets_from_text(text: str) -> None:
    assert "opaque-secret" not in redact(text)


def test_a_wire_loggers_body_values_are_dropped_and_its_template_kept() -> None:
    record = logging.LogRecord(
        "botocore.endpoint", logging.DEBUG, __file__, 1, "Response body:\n%s", (b"{}",), None
    )
    record.args = (b'{"Item": {"secret": "customer-data"}}',)
    SecretRedactor().filter(record)
    assert record.getMessage() == "Response body:\n[redacted]"
