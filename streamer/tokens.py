"""Dev tokens: RSA key pairs, RS256 JWT minting, and the dev key pair on disk.

Used by the emulator (no `JWT_PUBLIC_KEY` → a dev pair under `.streamer/`),
`streamer token`, and tests. Production tokens come from your identity provider.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = [
    "DEV_PRIVATE_KEY_FILE",
    "DEV_PUBLIC_KEY_FILE",
    "DevKeys",
    "generate_rsa_key_pair",
    "load_or_create_dev_keys",
    "mint_token",
    "public_key_of",
]

DEV_PRIVATE_KEY_FILE = "dev_private.pem"
DEV_PUBLIC_KEY_FILE = "dev_public.pem"


def generate_rsa_key_pair(bits: int = 2048) -> tuple[str, str]:
    """A new RSA key pair: (private key, PKCS#8 PEM; public key, SPKI PEM)."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _private_pem(private_key), _public_pem(private_key.public_key())


def public_key_of(private_key_pem: str) -> str:
    """The SPKI PEM public key of an RSA private key PEM.

    Raises:
        ValueError: not an RSA private key in PEM.
    """
    return _public_pem(_load_private_key(private_key_pem).public_key())


def mint_token(
    private_key_pem: str,
    *,
    sub: str,
    tenant_id: str,
    ttl_s: float = 3600,
    permissions: Iterable[str] = (),
    issuer: str | None = None,
    now: datetime | None = None,
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """An RS256 JWT with `sub`, `tenant_id`, `permissions`, `iat`, `nbf`, `exp`.

    Args:
        private_key_pem: the RSA private key (PEM) that signs.
        sub: the user id.
        tenant_id: the tenant id.
        ttl_s: seconds until `exp` (default one hour).
        permissions: stored as a list.
        issuer: `iss`, when given.
        now: the issue time (default: the system clock), so tests can pin it.
        extra_claims: merged last, so they may override any claim above.
    """
    issued_at = int((now or datetime.now(UTC)).timestamp())
    claims: dict[str, Any] = {
        "sub": sub,
        "tenant_id": tenant_id,
        "permissions": list(permissions),
        "iat": issued_at,
        "nbf": issued_at,
        "exp": issued_at + int(ttl_s),
    }
    if issuer is not None:
        claims["iss"] = issuer
    claims.update(extra_claims or {})
    return jwt.encode(claims, _load_private_key(private_key_pem), algorithm="RS256")


@dataclass(frozen=True, slots=True)
class DevKeys:
    """The development key pair kept on disk.

    Args:
        private_pem: PKCS#8 PEM, signs dev tokens.
        public_pem: SPKI PEM, what `JWT_PUBLIC_KEY` is set to.
        directory: where `dev_private.pem` and `dev_public.pem` live.
    """

    private_pem: str
    public_pem: str
    directory: Path

    @property
    def private_path(self) -> Path:
        """The private key file (mode 0600)."""
        return self.directory / DEV_PRIVATE_KEY_FILE

    @property
    def public_path(self) -> Path:
        """The public key file."""
        return self.directory / DEV_PUBLIC_KEY_FILE


def load_or_create_dev_keys(directory: Path) -> DevKeys:
    """The dev key pair in `directory`, made on first use and reused after.

    The private key is the source of truth: the public file is rewritten from
    it when missing or stale. Concurrent first calls agree on one key (the
    private file is created exclusively).

    Raises:
        ValueError: the private key file exists but is not an RSA private key.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_path = directory / DEV_PRIVATE_KEY_FILE
    if not private_path.exists():
        private_pem, _ = generate_rsa_key_pair()
        try:
            fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first; use theirs
        else:
            with os.fdopen(fd, "w", encoding="ascii") as file:
                file.write(private_pem)
    private_pem = private_path.read_text(encoding="ascii")
    try:
        public_pem = public_key_of(private_pem)
    except ValueError as exc:
        raise ValueError(f"{private_path}: {exc}") from None
    public_path = directory / DEV_PUBLIC_KEY_FILE
    if not public_path.exists() or public_path.read_text(encoding="ascii") != public_pem:
        temporary = public_path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(public_pem, encoding="ascii")
        os.replace(temporary, public_path)
    return DevKeys(private_pem=private_pem, public_pem=public_pem, directory=directory)


def _load_private_key(private_key_pem: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(private_key_pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError):
        raise ValueError("private key is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("private key is not an RSA key")
    return key


def _private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def _public_pem(key: rsa.RSAPublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
