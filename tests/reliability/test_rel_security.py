"""Security over real sockets: the JWT attack matrix at the handshake, tenant and
user isolation that looks exactly like an unknown id, logs free of tokens,
payloads and results, and servers that bind to loopback unless told otherwise."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import jwt
import pytest
from conftest import EmulatorStarter, Runs
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidMessage, InvalidStatus

from emulator.__main__ import parse_config
from emulator.server import EmulatorConfig
from emulator.testing import EmulatorHarness, is_final_for, recv_until, request
from streamer.logs import JsonFormatter
from streamer.settings import Settings
from streamer.tokens import generate_rsa_key_pair, mint_token

ISSUER = "https://issuer.reliability.test"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{head}.{body}.{_b64(signature)}"


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "mallory",
        "tenant_id": "tenant-1",
        "iss": ISSUER,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _hs256_with_public_key(public_pem: str, claims: dict[str, Any]) -> str:
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = hmac.new(public_pem.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


def _tampered(token: str) -> str:
    head, body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = "admin"
    return f"{head}.{_b64(json.dumps(claims).encode())}.{signature}"


def _count_items(settings: Settings, table: str) -> int:
    client = boto3.client(
        "dynamodb", endpoint_url=settings.dynamodb_endpoint_url, region_name="us-east-1"
    )
    # Connection records only: the table also holds the ActiveConnections counter
    # item, which has no UserID.
    records = "attribute_exists(UserID)"
    return int(client.scan(TableName=table, Select="COUNT", FilterExpression=records)["Count"])


async def _stored_connections(harness: EmulatorHarness) -> int:
    settings = harness.emulator.settings
    return await asyncio.to_thread(_count_items, settings, settings.connections_table)


async def _handshake_status(url: str, headers: dict[str, str] | None = None) -> int:
    """The HTTP status the handshake ends with (101 when it is accepted)."""
    try:
        async with connect(url, additional_headers=headers, open_timeout=10):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code
    except InvalidMessage:
        return 0  # the server dropped the request without a response


# -- the JWT attack matrix ---------------------------------------------------------------


async def test_every_forged_or_invalid_token_is_refused_with_401_and_stores_nothing(
    start_emulator: EmulatorStarter, rel_keys: tuple[str, str]
) -> None:
    private_pem, public_pem = rel_keys
    other_private, _ = generate_rsa_key_pair()
    now = int(time.time())

    def signed(**overrides: Any) -> str:
        claims = _claims(**overrides)
        return mint_token(
            private_pem,
            sub=str(claims.pop("sub", "")),
            tenant_id=str(claims.pop("tenant_id", "")),
            extra_claims=claims,
        )

    def raw(claims: dict[str, Any], key: str = private_pem, **header: Any) -> str:
        return jwt.encode(claims, key, algorithm="RS256", headers=header or None)

    valid = signed()
    query_cases: dict[str, str] = {
        "alg none": _unsigned({"alg": "none", "typ": "JWT"}, _claims()),
        "alg None": _unsigned({"alg": "None"}, _claims()),
        "alg none with a signature": _unsigned({"alg": "none"}, _claims(), b"sig"),
        "HS256 signed with the public key": _hs256_with_public_key(public_pem, _claims()),
        "RS512 with the right key": jwt.encode(_claims(), private_pem, algorithm="RS512"),
        "PS256 with the right key": jwt.encode(_claims(), private_pem, algorithm="PS256"),
        "expired": signed(iat=now - 7200, nbf=now - 7200, exp=now - 3600),
        "expired a second ago": signed(exp=now - 1),
        "nbf in the future": signed(nbf=now + 3600),
        "iat in the future": signed(iat=now + 3600),
        "wrong issuer": signed(iss="https://evil.test"),
        "no issuer": raw(_claims(iss=None)),
        "signed by another key": raw(_claims(), other_private),
        "another key announced by kid/jku": raw(
            _claims(), other_private, kid="evil", jku="https://evil.test/jwks"
        ),
        "no sub": raw(_claims(sub=None)),
        "no tenant_id": raw(_claims(tenant_id=None)),
        "no exp": raw(_claims(exp=None)),
        "empty sub": raw(_claims(sub="")),
        "sub is a number": raw(_claims(sub=42)),
        "tenant with a key separator": raw(_claims(tenant_id="tenant-1#alice")),
        "exp is a string": raw(_claims(exp="never")),
        "permissions not a list": raw(_claims(permissions="admin")),
        "tampered payload": _tampered(valid),
        "signature stripped": valid.rsplit(".", 1)[0] + ".",
        "two segments": valid.rsplit(".", 1)[0],
        "garbage": "not-a-jwt",
        "empty": "",
        "just Bearer": "Bearer",
        "token 8000 chars long": "e" * 8000,
        "valid token with junk appended": valid + "A" * 40,
    }
    header_cases: dict[str, dict[str, str]] = {
        "Basic scheme in the header": {"Authorization": f"Basic {valid}"},
        "token in a custom header": {"X-Authorization": valid},
        "token in a cookie": {"Cookie": f"Authorization={valid}"},
        "token as a subprotocol": {"Sec-WebSocket-Protocol": valid},
        "forged token in the header": {"Authorization": f"Bearer {_tampered(valid)}"},
        "three words in the header": {"Authorization": f"Bearer {valid} extra"},
    }

    async with start_emulator(settings={"jwt_issuer": ISSUER}) as harness:
        url = harness.ws_url
        refused: dict[str, int] = {}
        for name, token in query_cases.items():
            refused[name] = await _handshake_status(f"{url}/?Authorization={token}")
        for name, headers in header_cases.items():
            refused[name] = await _handshake_status(f"{url}/", headers)
        refused["token in another query parameter"] = await _handshake_status(
            f"{url}/?token={valid}"
        )
        refused["forged query beats a valid header"] = await _handshake_status(
            f"{url}/?Authorization={_tampered(valid)}", {"Authorization": f"Bearer {valid}"}
        )
        # Longer than an HTTP request line may be: refused before the token is read.
        huge = await _handshake_status(f"{url}/?Authorization={'e' * 70_000}")
        huge_header = await _handshake_status(f"{url}/", {"Authorization": "e" * 70_000})

        stored = await _stored_connections(harness)
        accepted_query = await _handshake_status(f"{url}/?Authorization={valid}")
        accepted_header = await _handshake_status(f"{url}/", {"Authorization": f"Bearer {valid}"})
        accepted_stage = await _handshake_status(f"{url}/prod?Authorization={valid}")

    wrong = {name: status for name, status in refused.items() if status != 401}
    assert wrong == {}, f"not refused with 401: {wrong}"
    assert huge in (400, 401, 414, 431), huge
    assert huge_header in (400, 401, 431), huge_header
    assert stored == 0, "a refused handshake stored a connection"
    assert (accepted_query, accepted_header, accepted_stage) == (101, 101, 101)


async def test_two_authorization_values_are_refused_with_401_and_store_nothing(
    start_emulator: EmulatorStarter,
) -> None:
    """Before, the valid one of two query values won; ambiguity is now refused."""
    async with start_emulator() as harness:
        url = harness.ws_url
        valid = harness.mint_token("alice", "tenant-1")
        other = harness.mint_token("mallory", "tenant-1")
        forged = _tampered(valid)
        statuses = {
            "forged then valid query": await _handshake_status(
                f"{url}/?Authorization={forged}&Authorization={valid}"
            ),
            "valid then forged query": await _handshake_status(
                f"{url}/?Authorization={valid}&Authorization={forged}"
            ),
            "the same token twice in the query": await _handshake_status(
                f"{url}/?Authorization={valid}&authorization={valid}"
            ),
            "query and a different header": await _handshake_status(
                f"{url}/?Authorization={valid}", {"Authorization": f"Bearer {other}"}
            ),
        }
        stored = await _stored_connections(harness)
        same_in_both = await _handshake_status(
            f"{url}/?Authorization={valid}", {"Authorization": f"Bearer {valid}"}
        )

    assert statuses == dict.fromkeys(statuses, 401)
    assert stored == 0, "an ambiguous handshake stored a connection"
    assert same_in_both == 101


# -- isolation ---------------------------------------------------------------------------


async def test_other_users_and_tenants_see_a_request_exactly_as_an_unknown_id(
    emulator: EmulatorHarness, runs: Runs
) -> None:
    secret = f"r-secret-{uuid.uuid4().hex[:8]}"
    async with (
        emulator.connect("alice", "tenant-1") as owner,
        emulator.connect("alice", "tenant-1") as owner_again,
        emulator.connect("bob", "tenant-1") as neighbour,
        emulator.connect("alice", "tenant-2") as namesake,
        emulator.connect("eve", "tenant-2") as stranger,
    ):
        ack = await request(owner, {"id": secret, "action": "gated", "payload": {"gate": secret}})
        assert ack["type"] == "acknowledgment"
        async with asyncio.timeout(10):
            await runs.started_event(secret).wait()

        attackers = {"neighbour": neighbour, "namesake": namesake, "stranger": stranger}
        targets = [secret, f"tenant-1#alice#{secret}", f"alice#{secret}", f"#alice#{secret}"]
        differences: list[str] = []
        for who, ws in attackers.items():
            for action in ("status", "subscribe", "cancel"):
                unknown = await request(
                    ws,
                    {"id": "probe", "action": action, "payload": {"request_id": "r-never-made"}},
                )
                assert unknown["type"] == "error"
                assert unknown["error"]["code"] == "NOT_FOUND"
                for target in targets:
                    probed = await request(
                        ws, {"id": "probe", "action": action, "payload": {"request_id": target}}
                    )
                    if _without_timestamp(probed) != _without_timestamp(unknown):
                        differences.append(f"{who} {action} {target}: {probed}")
        assert differences == []

        # The owner's other connection sees it; nothing the attackers did touched it.
        seen = await request(
            owner_again, {"id": "mine", "action": "status", "payload": {"request_id": secret}}
        )
        assert seen["data"]["status"] == "PROCESSING"
        runs.gate(secret).set()
        finals = await recv_until(owner, is_final_for(secret))
        assert finals[-1]["type"] == "complete"
        assert runs.count[secret] == 1
        for ws in attackers.values():
            pong = await request(ws, {"id": "after", "action": "ping"})
            assert pong["request_id"] == "after", f"an attacker received {pong}"


def _without_timestamp(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "timestamp"}


# -- logs ----------------------------------------------------------------------------------


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._json = JsonFormatter()
        self._plain = logging.Formatter("%(name)s %(levelname)s %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self._json.format(record))
        self.lines.append(self._plain.format(record))
        self.lines.append(repr(record.__dict__))


@contextmanager
def _capture_logs(levels: dict[str, int]) -> Iterator[_Capture]:
    capture = _Capture()
    root = logging.getLogger()
    saved = {name: logging.getLogger(name).level for name in levels}
    root.addHandler(capture)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


async def _full_flow(harness: EmulatorHarness, marker: str) -> str:
    """Connect, run a sync and an async action and an invalid one with marker
    values, fetch the result again, be refused once; return the token used."""
    token = harness.mint_token("logged-user", "tenant-1")
    async with connect(f"{harness.ws_url}/?Authorization={token}", open_timeout=10) as ws:
        echoed = await request(
            ws, {"id": "e1", "action": "echo", "payload": {"secret": f"payload-{marker}"}}
        )
        assert echoed["data"]["echo"]["secret"] == f"payload-{marker}"
        ack = await request(
            ws, {"id": "s1", "action": "steps", "payload": {"steps": 3, "marker": marker}}
        )
        assert ack["type"] == "acknowledgment"
        finals = await recv_until(ws, is_final_for("s1"))
        assert finals[-1]["result"]["marker"] == f"result-{marker}"
        invalid = await request(
            ws, {"id": "v1", "action": "steps", "payload": {"steps": f"payload-{marker}"}}
        )
        assert invalid["error"]["code"] == "VALIDATION_ERROR"
        status = await request(
            ws, {"id": "q1", "action": "status", "payload": {"request_id": "s1"}}
        )
        assert status["data"]["result"]["marker"] == f"result-{marker}"
    assert await _handshake_status(f"{harness.ws_url}/?Authorization={token}x") == 401
    return token


@pytest.mark.parametrize(
    ("level", "websockets_level"),
    [
        pytest.param(logging.INFO, logging.INFO, id="info"),
        pytest.param(logging.DEBUG, logging.INFO, id="debug-own-code"),
        pytest.param(logging.DEBUG, logging.DEBUG, id="debug-everything"),
    ],
)
async def test_logs_of_a_full_flow_never_contain_the_token_payload_or_result(
    start_emulator: EmulatorStarter, runs: Runs, level: int, websockets_level: int
) -> None:
    """Every record (our loggers at `level`, libraries at INFO) is searched for the
    token's signature, a payload value and a result value."""
    marker = uuid.uuid4().hex
    levels = {
        "": logging.INFO,
        "streamer": level,
        "emulator": level,
        "adapters": level,
        "emulator.websockets": websockets_level,
    }
    with _capture_logs(levels) as capture:
        async with start_emulator() as harness:
            token = await _full_flow(harness, marker)
    text = "\n".join(capture.lines)
    assert len(capture.lines) > 10, "nothing was captured"
    signature = token.rsplit(".", 1)[1]
    leaks = [
        needle
        for needle in (f"payload-{marker}", f"result-{marker}", marker, signature[:20])
        if needle in text
    ]
    assert leaks == [], next(line for line in capture.lines if any(n in line for n in leaks))


# -- binding -----------------------------------------------------------------------------


def test_the_emulator_binds_to_loopback_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMULATOR_HOST", raising=False)

    assert EmulatorConfig().host == "127.0.0.1"
    assert parse_config([]).host == "127.0.0.1"


async def test_the_websocket_api_console_and_management_api_listen_on_loopback_only(
    start_emulator: EmulatorStarter,
) -> None:
    config_host = EmulatorConfig().host
    async with start_emulator(host=config_host) as harness:
        emulator = harness.emulator
        assert emulator.gateway is not None
        assert emulator.http is not None
        ws_port = emulator.gateway.port
        http_port = emulator.http.port
        addresses = {
            sock.getsockname()[0]
            for sock in emulator.gateway._server.sockets  # type: ignore[union-attr]
        }
        outside = _outside_address()
        reachable_elsewhere = [
            port
            for port in (ws_port, http_port)
            if await asyncio.to_thread(_reachable, outside, port)
        ]
    assert addresses == {"127.0.0.1"}
    assert reachable_elsewhere == []


async def test_other_interfaces_are_served_only_when_asked_for(
    start_emulator: EmulatorStarter,
) -> None:
    """The control of the test above: the same probe does reach a server bound to
    every interface, so its negative result means something."""
    outside = _outside_address()
    if outside.startswith("127."):
        pytest.skip("this machine has no non-loopback address")
    async with start_emulator(host="0.0.0.0") as harness:
        assert harness.emulator.gateway is not None
        assert harness.emulator.http is not None
        ports = (harness.emulator.gateway.port, harness.emulator.http.port)
        reachable = [port for port in ports if await asyncio.to_thread(_reachable, outside, port)]
    assert reachable == list(ports)


def _outside_address() -> str:
    """This machine's address on a non-loopback interface (or loopback if none)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent
        return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


def _reachable(host: str, port: int) -> bool:
    if host.startswith("127."):
        return False
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False
