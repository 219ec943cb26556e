"""PEM text as env vars carry it: normalised, and loaded as an RSA public key."""

from __future__ import annotations

import re
import textwrap
from typing import TYPE_CHECKING

# cryptography (~50 ms to import) is imported where a key is loaded: settings and
# the core services import this module in every Lambda function.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

__all__ = [
    "load_public_key",
    "load_public_keys",
    "normalise_pem",
    "normalise_pem_blocks",
    "split_pem_blocks",
]


def normalise_pem(text: str) -> str:
    """A PEM block with real line breaks, from the shapes env vars carry it in.

    Handles literal `\\n` sequences, surrounding quotes, and a block flattened
    onto one line with spaces. Text without a PEM block is returned stripped.
    """
    cleaned = text.strip().strip("\"'").replace("\\r", "").replace("\\n", "\n").strip()
    match = _PEM_BLOCK.search(cleaned)
    if match is None:
        return cleaned
    label, body = match.group(1), match.group(2)
    lines = "\n".join(textwrap.wrap("".join(body.split()), 64))
    return f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----\n"


_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)
_ANY_BLOCK = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?-----END [A-Z0-9 ]+-----", re.DOTALL)


def split_pem_blocks(text: str) -> tuple[str, ...]:
    """Each `-----BEGIN …-----`…`-----END …-----` block in `text`, in order
    (several PEMs in one setting rotate keys); the whole text when it has none."""
    blocks = tuple(m.group(0) for m in _ANY_BLOCK.finditer(text))
    return blocks or (text,)


def normalise_pem_blocks(text: str) -> str:
    """`normalise_pem` applied to each PEM block of `text`, concatenated."""
    cleaned = text.strip().strip("\"'").replace("\\r", "").replace("\\n", "\n")
    return "".join(normalise_pem(block) for block in split_pem_blocks(cleaned))


def load_public_keys(pems: str) -> tuple[RSAPublicKey, ...]:
    """Every RSA public key in a text of PEM blocks (several rotate keys); () for
    blank text.

    Raises:
        ValueError: a block is not an RSA public key (one line saying which).
    """
    if not pems.strip():
        return ()
    blocks = split_pem_blocks(normalise_pem_blocks(pems))
    keys = []
    for number, block in enumerate(blocks, start=1):
        try:
            keys.append(load_public_key(block))
        except ValueError as exc:
            where = f" (PEM block {number} of {len(blocks)})" if len(blocks) > 1 else ""
            raise ValueError(f"{exc}{where}") from None
    return tuple(keys)


def load_public_key(pem: str | bytes) -> RSAPublicKey:
    """The RSA public key in a PEM block (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`).

    Raises:
        ValueError: not a PEM public key, or not RSA (one line saying which).
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

    text = pem.decode("ascii", "replace") if isinstance(pem, bytes) else pem
    text = normalise_pem(text)
    if "PRIVATE KEY-----" in text:
        raise ValueError("is a private key; give the RSA public key")
    try:
        key = serialization.load_pem_public_key(text.encode("ascii", "replace"))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(
            "is not a PEM public key "
            "(expected -----BEGIN PUBLIC KEY----- or -----BEGIN RSA PUBLIC KEY-----)"
        ) from None
    if not isinstance(key, RSAPublicKey):
        raise ValueError(f"is a {type(key).__name__.lstrip('_')}, not an RSA public key")
    return key
