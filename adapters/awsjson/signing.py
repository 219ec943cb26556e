"""SigV4 for JSON-protocol `POST`s, as botocore's `SigV4Auth` signs them, with the
signing key kept per day instead of derived on every call.

moto (and DynamoDB Local) choose the region from the credential scope and the
account from the access key, so a real signature over the same credentials
reaches the same tables as botocore's clients do.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Final

__all__ = ["SigV4Signer", "StaticCredentials"]

_ALGORITHM: Final = "AWS4-HMAC-SHA256"


@dataclass(frozen=True, slots=True)
class StaticCredentials:
    """An access key pair, and its session token when it has one.

    Args:
        access_key: the access key id.
        secret_key: its secret.
        token: the session token, or None.
    """

    access_key: str
    secret_key: str
    token: str | None = None


class SigV4Signer:
    """Signs `POST` requests to one host for one service and region.

    Args:
        credentials: who signs.
        region: the credential scope's region.
        service: the signing name (DynamoDB Streams signs as `dynamodb`).
        host: the `Host` header's value.
        path: the request path (`/`).
    """

    def __init__(
        self, credentials: StaticCredentials, *, region: str, service: str, host: str, path: str
    ) -> None:
        self._credentials = credentials
        self._region = region
        self._service = service
        self._host = host
        self._path = path
        self._day = ""
        self._key = b""
        self._scope_tail = f"/{region}/{service}/aws4_request"

    def headers(
        self, *, target: str, content_type: str, body: bytes, now: float | None = None
    ) -> str:
        """The signed request's headers as one HTTP block (each line ends in CRLF),
        `Authorization` included.

        Args:
            target: the `X-Amz-Target` value.
            content_type: the `Content-Type` value.
            body: the request body.
            now: seconds since the epoch (the current time when None).
        """
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        day = amz_date[:8]
        if day != self._day:
            self._key = self._signing_key(day)
            self._day = day
        credentials = self._credentials
        token = credentials.token
        if token is None:
            signed = "content-type;host;x-amz-date;x-amz-target"
            canonical_headers = (
                f"content-type:{content_type}\nhost:{self._host}\n"
                f"x-amz-date:{amz_date}\nx-amz-target:{target}\n"
            )
        else:
            signed = "content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
            canonical_headers = (
                f"content-type:{content_type}\nhost:{self._host}\nx-amz-date:{amz_date}\n"
                f"x-amz-security-token:{token}\nx-amz-target:{target}\n"
            )
        canonical = (
            f"POST\n{self._path}\n\n{canonical_headers}\n{signed}\n"
            f"{hashlib.sha256(body).hexdigest()}"
        )
        scope = f"{day}{self._scope_tail}"
        string_to_sign = (
            f"{_ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        signature = hmac.digest(self._key, string_to_sign.encode(), "sha256").hex()
        lines = (
            f"Host: {self._host}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"X-Amz-Target: {target}\r\n"
            f"X-Amz-Date: {amz_date}\r\n"
        )
        if token is not None:
            lines += f"X-Amz-Security-Token: {token}\r\n"
        return (
            f"{lines}Authorization: {_ALGORITHM} Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}\r\n"
        )

    def _signing_key(self, day: str) -> bytes:
        key = f"AWS4{self._credentials.secret_key}".encode()
        for part in (day, self._region, self._service, "aws4_request"):
            key = hmac.digest(key, part.encode(), "sha256")
        return key
