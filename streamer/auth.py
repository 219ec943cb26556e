"""JWT verification: RS256 only, claims checked per DESIGN §4, → `Identity`."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from streamer.bounded import remember
from streamer.errors import StreamerError
from streamer.keys import MAX_KID_CHARS, KeyRing
from streamer.models import Identity, TenantId, UserId
from streamer.pem import load_public_key, load_public_keys
from streamer.ports import Clock

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

# PyJWT (with cryptography, ~50 ms to import) is imported where a token is decoded:
# the core services import this module in every Lambda function, and only the
# connect function verifies tokens.

__all__ = [
    "MAX_TOKEN_BYTES",
    "AuthError",
    "HandshakeValues",
    "TokenVerifier",
    "load_public_key",
    "load_public_keys",
    "token_from_request",
]

MAX_TOKEN_BYTES = 8 * 1024
"""Longer tokens are refused before any parsing."""
MAX_ID_CLAIM_CHARS = 256
_ALGORITHM = "RS256"
VERIFIED_TOKENS = 1024
"""How many signature-checked tokens `authenticate` remembers (the newest used)."""


class AuthError(StreamerError):
    """A token was refused; `reason` is for logs, the client sees UNAUTHORIZED."""

    def __init__(self, reason: str) -> None:
        super().__init__("UNAUTHORIZED", "Unauthorized")
        self.reason = reason


class TokenVerifier:
    """Verifies RS256 JWTs against static keys or an identity provider's JWKS.

    Args:
        public_key_pem: one or more RSA public keys, PEM, PKCS#1 or SPKI (several
            blocks rotate keys); None or "" with `keys` only.
        clock: where "now" comes from (exp, nbf, iat checks).
        issuer: when set, `iss` must equal it.
        audience: when set, `aud` must equal it (or, a list, contain it).
        keys: the key ring to use instead of one built from `public_key_pem`
            (how a JWKS is configured, see `streamer.keys.KeyRing`).
        max_iat_skew_s: how far in the future `iat` may be (default 60).

    Raises:
        ValueError: a key is not an RSA public key in PEM (one clear line).
    """

    def __init__(
        self,
        public_key_pem: str | None = None,
        *,
        clock: Clock,
        issuer: str | None = None,
        audience: str | None = None,
        keys: KeyRing | None = None,
        max_iat_skew_s: float = 60.0,
    ) -> None:
        if keys is None:
            keys = KeyRing(load_public_keys(public_key_pem or ""), clock=clock)
        self._keys = keys
        self._clock = clock
        self._issuer = issuer
        self._audience = audience
        self._max_iat_skew_s = max_iat_skew_s
        self._verified: OrderedDict[str, tuple[str | None, RSAPublicKey, dict[str, Any]]] = (
            OrderedDict()
        )
        """token → its `kid`, the key that verified it, its claims."""

    def verify(self, token: str) -> Identity:
        """The identity in a valid token (`sub`, `tenant_id`, optional `permissions`),
        checked against the keys known now (a JWKS is never fetched here; see
        `authenticate`).

        `exp` is required; `nbf` and `iat` are checked when present; every time
        check uses the injected clock.

        Raises:
            AuthError: any reason the token is not acceptable.
        """
        kid = self._header_kid(token)
        return self._accept(self._signed(token, self._keys.cached(kid), kid)[0])

    async def authenticate(self, token: str) -> Identity:
        """As `verify`, but a token naming a `kid` no cached key has may fetch the
        JWKS first (off the event loop, paced by the key ring).

        Raises:
            AuthError: any reason the token is not acceptable.
        """
        remembered = self._verified.get(token)
        if remembered is not None:
            kid, key, claims = remembered
            # The signature stands while the ring still holds that very key (asked
            # as for any token, so an old JWKS is fetched again); the times, the
            # issuer and the audience are checked again on every use.
            # (Other calls may change the cache while this one waits on the ring.)
            if any(known is key for known in await self._keys.candidates(kid)):
                try:
                    identity = self._accept(claims)
                except AuthError:
                    self._verified.pop(token, None)  # expired: it never passes again
                    raise
                if token in self._verified:
                    self._verified.move_to_end(token)
                return identity
            self._verified.pop(token, None)
        kid = self._header_kid(token)
        claims, key = self._signed(token, await self._keys.candidates(kid), kid)
        identity = self._accept(claims)
        remember(self._verified, token, (kid, key, claims), VERIFIED_TOKENS)
        return identity

    def _header_kid(self, token: str) -> str | None:
        import jwt

        if not token:
            raise AuthError("missing token")
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError(f"token longer than {MAX_TOKEN_BYTES} bytes")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        algorithm = header.get("alg")
        if algorithm != _ALGORITHM:
            shown = algorithm[:16] if isinstance(algorithm, str) else type(algorithm).__name__
            raise AuthError(f"algorithm {shown!r} refused (RS256 only)")
        kid = header.get("kid")
        if kid is None:
            return None
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS:
            raise AuthError("kid has a forbidden shape")
        return kid

    def _signed(
        self, token: str, candidates: tuple[RSAPublicKey, ...], kid: str | None
    ) -> tuple[dict[str, Any], RSAPublicKey]:
        if not candidates:
            raise AuthError("unknown kid" if kid is not None else "no verification key")
        return self._decode(token, candidates)

    def _accept(self, claims: Mapping[str, Any]) -> Identity:
        """The identity in signature-checked `claims`, once their times (now),
        issuer and audience pass."""
        self._check_times(claims)
        if self._issuer is not None and claims.get("iss") != self._issuer:
            raise AuthError("wrong issuer")
        if self._audience is not None and not _has_audience(claims, self._audience):
            raise AuthError("wrong audience")
        return Identity(
            user_id=UserId(_id_claim(claims, "sub")),
            tenant_id=TenantId(_id_claim(claims, "tenant_id")),
            permissions=_permissions(claims),
        )

    def _decode(
        self, token: str, candidates: tuple[RSAPublicKey, ...]
    ) -> tuple[dict[str, Any], RSAPublicKey]:
        """The claims of a token whose signature one of `candidates` checks, and that key."""
        import jwt

        for key in candidates:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
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
                continue
            except jwt.PyJWTError as exc:
                raise AuthError(f"malformed token ({type(exc).__name__})") from None
            return claims, key
        raise AuthError("bad signature")

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


def _has_audience(claims: Mapping[str, Any], audience: str) -> bool:
    value = claims.get("aud")
    if isinstance(value, str):
        return value == audience
    return isinstance(value, list) and audience in value


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
