"""JWT verification: RS256 only, claims checked per DESIGN §4, → `Identity`."""

from __future__ import annotations

from collections.abc import Mapping

from streamer.errors import StreamerError
from streamer.models import Identity
from streamer.ports import Clock

__all__ = ["AuthError", "TokenVerifier", "token_from_request"]


class AuthError(StreamerError):
    """A token was refused; `reason` is for logs, the client sees UNAUTHORIZED."""

    def __init__(self, reason: str) -> None:
        super().__init__("UNAUTHORIZED", "Unauthorized")
        self.reason = reason


class TokenVerifier:
    """Verifies RS256 JWTs against one public key.

    Args:
        public_key_pem: the RSA public key, PEM, PKCS#1 or SPKI.
        clock: where "now" comes from (exp, nbf, iat checks).
        issuer: when set, `iss` must equal it.
        max_iat_skew_s: how far in the future `iat` may be (default 60).

    Raises:
        ValueError: the key is not an RSA public key in PEM (one clear line).
    """

    def __init__(
        self,
        public_key_pem: str,
        *,
        clock: Clock,
        issuer: str | None = None,
        max_iat_skew_s: float = 60.0,
    ) -> None:
        raise NotImplementedError

    def verify(self, token: str) -> Identity:
        """The identity in a valid token (`sub`, `tenant_id`, optional `permissions`).

        Raises:
            AuthError: any reason the token is not acceptable.
        """
        raise NotImplementedError


def token_from_request(
    query: Mapping[str, str] | None, headers: Mapping[str, str] | None
) -> str | None:
    """The token from `?Authorization=<JWT>` or `Authorization: Bearer <JWT>`
    (header names case-insensitive); None when absent."""
    raise NotImplementedError
