"""JWT verification: RS256 only, claims checked per DESIGN §4, → `Identity`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from streamer.errors import StreamerError
from streamer.models import Identity, TenantId, UserId
from streamer.pem import load_public_key
from streamer.ports import Clock

# PyJWT (with cryptography, ~50 ms to import) is imported where a token is decoded:
# the core services import this module in every Lambda function, and only the
# connect function verifies tokens.

__all__ = [
    "MAX_TOKEN_BYTES",
    "AuthError",
    "HandshakeValues",
    "TokenVerifier",
    "load_public_key",
    "token_from_request",
]

MAX_TOKEN_BYTES = 8 * 1024
"""Longer tokens are refused before any parsing."""
MAX_ID_CLAIM_CHARS = 256
_ALGORITHM = "RS256"


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
        try:
            self._key = load_public_key(public_key_pem)
        except ValueError as exc:
            raise ValueError(f"JWT public key {exc}") from None
        self._clock = clock
        self._issuer = issuer
        self._max_iat_skew_s = max_iat_skew_s

    def verify(self, token: str) -> Identity:
        """The identity in a valid token (`sub`, `tenant_id`, optional `permissions`).

        `exp` is required; `nbf` and `iat` are checked when present; every time
        check uses the injected clock.

        Raises:
            AuthError: any reason the token is not acceptable.
        """
        if not token:
            raise AuthError("missing token")
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError(f"token longer than {MAX_TOKEN_BYTES} bytes")
        claims = self._decode(token)
        self._check_times(claims)
        if self._issuer is not None and claims.get("iss") != self._issuer:
            raise AuthError("wrong issuer")
        return Identity(
            user_id=UserId(_id_claim(claims, "sub")),
            tenant_id=TenantId(_id_claim(claims, "tenant_id")),
            permissions=_permissions(claims),
        )

    def _decode(self, token: str) -> dict[str, Any]:
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        algorithm = header.get("alg")
        if algorithm != _ALGORITHM:
            shown = algorithm[:16] if isinstance(algorithm, str) else type(algorithm).__name__
            raise AuthError(f"algorithm {shown!r} refused (RS256 only)")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                # Time claims are checked against the injected clock below;
                # PyJWT would read the system clock.
                options={
                    "verify_signature": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_iss": False,
                    "verify_aud": False,
                    "verify_sub": False,
                    "verify_jti": False,
                    "require": [],
                },
            )
        except jwt.InvalidSignatureError:
            raise AuthError("bad signature") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed token ({type(exc).__name__})") from None
        return claims

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self._clock.now().timestamp()
        exp = _time_claim(claims, "exp", required=True)
        if exp is not None and now >= exp:
            raise AuthError("token expired")
        nbf = _time_claim(claims, "nbf")
        if nbf is not None and nbf > now:
            raise AuthError("token not valid yet (nbf)")
        iat = _time_claim(claims, "iat")
        if iat is not None and iat > now + self._max_iat_skew_s:
            raise AuthError("token issued in the future (iat)")


def _time_claim(claims: Mapping[str, Any], name: str, *, required: bool = False) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise AuthError(f"missing {name}")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthError(f"{name} is not a number")
    return float(value)


def _id_claim(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value.strip():
        raise AuthError(f"missing {name}")
    # Ids go into the owner-scoped request key `<tenant>#<user>#<id>`: a `#`
    # would let two owners share a key.
    if len(value) > MAX_ID_CLAIM_CHARS or "#" in value or not value.isprintable():
        raise AuthError(f"{name} has a forbidden shape")
    return value


def _permissions(claims: Mapping[str, Any]) -> tuple[str, ...]:
    value = claims.get("permissions")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise AuthError("permissions is not a list of strings")
    return tuple(value)


HandshakeValues = Mapping[str, str] | Mapping[str, Sequence[str]]
"""Query parameters or headers: one value per name, or every value of each name."""


def token_from_request(
    query: HandshakeValues | None, headers: HandshakeValues | None
) -> str | None:
    """The token from `?Authorization=<JWT>` or `Authorization: Bearer <JWT>`
    (names case-insensitive); None when absent.

    Raises:
        AuthError: two `Authorization` values (twice in the query, twice in the
            headers, or a query value and a header that differ): which one is
            meant is ambiguous, and ambiguity is never resolved in the caller's
            favour.
    """
    from_query = _authorization_values(query)
    from_headers = _authorization_values(headers)
    if len(from_query) > 1 or len(from_headers) > 1:
        raise AuthError("two Authorization values")
    tokens = {_strip_scheme(value) for value in (*from_query, *from_headers)}
    if len(tokens) > 1:
        raise AuthError("two Authorization values")
    return next(iter(tokens), None) or None


def _authorization_values(source: HandshakeValues | None) -> list[str]:
    values: list[str] = []
    for name, value in (source or {}).items():
        if name.lower() == "authorization":
            values.extend([value] if isinstance(value, str) else value)
    return values


def _strip_scheme(value: str) -> str | None:
    parts = value.strip().split()
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1]
    if len(parts) == 1 and parts[0].lower() != "bearer":
        return parts[0]
    return None
