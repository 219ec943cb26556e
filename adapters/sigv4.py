"""SigV4 for the emulator's management API: the dev credentials it accepts, and the
check of a request's signature as API Gateway makes it (service `execute-api`).

The signature is recomputed with botocore's own signer from what arrived (method,
raw path and query, the signed headers, the body) and compared in constant time;
the refusals carry API Gateway's error types, so botocore raises what it would
against AWS.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

__all__ = [
    "CREDENTIALS_FILE",
    "MAX_CLOCK_SKEW",
    "SERVICE",
    "DevCredentials",
    "SignatureRefused",
    "load_dev_credentials",
    "load_or_create_dev_credentials",
    "verify_signature",
]

SERVICE = "execute-api"
"""The service name API Gateway's management API is signed for."""
CREDENTIALS_FILE = "management-credentials.json"
"""Where the dev credentials live under the emulator's state folder."""
MAX_CLOCK_SKEW = timedelta(minutes=5)
"""How far `X-Amz-Date` may be from now, as AWS allows."""

_ALGORITHM = "AWS4-HMAC-SHA256"
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*Signature=(?P<signature>[0-9a-f]{64})\s*$"
)
_AMZ_DATE = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True, slots=True)
class DevCredentials:
    """The access key pair the emulator's management API accepts.

    Args:
        access_key_id: `AKIA…`-shaped id, printed in the banner.
        secret_access_key: its secret.
    """

    access_key_id: str
    secret_access_key: str

    def client_kwargs(self) -> dict[str, str]:
        """`session.client(...)` keyword arguments that sign with these credentials."""
        return {
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
        }


def load_dev_credentials(directory: Path) -> DevCredentials | None:
    """The dev credentials saved under `directory`, or None when there are none
    (or the file is unreadable)."""
    try:
        saved = json.loads((directory / CREDENTIALS_FILE).read_text(encoding="utf-8"))
        return DevCredentials(str(saved["access_key_id"]), str(saved["secret_access_key"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_or_create_dev_credentials(directory: Path) -> DevCredentials:
    """The dev credentials under `directory`, made (readable by the owner only) if
    there are none yet.

    Raises:
        OSError: the folder cannot be written.
    """
    found = load_dev_credentials(directory)
    if found is not None:
        return found
    alphabet = string.ascii_uppercase + "234567"
    credentials = DevCredentials(
        access_key_id="AKIA" + "".join(secrets.choice(alphabet) for _ in range(16)),
        secret_access_key=secrets.token_urlsafe(30),
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CREDENTIALS_FILE
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump(
            {
                "access_key_id": credentials.access_key_id,
                "secret_access_key": credentials.secret_access_key,
            },
            out,
        )
    os.replace(temporary, path)
    return credentials


@dataclass(frozen=True, slots=True)
class SignatureRefused:
    """Why a request is refused (HTTP 403), in API Gateway's terms.

    Args:
        error_type: the `x-amzn-ErrorType` (`MissingAuthenticationTokenException`,
            `IncompleteSignatureException`, `InvalidSignatureException`,
            `UnrecognizedClientException`).
        message: the body's `message`.
    """

    error_type: str
    message: str


def verify_signature(
    *,
    method: str,
    raw_path: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    accepted: DevCredentials,
    now: datetime,
) -> SignatureRefused | None:
    """Check a request's SigV4 `Authorization` header; None when it is valid.

    Args:
        method: the HTTP method.
        raw_path: path and query exactly as received (percent-encoding kept).
        headers: every header as received (repeated names repeated).
        body: the request body.
        accepted: the only credentials whose signature is valid.
        now: the current time (the signature's date must be within five minutes).
    """
    received = list(headers)
    authorizations = [v for k, v in received if k.lower() == "authorization"]
    if not authorizations:
        return SignatureRefused(
            "MissingAuthenticationTokenException", "Missing Authentication Token"
        )
    if len(authorizations) > 1:
        return SignatureRefused(
            "IncompleteSignatureException", "Only one Authorization header is allowed."
        )
    match = _AUTHORIZATION.match(authorizations[0].strip())
    if match is None:
        return SignatureRefused(
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' "
            f"parameters of the {_ALGORITHM} algorithm.",
        )
    scope = match["credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        return SignatureRefused("IncompleteSignatureException", "Credential is malformed.")
    access_key_id, date, region, service, _ = scope
    if not hmac.compare_digest(access_key_id.encode(), accepted.access_key_id.encode()):
        return SignatureRefused(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    if service != SERVICE:
        return SignatureRefused(
            "InvalidSignatureException",
            f"Credential should be scoped to correct service: '{SERVICE}'.",
        )
    amz_dates = [v for k, v in received if k.lower() == "x-amz-date"]
    try:
        signed_at = datetime.strptime(amz_dates[0].strip(), _AMZ_DATE).replace(tzinfo=UTC)
    except (IndexError, ValueError):
        return SignatureRefused(
            "IncompleteSignatureException", "Authorization requires a valid X-Amz-Date header."
        )
    if abs(now - signed_at) > MAX_CLOCK_SKEW:
        return SignatureRefused(
            "InvalidSignatureException",
            f"Signature expired: {signed_at:{_AMZ_DATE}} is not within five minutes "
            f"of {now.astimezone(UTC):{_AMZ_DATE}}.",
        )
    if signed_at.strftime("%Y%m%d") != date:
        return SignatureRefused(
            "InvalidSignatureException", "Date in Credential scope does not match X-Amz-Date."
        )
    signed_names = match["signed"].split(";")
    if "host" not in signed_names or signed_names != sorted(set(signed_names)):
        return SignatureRefused(
            "InvalidSignatureException", "SignedHeaders must be sorted and include host."
        )
    expected = _signature(
        method=method,
        raw_path=raw_path,
        headers=[(k, v) for k, v in received if k.lower() in signed_names],
        body=body,
        credentials=accepted,
        region=region,
        amz_date=signed_at.strftime(_AMZ_DATE),
        signed_names=signed_names,
    )
    if expected is None or not hmac.compare_digest(expected, match["signature"]):
        return SignatureRefused(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.",
        )
    return None


def _signature(
    *,
    method: str,
    raw_path: str,
    headers: list[tuple[str, str]],
    body: bytes,
    credentials: DevCredentials,
    region: str,
    amz_date: str,
    signed_names: list[str],
) -> str | None:
    """The signature botocore computes for this request, or None when the request
    lacks a header it claims to have signed or its body does not match its hash."""
    present = HTTPHeaders()
    for name, value in headers:
        present[name.lower()] = value
    if sorted({name.lower() for name, _ in headers}) != signed_names:
        return None
    declared_hash = present.get("x-amz-content-sha256")
    if declared_hash is not None and declared_hash not in (
        hashlib.sha256(body).hexdigest(),
        "UNSIGNED-PAYLOAD",
    ):
        return None
    # A plain-HTTP URL: botocore then always hashes the payload, as the client did.
    request = AWSRequest(
        method=method.upper(), url=f"http://{present['host']}{raw_path}", data=body
    )
    request.headers = present
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(
        Credentials(credentials.access_key_id, credentials.secret_access_key), SERVICE, region
    )
    canonical = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical)
    return str(signer.signature(string_to_sign, request))
