"""Settings from the environment (DESIGN §7), validated once at start."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Settings", "SettingsError"]


class SettingsError(ValueError):
    """A missing or malformed setting; the message is one line naming it."""


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
    connection_ttl_hours: float = 24.0
    request_ttl_days: float = 7.0
    max_connections_per_user: int = 10
    async_threshold_s: float = 5.0
    """ASYNC_THRESHOLD_SECONDS."""
    jwt_issuer: str | None = None
    allowed_tenants: frozenset[str] | None = None
    """ALLOWED_TENANTS, a comma list; None allows every tenant."""
    app: str = "streamer.demo:app"
    """STREAMER_APP."""
    cancel_on_disconnect: bool = False
    dynamodb_endpoint_url: str | None = None
    rate_limit_per_minute: int = 100
    max_message_bytes: int = 128 * 1024
    progress_max_per_s: float = 10.0
    """PROGRESS_MAX_PER_SECOND; 0 turns throttling off."""
    progress_persist_interval_s: float = 1.0
    """PROGRESS_PERSIST_INTERVAL_SECONDS."""
    lease_grace_s: float = 60.0
    """LEASE_GRACE_SECONDS: added to an action's timeout to make its lease."""

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, required: Iterable[str] = ()
    ) -> Settings:
        """Read and validate settings; `required` names env vars that must be set.

        Raises:
            SettingsError: one line naming the missing or malformed variable.
        """
        raise NotImplementedError
