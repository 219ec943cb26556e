"""Helpers to drive an in-process emulator from tests: a harness with its URLs,
token minting and connecting, and message helpers that wait with a timeout
(never a sleep)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from websockets.asyncio.client import ClientConnection, connect

from emulator.server import Emulator
from streamer.frames import split_into_frames
from streamer.tokens import mint_token

__all__ = [
    "MESSAGE_TIMEOUT_S",
    "EmulatorHarness",
    "is_final_for",
    "recv_json",
    "recv_until",
    "request",
    "send_json",
]

MESSAGE_TIMEOUT_S = 15.0
"""How long a helper waits for one expected message before failing."""


@dataclass
class EmulatorHarness:
    """A running emulator and ways to talk to it (what the `emulator` fixture yields).

    Args:
        emulator: the running `Emulator`.
        private_pem: signs test tokens (its public key is the emulator's JWT key).
    """

    emulator: Emulator
    private_pem: str

    @property
    def ws_url(self) -> str:
        """`ws://127.0.0.1:PORT` of the WebSocket API."""
        return self.emulator.ws_url

    @property
    def http_url(self) -> str:
        """`http://127.0.0.1:PORT` of the HTTP side."""
        return self.emulator.http_url

    def mint_token(self, sub: str = "user-1", tenant: str = "tenant-1", **claims: Any) -> str:
        """A valid token for `sub` in `tenant` (extra claims override)."""
        return mint_token(
            self.private_pem, sub=sub, tenant_id=tenant, ttl_s=600, extra_claims=claims or None
        )

    def signed_headers(
        self, method: str, url: str, body: str | bytes = b"", *, region: str = "us-east-1"
    ) -> dict[str, str]:
        """Headers that sign a management-API call with the emulator's dev credentials
        (SigV4, service `execute-api`), as boto3's client would; `url` percent-encoded."""
        credentials = self.emulator.management_credentials
        assert credentials is not None, "the emulator is not started"
        data = body.encode("utf-8") if isinstance(body, str) else body
        signed = AWSRequest(method=method, url=url, data=data)
        SigV4Auth(
            Credentials(credentials.access_key_id, credentials.secret_access_key),
            "execute-api",
            region,
        ).add_auth(signed)
        headers: dict[str, Any] = dict(signed.headers.items())  # botocore gives some as bytes
        return {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in headers.items()}

    @contextlib.asynccontextmanager
    async def connect(
        self, sub: str = "user-1", tenant: str = "tenant-1", *, path: str = ""
    ) -> AsyncIterator[ClientConnection]:
        """A WebSocket connected with a fresh token for `sub` in `tenant`, closed
        when the block ends."""
        url = f"{self.ws_url}{path}?Authorization={self.mint_token(sub, tenant)}"
        async with connect(url, open_timeout=MESSAGE_TIMEOUT_S, max_size=None) as ws:
            yield ws


async def recv_json(ws: ClientConnection, timeout_s: float = MESSAGE_TIMEOUT_S) -> dict[str, Any]:
    """The next message, decoded; fails after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        frame = await ws.recv()
    message: dict[str, Any] = json.loads(frame)
    return message


async def send_json(ws: ClientConnection, body: dict[str, Any]) -> None:
    """Send one JSON text message, fragmented over 32 KB as API Gateway requires."""
    pieces = split_into_frames(json.dumps(body))
    await ws.send(pieces[0] if len(pieces) == 1 else pieces)


async def request(ws: ClientConnection, body: dict[str, Any]) -> dict[str, Any]:
    """Send a frame and return the next message (for built-ins and sync actions)."""
    await send_json(ws, body)
    return await recv_json(ws)


async def recv_until(
    ws: ClientConnection,
    is_last: Callable[[dict[str, Any]], bool],
    timeout_s: float = MESSAGE_TIMEOUT_S,
) -> list[dict[str, Any]]:
    """Every message up to and including the first for which `is_last` is true."""
    received: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout_s):
        while True:
            message = json.loads(await ws.recv())
            received.append(message)
            if is_last(message):
                return received


def is_final_for(request_id: str) -> Callable[[dict[str, Any]], bool]:
    """True for the `complete` or `error` message of one request."""
    return lambda m: m.get("request_id") == request_id and m["type"] in ("complete", "error")
