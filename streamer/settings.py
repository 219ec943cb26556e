"""Settings from the environment (DESIGN §7), validated once at start."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from streamer.frames import FRAME_LIMIT_BYTES, MESSAGE_LIMIT_BYTES, FramePolicy
from streamer.pem import load_public_keys, normalise_pem, normalise_pem_blocks

__all__ = ["SettingDoc", "Settings", "SettingsError", "normalise_pem"]


class SettingsError(ValueError):
    """A missing or malformed setting; the message is one line naming it."""


@dataclass(frozen=True, slots=True)
class SettingDoc:
    """One row of the configuration table (README, `--help`).

    Args:
        env: the environment variable.
        field: the `Settings` attribute it fills.
        default: the default, as text ("" when there is none).
        description: one line saying what it does.
    """

    env: str
    field: str
    default: str
    description: str


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting, with the defaults of the deployment guide.

    Environment names are the upper-case field names unless noted.
    """

    jwt_public_key: str | None = None
    connections_table: str = "streamer-connections-local"
    requests_table: str = "streamer-requests-local"
    subscriptions_table: str = "streamer-subscriptions-local"
    websocket_endpoint: str | None = None
    aws_region: str = "us-east-1"
    log_level: str = "INFO"
    wire_log_level: str | None = None
    """STREAMER_WIRE_LOG_LEVEL: the level of the wire-level libraries' loggers
    (botocore, aiohttp, websockets, ...); None holds them at INFO or above."""
    connection_ttl_hours: float = 24.0
    request_ttl_days: float = 7.0
    max_connections_per_user: int = 10
    async_threshold_s: float = 5.0
    """ASYNC_THRESHOLD_SECONDS."""
    jwt_issuer: str | None = None
    jwt_jwks_url: str | None = None
    """JWT_JWKS_URL: the identity provider's JWKS, fetched lazily (keys chosen by `kid`)."""
    jwt_audience: str | None = None
    allowed_tenants: frozenset[str] | None = None
    """ALLOWED_TENANTS, a comma list; None allows every tenant."""
    app: str = "streamer.demo:app"
    """STREAMER_APP."""
    cancel_on_disconnect: bool = False
    dynamodb_endpoint_url: str | None = None
    rate_limit_per_minute: int = 100
    max_message_bytes: int = MESSAGE_LIMIT_BYTES
    """MAX_MESSAGE_BYTES: API Gateway's message limit unless lowered (`frame_policy`)."""
    progress_max_per_s: float = 10.0
    """PROGRESS_MAX_PER_SECOND; 0 turns throttling off."""
    progress_persist_interval_s: float = 1.0
    """PROGRESS_PERSIST_INTERVAL_SECONDS."""
    lease_grace_s: float = 60.0
    """LEASE_GRACE_SECONDS: added to an action's timeout to make its lease."""
    pending_stale_s: float = 300.0
    """PENDING_STALE_SECONDS: a request PENDING this long untouched is re-announced."""
    pending_max_kicks: int = 3
    """PENDING_MAX_KICKS: re-announcements before such a request is failed."""

    @property
    def frame_policy(self) -> FramePolicy:
        """The frame rules every runtime applies: API Gateway's 32 KB frame and this
        message limit (the frame limit never above it)."""
        frame_bytes = min(FRAME_LIMIT_BYTES, self.max_message_bytes)
        return FramePolicy(frame_bytes=frame_bytes, message_bytes=self.max_message_bytes)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, required: Iterable[str] = ()
    ) -> Settings:
        """Read and validate settings; `required` names env vars that must be set.

        Blank values count as unset. `SUBSCRIPTIONS_TABLE` defaults to the
        connections table's name with `connections` replaced by `subscriptions`;
        `AWS_REGION` falls back to `AWS_DEFAULT_REGION`.

        Raises:
            SettingsError: one line naming the missing or malformed variable.
        """
        env = dict(os.environ if environ is None else environ)
        if not _present(env, "AWS_REGION") and _present(env, "AWS_DEFAULT_REGION"):
            env["AWS_REGION"] = env["AWS_DEFAULT_REGION"]
        for name in required:
            if not _present(env, name):
                raise SettingsError(f"{name} is required")
        values: dict[str, Any] = {}
        for spec in _SPECS:
            if _present(env, spec.env):
                values[spec.field] = spec.parse(spec.env, env[spec.env].strip())
        if "subscriptions_table" not in values and "connections_table" in values:
            values["subscriptions_table"] = _subscriptions_table_for(values["connections_table"])
        return cls(**values)

    @staticmethod
    def describe() -> tuple[SettingDoc, ...]:
        """Every setting as (env name, field, default, description), in order."""
        defaults = {f.name: f.default for f in fields(Settings)}
        return tuple(
            SettingDoc(
                env=spec.env,
                field=spec.field,
                default=_default_text(defaults[spec.field]),
                description=spec.description,
            )
            for spec in _SPECS
        )


def _present(env: Mapping[str, str], name: str) -> bool:
    return bool(env.get(name, "").strip())


def _subscriptions_table_for(connections_table: str) -> str:
    if "connections" in connections_table:
        return connections_table.replace("connections", "subscriptions")
    return f"{connections_table}-subscriptions"


def _default_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# Parsers: (env name, raw stripped text) -> value, or SettingsError.


def _text(name: str, raw: str) -> str:
    return raw


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise SettingsError(f"{name} must be a positive integer, got {raw!r}")
    return value


def _number(*, positive: bool) -> Callable[[str, str], float]:
    kind = "a positive number" if positive else "a number >= 0"

    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name} must be {kind}, got {raw!r}") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise SettingsError(f"{name} must be {kind}, got {raw!r}")
        return value

    return parse


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _bool(name: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(name: str, raw: str) -> str:
    level = raw.upper()
    if level == "WARN":
        level = "WARNING"
    if level not in _LOG_LEVELS:
        raise SettingsError(f"{name} must be one of {', '.join(_LOG_LEVELS)}, got {raw!r}")
    return level


def _tenants(name: str, raw: str) -> frozenset[str] | None:
    tenants = frozenset(t.strip() for t in raw.split(",") if t.strip())
    return tenants or None


def _public_key(name: str, raw: str) -> str:
    pems = normalise_pem_blocks(raw)
    try:
        load_public_keys(pems)
    except ValueError as exc:
        raise SettingsError(f"{name} {exc}") from None
    return pems


def _jwks_url(name: str, raw: str) -> str:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(raw)
        host = parts.hostname
    except ValueError:
        host = None
    is_loopback = host in ("localhost", "127.0.0.1", "::1")
    if host is None or not (parts.scheme == "https" or (parts.scheme == "http" and is_loopback)):
        # Keys fetched in the clear could be swapped on the way: plain http only
        # reaches a server on this machine (tests, a local identity provider).
        raise SettingsError(
            f"{name} must be an https:// URL (http:// only for localhost), got {raw[:80]!r}"
        )
    return raw


def _app_target(name: str, raw: str) -> str:
    module, sep, attribute = raw.partition(":")
    if not sep or not module or not attribute:
        raise SettingsError(f"{name} must look like 'module:attribute', got {raw!r}")
    return raw


@dataclass(frozen=True, slots=True)
class _Spec:
    field: str
    env: str
    parse: Callable[[str, str], Any]
    description: str


_SPECS: tuple[_Spec, ...] = (
    _Spec(
        "jwt_public_key",
        "JWT_PUBLIC_KEY",
        _public_key,
        "RSA public key (PEM, PKCS#1 or SPKI) that verifies RS256 tokens; several "
        "PEM blocks rotate keys; `\\n` escapes are accepted",
    ),
    _Spec("connections_table", "CONNECTIONS_TABLE", _text, "DynamoDB table for connections"),
    _Spec("requests_table", "REQUESTS_TABLE", _text, "DynamoDB table for requests"),
    _Spec(
        "subscriptions_table",
        "SUBSCRIPTIONS_TABLE",
        _text,
        "DynamoDB table for subscriptions (default: CONNECTIONS_TABLE with "
        "`connections` replaced by `subscriptions`)",
    ),
    _Spec(
        "websocket_endpoint",
        "WEBSOCKET_ENDPOINT",
        _text,
        "API Gateway management endpoint (https://…/stage) that pushes to connections",
    ),
    _Spec("aws_region", "AWS_REGION", _text, "AWS region (falls back to AWS_DEFAULT_REGION)"),
    _Spec("log_level", "LOG_LEVEL", _log_level, "Logging verbosity"),
    _Spec(
        "wire_log_level",
        "STREAMER_WIRE_LOG_LEVEL",
        _log_level,
        "Level of the wire-level loggers (botocore, aiobotocore, urllib3, aiohttp, "
        "websockets); unset holds them at INFO. Even at DEBUG, credentials, tokens "
        "and bodies are redacted",
    ),
    _Spec(
        "connection_ttl_hours",
        "CONNECTION_TTL_HOURS",
        _number(positive=True),
        "Hours after which a connection record expires",
    ),
    _Spec(
        "request_ttl_days",
        "REQUEST_TTL_DAYS",
        _number(positive=True),
        "Days a finished request (result or error) is kept",
    ),
    _Spec(
        "max_connections_per_user",
        "MAX_CONNECTIONS_PER_USER",
        _positive_int,
        "Open connections allowed per user; more are refused with 429",
    ),
    _Spec(
        "async_threshold_s",
        "ASYNC_THRESHOLD_SECONDS",
        _number(positive=False),
        "Actions estimated longer than this run async",
    ),
    _Spec("jwt_issuer", "JWT_ISSUER", _text, "When set, tokens' `iss` must equal it"),
    _Spec(
        "jwt_jwks_url",
        "JWT_JWKS_URL",
        _jwks_url,
        "Identity provider's JWKS (Cognito, Auth0, Okta): keys chosen by the token's `kid`, "
        "cached, fetched again on an unknown `kid` at most once a minute",
    ),
    _Spec(
        "jwt_audience",
        "JWT_AUDIENCE",
        _text,
        "When set, tokens' `aud` must equal it (or, a list, contain it)",
    ),
    _Spec(
        "allowed_tenants",
        "ALLOWED_TENANTS",
        _tenants,
        "Comma list of tenants allowed to connect (others get 403); empty allows all",
    ),
    _Spec("app", "STREAMER_APP", _app_target, "The Streamer app, as `module:attribute`"),
    _Spec(
        "cancel_on_disconnect",
        "CANCEL_ON_DISCONNECT",
        _bool,
        "Cancel a connection's running requests when it disconnects",
    ),
    _Spec(
        "dynamodb_endpoint_url",
        "DYNAMODB_ENDPOINT_URL",
        _text,
        "DynamoDB endpoint override (moto, DynamoDB Local)",
    ),
    _Spec(
        "rate_limit_per_minute",
        "RATE_LIMIT_PER_MINUTE",
        _positive_int,
        "Messages a connection may send per minute before RATE_LIMITED",
    ),
    _Spec(
        "max_message_bytes",
        "MAX_MESSAGE_BYTES",
        _positive_int,
        "Largest client message accepted, in bytes",
    ),
    _Spec(
        "progress_max_per_s",
        "PROGRESS_MAX_PER_SECOND",
        _number(positive=False),
        "Progress updates sent per second per request; 0 turns throttling off",
    ),
    _Spec(
        "progress_persist_interval_s",
        "PROGRESS_PERSIST_INTERVAL_SECONDS",
        _number(positive=False),
        "Least time between progress snapshots written to the request item",
    ),
    _Spec(
        "lease_grace_s",
        "LEASE_GRACE_SECONDS",
        _number(positive=False),
        "Added to an action's timeout to make its processing lease",
    ),
    _Spec(
        "pending_stale_s",
        "PENDING_STALE_SECONDS",
        _number(positive=True),
        "A request PENDING this long untouched is re-announced on the stream by the sweeper",
    ),
    _Spec(
        "pending_max_kicks",
        "PENDING_MAX_KICKS",
        _positive_int,
        "Re-announcements of a stale PENDING request before the sweeper fails it",
    ),
)
