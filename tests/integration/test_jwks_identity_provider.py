"""Keys from an identity provider: a JWKS served over real HTTP, rotated and taken
down mid-test, verified by the emulator's handshake and the Lambda connect function."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from jwt.algorithms import RSAAlgorithm
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from streamer.auth import load_public_key
from streamer.settings import Settings
from streamer.tokens import generate_rsa_key_pair

if TYPE_CHECKING:
    from conftest import EmulatorFactory


class JwksServer:
    """A JWKS document on a loopback HTTP port; `publish` rotates it, `down` makes
    every fetch answer 503; `hits` counts the fetches."""

    def __init__(self) -> None:
        self.body = b'{"keys": []}'
        self.down = False
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                status, body = (503, b"down") if outer.down else (200, outer.body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/.well-known/jwks.json"

    def publish(self, **public_pems: str) -> None:
        """Serve these public keys, by kid."""
        keys = [
            {
                **json.loads(RSAAlgorithm.to_jwk(load_public_key(pem))),
                "kid": kid,
                "use": "sig",
                "alg": "RS256",
            }
            for kid, pem in public_pems.items()
        ]
        self.body = json.dumps({"keys": keys}).encode()

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def idp() -> Iterator[JwksServer]:
    with JwksServer() as server:
        yield server


@pytest.fixture(scope="module")
def idp_keys() -> dict[str, tuple[str, str]]:
    return {kid: generate_rsa_key_pair() for kid in ("k1", "k2", "k3")}


def idp_token(keys: dict[str, tuple[str, str]], kid: str, **claims: Any) -> str:
    import time

    now = int(time.time())
    body = {"sub": "idp-user", "tenant_id": "tenant-1", "iat": now, "exp": now + 600, **claims}
    return jwt.encode(body, keys[kid][0], algorithm="RS256", headers={"kid": kid})


async def _status(ws_url: str, token: str) -> int:
    try:
        async with connect(f"{ws_url}?Authorization={token}", open_timeout=10):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


async def test_emulator_follows_a_key_rotation_published_in_the_jwks(
    emulator_factory: EmulatorFactory, idp: JwksServer, idp_keys: dict[str, tuple[str, str]]
) -> None:
    """The key is chosen by kid; a kid published after start is fetched and accepted;
    a retired kid stays accepted only while cached; the audience is checked."""
    idp.publish(k1=idp_keys["k1"][1])
    settings = {"jwt_public_key": None, "jwt_jwks_url": idp.url, "jwt_audience": "streamer"}
    async with emulator_factory(settings=settings, jwks_min_refetch_s=0.0) as harness:
        assert harness.emulator.dev_keys is None
        assert idp.hits == 0  # fetched lazily, at the first token
        url = harness.ws_url
        assert await _status(url, idp_token(idp_keys, "k1", aud="streamer")) == 101
        assert idp.hits == 1
        assert await _status(url, idp_token(idp_keys, "k1", aud="streamer")) == 101
        assert idp.hits == 1  # cached
        assert await _status(url, idp_token(idp_keys, "k1", aud="other")) == 401

        idp.publish(k2=idp_keys["k2"][1])  # rotation: k1 retired, k2 new
        assert await _status(url, idp_token(idp_keys, "k2", aud="streamer")) == 101
        assert idp.hits == 2
        forged = idp_token({"k2": idp_keys["k3"]}, "k2", aud="streamer")
        assert await _status(url, forged) == 401


async def test_emulator_keeps_cached_keys_through_a_jwks_outage(
    emulator_factory: EmulatorFactory, idp: JwksServer, idp_keys: dict[str, tuple[str, str]]
) -> None:
    """While the JWKS answers 503, cached kids still connect and unknown kids get 401."""
    idp.publish(k1=idp_keys["k1"][1])
    settings = {"jwt_public_key": None, "jwt_jwks_url": idp.url}
    async with emulator_factory(settings=settings, jwks_min_refetch_s=0.0) as harness:
        assert await _status(harness.ws_url, idp_token(idp_keys, "k1")) == 101
        idp.down = True
        assert await _status(harness.ws_url, idp_token(idp_keys, "k3")) == 401
        assert idp.hits == 2
        assert await _status(harness.ws_url, idp_token(idp_keys, "k1")) == 101


async def test_a_storm_of_unknown_kids_fetches_the_jwks_once_a_minute(
    emulator_factory: EmulatorFactory, idp: JwksServer, idp_keys: dict[str, tuple[str, str]]
) -> None:
    """Twenty handshakes naming unpublished kids within a minute of the last fetch
    cost no fetch at all (the unit tests pace it with a manual clock)."""
    idp.publish(k1=idp_keys["k1"][1])
    settings = {"jwt_public_key": None, "jwt_jwks_url": idp.url}
    async with emulator_factory(settings=settings) as harness:
        assert await _status(harness.ws_url, idp_token(idp_keys, "k1")) == 101
        for attempt in range(20):
            kid = "k2" if attempt % 2 else "k3"
            assert await _status(harness.ws_url, idp_token(idp_keys, kid)) == 401
        assert idp.hits == 1


@pytest.fixture
def lambda_env(
    dynamodb_settings: Settings, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The connect function's environment without any key setting; a cold start each test."""
    from adapters.aws_lambda import runtime

    environment = {
        "CONNECTIONS_TABLE": dynamodb_settings.connections_table,
        "REQUESTS_TABLE": dynamodb_settings.requests_table,
        "SUBSCRIPTIONS_TABLE": dynamodb_settings.subscriptions_table,
        "DYNAMODB_ENDPOINT_URL": moto_endpoint,
        "AWS_REGION": "us-east-1",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    for name in ("JWT_PUBLIC_KEY", "JWT_JWKS_URL", "JWT_AUDIENCE", "JWT_ISSUER"):
        monkeypatch.delenv(name, raising=False)
    runtime.reset_for_tests()
    yield
    runtime.reset_for_tests()


def _handshake(connection_id: str, token: str) -> int:
    from adapters.aws_lambda import connect

    events = Path(__file__).parent.parent / "fixtures" / "lambda_events"
    event = json.loads((events / "connect.json").read_text())
    event["requestContext"]["connectionId"] = connection_id
    # API Gateway fills both maps; the handler reads every value to refuse ambiguity.
    event["queryStringParameters"] = {"Authorization": token}
    event["multiValueQueryStringParameters"] = {"Authorization": [token]}
    status: int = connect.handler(event, None)["statusCode"]
    return status


def test_lambda_connect_fetches_the_jwks_at_the_first_token_not_at_cold_start(
    lambda_env: None,
    idp: JwksServer,
    idp_keys: dict[str, tuple[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The connect function verifies an IdP token by kid; a static key alone never fetches."""
    idp.publish(k1=idp_keys["k1"][1])
    monkeypatch.setenv("JWT_PUBLIC_KEY", idp_keys["k3"][1])
    monkeypatch.setenv("JWT_JWKS_URL", idp.url)
    static = jwt.encode(
        {"sub": "u", "tenant_id": "tenant-1", "exp": 4102444800},
        idp_keys["k3"][0],
        algorithm="RS256",
    )
    assert _handshake("static-1", static) == 200
    assert idp.hits == 0
    assert _handshake("idp-1", idp_token(idp_keys, "k1")) == 200
    assert idp.hits == 1
    assert _handshake("idp-2", idp_token(idp_keys, "k2")) == 401


def test_lambda_connect_runs_on_a_jwks_alone(
    lambda_env: None,
    idp: JwksServer,
    idp_keys: dict[str, tuple[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    idp.publish(k1=idp_keys["k1"][1])
    monkeypatch.setenv("JWT_JWKS_URL", idp.url)
    monkeypatch.setenv("JWT_AUDIENCE", "streamer")
    assert _handshake("idp-1", idp_token(idp_keys, "k1", aud="streamer")) == 200
    assert _handshake("idp-2", idp_token(idp_keys, "k1", aud="someone-else")) == 401


def test_lambda_connect_without_any_key_setting_fails_its_cold_start(lambda_env: None) -> None:
    from streamer.settings import SettingsError

    with pytest.raises(SettingsError, match="JWT_PUBLIC_KEY or JWT_JWKS_URL is required"):
        _handshake("none-1", "x.y.z")
