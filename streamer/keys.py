"""Verification keys: static PEMs and an identity provider's JWKS, chosen by `kid`."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from streamer.ports import Clock

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

__all__ = [
    "JWKS_MAX_AGE_S",
    "JWKS_MIN_REFETCH_S",
    "JwksFetcher",
    "JwksUnavailable",
    "KeyRing",
    "key_id_of",
    "parse_jwks",
]

logger = logging.getLogger(__name__)

JWKS_MIN_REFETCH_S = 60.0
"""Least time between two fetches of the JWKS (a storm of unknown `kid`s is one fetch)."""
JWKS_MAX_AGE_S = 3600.0
"""A JWKS older than this is fetched again at the next verification (keys the
provider retired stop being accepted); until then the cached one is used."""
MAX_JWKS_BYTES = 512 * 1024
"""A bigger JWKS document is refused unread (no provider publishes one)."""
MAX_KID_CHARS = 256


class JwksUnavailable(Exception):
    """The JWKS could not be fetched or parsed; `reason` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JwksFetcher(Protocol):
    """Fetches a JWKS document; the edges implement it off the event loop."""

    async def fetch(self, url: str) -> bytes:
        """The body of `url`.

        Raises:
            JwksUnavailable: the document could not be fetched (network, status, size).
        """
        ...


def key_id_of(key: RSAPublicKey) -> str:
    """The RFC 7638 JWK thumbprint of an RSA key (base64url SHA-256): the `kid`
    a static PEM answers to."""
    numbers = key.public_numbers()
    canonical = json.dumps(
        {"e": _b64_uint(numbers.e), "kty": "RSA", "n": _b64_uint(numbers.n)},
        separators=(",", ":"),
        sort_keys=True,
    )
    return _b64(hashlib.sha256(canonical.encode("ascii")).digest())


def parse_jwks(body: bytes) -> dict[str, RSAPublicKey]:
    """The RS256 signing keys of a JWKS document, by `kid`.

    Keys that are not RSA, are for encryption (`use: enc`), name another `alg`,
    have no `kid`, or do not parse are skipped: a provider may publish keys this
    verifier never uses.

    Raises:
        JwksUnavailable: not a JSON object with a `keys` list.
    """
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from jwt.algorithms import RSAAlgorithm
    from jwt.exceptions import InvalidKeyError

    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise JwksUnavailable("JWKS is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksUnavailable("JWKS has no 'keys' list")
    keys: dict[str, RSAPublicKey] = {}
    for entry in document["keys"]:
        if not _is_rs256_signing_key(entry):
            continue
        try:
            key = RSAAlgorithm.from_jwk(json.dumps(entry))
        except (InvalidKeyError, ValueError, TypeError, KeyError):
            continue
        if isinstance(key, RSAPublicKey):  # a JWK with private parts is not published
            keys[entry["kid"]] = key
    return keys


def _is_rs256_signing_key(entry: object) -> bool:
    if not isinstance(entry, dict) or entry.get("kty") != "RSA":
        return False
    kid = entry.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS:
        return False
    use: object = entry.get("use", "sig")
    algorithm: object = entry.get("alg", "RS256")
    return use == "sig" and algorithm == "RS256"


@dataclass(frozen=True, slots=True)
class _Fetched:
    keys: Mapping[str, RSAPublicKey]
    at_s: float
    """Monotonic time of the fetch that produced these keys."""


class KeyRing:
    """The keys a token may be signed with.

    Static keys (from `JWT_PUBLIC_KEY`) answer to their RFC 7638 thumbprint as
    `kid`, and to tokens with no `kid` or a `kid` no JWKS knows; a token without
    `kid` never causes a fetch while there are static keys. JWKS keys answer to
    their `kid` (and, with no static keys, to tokens without one). The JWKS is
    fetched lazily at first need, cached, and fetched again when a token names
    an unknown `kid` — at most once per `min_refetch_s`, whatever the number of
    such tokens, and one fetch at a time — or when the cache is older than
    `max_age_s`. A failed fetch keeps the cached keys: known `kid`s go on
    verifying, unknown ones are refused.

    Args:
        static_keys: RSA public keys always accepted.
        jwks_url: the identity provider's JWKS (None: static keys only).
        fetcher: fetches `jwks_url` (required with it).
        clock: its monotonic clock paces the fetches.
        min_refetch_s: least time between two fetch attempts.
        max_age_s: a JWKS older than this is fetched again.
    """

    def __init__(
        self,
        static_keys: Iterable[RSAPublicKey] = (),
        *,
        jwks_url: str | None = None,
        fetcher: JwksFetcher | None = None,
        clock: Clock,
        min_refetch_s: float = JWKS_MIN_REFETCH_S,
        max_age_s: float = JWKS_MAX_AGE_S,
    ) -> None:
        if jwks_url is not None and fetcher is None:
            raise ValueError("a JWKS URL needs a fetcher")
        self._static = {key_id_of(key): key for key in static_keys}
        self._jwks_url = jwks_url
        self._fetcher = fetcher
        self._clock = clock
        self._min_refetch_s = min_refetch_s
        self._max_age_s = max_age_s
        self._fetched: _Fetched | None = None
        self._last_attempt_s: float | None = None
        self._in_flight: asyncio.Task[None] | None = None
        self._attempts = 0

    @property
    def is_empty(self) -> bool:
        """True when no key could ever verify a token."""
        return not self._static and self._jwks_url is None

    @property
    def fetches(self) -> int:
        """JWKS fetch attempts so far (for tests and metrics)."""
        return self._attempts

    async def candidates(self, kid: str | None) -> tuple[RSAPublicKey, ...]:
        """The keys to try for a token with this `kid` (header value, or None).

        May fetch the JWKS (through the fetcher, off the loop) under the pacing
        rules above; never raises for an unavailable JWKS.
        """
        if kid is not None and kid in self._static:
            return (self._static[kid],)
        if self._jwks_url is not None and self._needs_fetch(kid) and self._may_fetch():
            await self._refresh()
        return self.cached(kid)

    def cached(self, kid: str | None) -> tuple[RSAPublicKey, ...]:
        """The keys to try for this `kid` among those known now (never fetches)."""
        if kid is not None and kid in self._static:
            return (self._static[kid],)
        jwks = self._fetched.keys if self._fetched is not None else {}
        if kid is not None and kid in jwks:
            return (jwks[kid],)
        if kid is None:
            return (*self._static.values(), *jwks.values())
        return tuple(self._static.values())

    def _needs_fetch(self, kid: str | None) -> bool:
        if kid is None and self._static:
            return False  # a token without `kid` is the static keys' (no fetch)
        if self._fetched is None:
            return True
        if self._clock.monotonic() - self._fetched.at_s >= self._max_age_s:
            return True
        return kid is not None and kid not in self._fetched.keys

    def _may_fetch(self) -> bool:
        if self._in_flight is not None:
            return True
        last = self._last_attempt_s
        return last is None or self._clock.monotonic() - last >= self._min_refetch_s

    async def _refresh(self) -> None:
        task = self._in_flight
        if task is None:
            self._last_attempt_s = self._clock.monotonic()
            self._attempts += 1
            task = self._in_flight = asyncio.ensure_future(self._fetch())
            task.add_done_callback(self._fetch_done)
        # Shielded: a caller cancelled while waiting must not cancel the fetch
        # the other waiters share.
        await asyncio.shield(task)

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        if self._in_flight is task:
            self._in_flight = None

    async def _fetch(self) -> None:
        assert self._jwks_url is not None
        assert self._fetcher is not None
        try:
            keys = parse_jwks(await self._fetcher.fetch(self._jwks_url))
        except Exception as exc:
            reason = exc.reason if isinstance(exc, JwksUnavailable) else type(exc).__name__
            logger.warning(
                "JWKS fetch failed; keeping the cached keys",
                extra={"outcome": "jwks_unavailable", "reason": reason},
            )
            return
        self._fetched = _Fetched(keys=keys, at_s=self._clock.monotonic())
        logger.info("JWKS fetched", extra={"outcome": "jwks_fetched", "count": len(keys)})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64_uint(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))
