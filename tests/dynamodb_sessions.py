"""The kinds of session the DynamoDB adapters run on, for tests that run once on each."""

from __future__ import annotations

from typing import Any

from adapters.aws import get_session
from adapters.awsjson import AwsJsonSession

__all__ = ["SESSION_KINDS", "make_session"]

SESSION_KINDS = ("aioboto3", "awsjson")
"""aioboto3's (AWS, any endpoint) and `AwsJsonSession` (the emulator's embedded moto)."""


def make_session(kind: str) -> Any:
    """A session of `kind` (one of `SESSION_KINDS`)."""
    if kind == "aioboto3":
        return get_session()
    if kind == "awsjson":
        return AwsJsonSession()
    raise ValueError(f"no session kind {kind!r}")
