"""One aioboto3 session per process and the client settings every AWS adapter shares.

Clients made with `client_kwargs` retry throttling, 5xx and connection errors
with backoff (botocore's standard retry mode), time out instead of hanging, and
talk to `DYNAMODB_ENDPOINT_URL` (moto, DynamoDB Local) when it is set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aioboto3
from botocore.config import Config

from streamer.settings import Settings

__all__ = [
    "DUMMY_CREDENTIALS",
    "client_config",
    "client_kwargs",
    "get_session",
]

DUMMY_CREDENTIALS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "aws_session_token": "testing",
}
"""What a local endpoint (moto, DynamoDB Local) is given when nothing is configured."""

_session: aioboto3.Session | None = None


def get_session() -> aioboto3.Session:
    """The process's aioboto3 session, made on first use (never at import)."""
    global _session
    if _session is None:
        _session = aioboto3.Session()
    return _session


def client_config(
    *,
    max_attempts: int = 5,
    connect_timeout_s: float = 3.0,
    read_timeout_s: float = 10.0,
    max_pool_connections: int = 50,
) -> Config:
    """The botocore `Config` of every client.

    Args:
        max_attempts: total tries per call (first try included) for throttling,
            5xx and connection errors, with exponential backoff and jitter.
        connect_timeout_s: seconds to wait for a TCP connection.
        read_timeout_s: seconds to wait for a response once connected.
        max_pool_connections: HTTP connections kept per client; the processor
            runs many requests at once over one client.
    """
    return Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        max_pool_connections=max_pool_connections,
    )


def client_kwargs(
    settings: Settings,
    *,
    endpoint_url: str | None = None,
    config: Config | None = None,
) -> dict[str, Any]:
    """Keyword arguments for `session.client(service, **kwargs)`.

    Args:
        settings: region and `dynamodb_endpoint_url` come from here.
        endpoint_url: overrides `settings.dynamodb_endpoint_url` (e.g. for another
            service); None keeps the settings' value.
        config: the botocore config; `client_config()` when None.
    """
    url = endpoint_url if endpoint_url is not None else settings.dynamodb_endpoint_url
    kwargs: dict[str, Any] = {
        "region_name": settings.aws_region,
        "config": config if config is not None else client_config(),
    }
    if url:
        kwargs["endpoint_url"] = url
        if not _has_configured_credentials():
            kwargs.update(DUMMY_CREDENTIALS)
    return kwargs


def _has_configured_credentials() -> bool:
    # Checked without a network call: the full chain would probe the instance
    # metadata service, which only times out on a laptop.
    if os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE"):
        return True
    shared = os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")
    return Path(shared).expanduser().is_file()
