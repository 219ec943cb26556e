"""Verification keys: JWKS parsing, `kid` choice, and the pacing of JWKS fetches."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from jwt.algorithms import RSAAlgorithm

from streamer.auth import load_public_key
from streamer.keys import (
    JWKS_MIN_REFETCH_S,
    JwksUnavailable,
    KeyRing,
    key_id_of,
    parse_jwks,
)
from streamer.pem import split_pem_blocks
from streamer.testing import ManualClock
from streamer.tokens import generate_rsa_key_pair

URL = "https://idp.example/.well-known/jwks.json"


@pytest.fixture(scope="module")
def pems() -> list[tuple[str, str]]:
    return [generate_rsa_key_pair() for _ in range(3)]


def jwk(public_pem: str, kid: str, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(load_public_key(public_pem)))
    return {**entry, "kid": kid, "use": "sig", "alg": "RS256", **extra}


def jwks(*entries: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(entries)}).encode()


class FakeFetcher:
    """Answers with `body` (or raises when it is an exception); counts calls;
    `gate`, when set, holds every fetch until it is set."""

    def __init__(self, body: bytes | Exception) -> None:
        self.body = body
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def fetch(self, url: str) -> bytes:
        assert url == URL
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if isinstance(self.body, Exception):
            raise self.body
        return self.body


def test_parse_jwks_keeps_rs256_signing_keys_by_kid(pems: list[tuple[str, str]]) -> None:
    body = jwks(
        jwk(pems[0][1], "a"),
        jwk(pems[1][1], "enc", use="enc"),
        jwk(pems[1][1], "ps", alg="PS256"),
        {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        {k: v for k, v in jwk(pems[2][1], "x").items() if k != "kid"},
    )
    keys = parse_jwks(body)
    assert list(keys) == ["a"]
    assert key_id_of(keys["a"]) == key_id_of(load_public_key(pems[0][1]))


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"keys": 3}', b"\xff"])
def test_parse_jwks_refuses_a_document_without_keys(body: bytes) -> None:
    with pytest.raises(JwksUnavailable):
        parse_jwks(body)


def test_split_pem_blocks_finds_each_block(pems: list[tuple[str, str]]) -> None:
    joined = pems[0][1] + "\n" + pems[1][1]
    assert split_pem_blocks(joined) == (pems[0][1].strip(), pems[1][1].strip())
    assert split_pem_blocks("garbage") == ("garbage",)


async def test_static_keys_answer_to_their_thumbprint_and_to_no_kid(
    pems: list[tuple[str, str]],
) -> None:
    first, second = (load_public_key(p[1]) for p in pems[:2])
    ring = KeyRing([first, second], clock=ManualClock())
    assert await ring.candidates(key_id_of(second)) == (second,)
    assert await ring.candidates(None) == (first, second)
    assert await ring.candidates("unknown") == (first, second)


async def test_jwks_is_fetched_lazily_then_cached(pems: list[tuple[str, str]]) -> None:
    fetcher = FakeFetcher(jwks(jwk(pems[0][1], "a")))
    clock = ManualClock()
    ring = KeyRing(jwks_url=URL, fetcher=fetcher, clock=clock)
    assert fetcher.calls == 0
    (key,) = await ring.candidates("a")
    assert key_id_of(key) == key_id_of(load_public_key(pems[0][1]))
    clock.advance(JWKS_MIN_REFETCH_S * 10)
    await ring.candidates("a")
    assert fetcher.calls == 1


async def test_unknown_kid_fetches_again_at_most_once_a_minute(
    pems: list[tuple[str, str]],
) -> None:
    fetcher = FakeFetcher(jwks(jwk(pems[0][1], "a")))
    clock = ManualClock()
    ring = KeyRing(jwks_url=URL, fetcher=fetcher, clock=clock)
    await ring.candidates("a")
    for _ in range(100):
        assert await ring.candidates("rotated") == ()
        clock.advance(1.0)
    assert fetcher.calls == 2  # the first fetch and one refetch in those 100 s
    fetcher.body = jwks(jwk(pems[0][1], "a"), jwk(pems[1][1], "rotated"))
    clock.advance(JWKS_MIN_REFETCH_S)
    assert len(await ring.candidates("rotated")) == 1
    assert fetcher.calls == 3


async def test_concurrent_unknown_kids_share_one_fetch(pems: list[tuple[str, str]]) -> None:
    fetcher = FakeFetcher(jwks(jwk(pems[0][1], "a")))
    fetcher.gate = asyncio.Event()
    ring = KeyRing(jwks_url=URL, fetcher=fetcher, clock=ManualClock())
    waiting = [asyncio.create_task(ring.candidates(f"kid-{i}")) for i in range(50)]
    await asyncio.sleep(0)
    fetcher.gate.set()
    results = await asyncio.gather(*waiting)
    assert results == [()] * 50
    assert fetcher.calls == 1


async def test_outage_keeps_cached_keys_and_refuses_unknown_kids(
    pems: list[tuple[str, str]],
) -> None:
    fetcher = FakeFetcher(jwks(jwk(pems[0][1], "a")))
    clock = ManualClock()
    ring = KeyRing(jwks_url=URL, fetcher=fetcher, clock=clock, max_age_s=120)
    await ring.candidates("a")
    fetcher.body = JwksUnavailable("JWKS unreachable (URLError)")
    clock.advance(JWKS_MIN_REFETCH_S)
    assert await ring.candidates("new") == ()
    clock.advance(JWKS_MIN_REFETCH_S * 3)  # past max_age: a refetch, which fails too
    assert len(await ring.candidates("a")) == 1
    assert fetcher.calls == 3


async def test_a_fetcher_bug_is_an_outage_not_a_crash(pems: list[tuple[str, str]]) -> None:
    ring = KeyRing(jwks_url=URL, fetcher=FakeFetcher(RuntimeError("boom")), clock=ManualClock())
    assert await ring.candidates("a") == ()


async def test_retired_keys_stop_verifying_once_the_cache_is_old(
    pems: list[tuple[str, str]],
) -> None:
    fetcher = FakeFetcher(jwks(jwk(pems[0][1], "old")))
    clock = ManualClock()
    ring = KeyRing(jwks_url=URL, fetcher=fetcher, clock=clock, max_age_s=600)
    assert len(await ring.candidates("old")) == 1
    fetcher.body = jwks(jwk(pems[1][1], "new"))
    clock.advance(599)
    assert len(await ring.candidates("old")) == 1
    clock.advance(1)
    assert await ring.candidates("old") == ()


def test_a_jwks_url_needs_a_fetcher() -> None:
    with pytest.raises(ValueError, match="fetcher"):
        KeyRing(jwks_url=URL, clock=ManualClock())


# -- the verifier over a key ring -------------------------------------------------


def _token(private_pem: str, clock: ManualClock, *, kid: str | None, **claims: Any) -> str:
    import jwt

    now = int(clock.now().timestamp())
    body = {"sub": "u", "tenant_id": "t", "iat": now, "exp": now + 600, **claims}
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(body, private_pem, algorithm="RS256", headers=headers)


async def test_verifier_picks_the_jwks_key_named_by_kid_and_follows_a_rotation(
    pems: list[tuple[str, str]],
) -> None:
    from streamer.auth import AuthError, TokenVerifier

    clock = ManualClock()
    fetcher = FakeFetcher(jwks(jwk(pems[0][1], "k1")))
    verifier = TokenVerifier(clock=clock, keys=KeyRing(jwks_url=URL, fetcher=fetcher, clock=clock))
    assert (await verifier.authenticate(_token(pems[0][0], clock, kid="k1"))).user_id == "u"
    rotated = _token(pems[1][0], clock, kid="k2")
    with pytest.raises(AuthError) as refused:
        await verifier.authenticate(rotated)  # not published yet: refused
    assert refused.value.reason == "unknown kid"
    fetcher.body = jwks(jwk(pems[0][1], "k1"), jwk(pems[1][1], "k2"))
    clock.advance(JWKS_MIN_REFETCH_S)
    assert (await verifier.authenticate(rotated)).user_id == "u"
    forged = _token(pems[2][0], clock, kid="k1")
    with pytest.raises(AuthError) as refused:
        await verifier.authenticate(forged)
    assert refused.value.reason == "bad signature"


async def test_several_pems_rotate_static_keys(pems: list[tuple[str, str]]) -> None:
    from streamer.auth import AuthError, TokenVerifier

    clock = ManualClock()
    verifier = TokenVerifier(pems[0][1] + pems[1][1], clock=clock)
    for private, _ in pems[:2]:
        assert verifier.verify(_token(private, clock, kid=None)).user_id == "u"
    with pytest.raises(AuthError) as refused:
        verifier.verify(_token(pems[2][0], clock, kid=None))
    assert refused.value.reason == "bad signature"


def test_a_bad_block_among_several_pems_is_named(pems: list[tuple[str, str]]) -> None:
    from streamer.auth import TokenVerifier

    bad = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    with pytest.raises(ValueError, match="PEM block 2 of 2"):
        TokenVerifier(pems[0][1] + bad, clock=ManualClock())


@pytest.mark.parametrize(
    ("aud", "accepted"),
    [
        ("api://streamer", True),
        (["other", "api://streamer"], True),
        ("other", False),
        (None, False),
    ],
)
def test_audience_is_checked_when_set(
    pems: list[tuple[str, str]], aud: Any, accepted: bool
) -> None:
    from streamer.auth import AuthError, TokenVerifier

    clock = ManualClock()
    verifier = TokenVerifier(pems[0][1], clock=clock, audience="api://streamer")
    claims = {} if aud is None else {"aud": aud}
    token = _token(pems[0][0], clock, kid=None, **claims)
    if accepted:
        assert verifier.verify(token).user_id == "u"
    else:
        with pytest.raises(AuthError) as refused:
            verifier.verify(token)
        assert refused.value.reason == "wrong audience"


def test_audience_is_ignored_when_unset(pems: list[tuple[str, str]]) -> None:
    from streamer.auth import TokenVerifier

    clock = ManualClock()
    token = _token(pems[0][0], clock, kid=None, aud="anything")
    assert TokenVerifier(pems[0][1], clock=clock).verify(token).user_id == "u"


def test_settings_read_jwks_url_audience_and_several_pems(pems: list[tuple[str, str]]) -> None:
    from streamer.settings import Settings, SettingsError

    escaped = (pems[0][1] + pems[1][1]).replace("\n", "\\n")
    settings = Settings.from_env(
        {
            "JWT_PUBLIC_KEY": escaped,
            "JWT_JWKS_URL": "https://idp.example/jwks.json",
            "JWT_AUDIENCE": "api://streamer",
        }
    )
    assert settings.jwt_jwks_url == "https://idp.example/jwks.json"
    assert settings.jwt_audience == "api://streamer"
    assert split_pem_blocks(settings.jwt_public_key or "") == (
        pems[0][1].strip(),
        pems[1][1].strip(),
    )
    for url in ("http://idp.example/jwks", "ftp://x/", "not a url"):
        with pytest.raises(SettingsError, match="JWT_JWKS_URL"):
            Settings.from_env({"JWT_JWKS_URL": url})
    assert Settings.from_env({"JWT_JWKS_URL": "http://127.0.0.1:8080/jwks"}).jwt_jwks_url


async def test_build_verifier_without_any_key_refuses_every_token(
    pems: list[tuple[str, str]],
) -> None:
    from streamer.auth import AuthError
    from streamer.services import build_verifier
    from streamer.settings import Settings

    clock = ManualClock()
    verifier = build_verifier(Settings(), clock=clock, fetcher=None)
    with pytest.raises(AuthError) as refused:
        await verifier.authenticate(_token(pems[0][0], clock, kid=None))
    assert refused.value.reason == "no verification key"


async def test_a_token_without_kid_never_fetches_while_static_keys_exist(
    pems: list[tuple[str, str]],
) -> None:
    fetcher = FakeFetcher(jwks(jwk(pems[1][1], "a")))
    static = load_public_key(pems[0][1])
    ring = KeyRing([static], jwks_url=URL, fetcher=fetcher, clock=ManualClock())
    assert await ring.candidates(None) == (static,)
    assert fetcher.calls == 0
    assert len(await ring.candidates("a")) == 1
    assert fetcher.calls == 1


async def test_a_remembered_token_stops_verifying_once_its_key_is_retired(
    pems: list[tuple[str, str]],
) -> None:
    from streamer.auth import AuthError, TokenVerifier

    clock = ManualClock()
    fetcher = FakeFetcher(jwks(jwk(pems[0][1], "old")))
    ring = KeyRing(jwks_url=URL, fetcher=fetcher, clock=clock, max_age_s=600)
    verifier = TokenVerifier(clock=clock, keys=ring)
    token = _token(pems[0][0], clock, kid="old", exp=int(clock.now().timestamp()) + 3600)
    assert (await verifier.authenticate(token)).user_id == "u"
    fetcher.body = jwks(jwk(pems[1][1], "new"))
    clock.advance(599)
    assert (await verifier.authenticate(token)).user_id == "u"
    clock.advance(1)  # the JWKS is old: fetched again, and "old" is gone
    with pytest.raises(AuthError) as refused:
        await verifier.authenticate(token)
    assert refused.value.reason == "unknown kid"


@pytest.mark.parametrize("case", ["expired", "retired"])
async def test_two_reconnects_with_a_remembered_token_during_a_fetch_are_both_refused(
    pems: list[tuple[str, str]], case: str
) -> None:
    """Both wait on one JWKS fetch and both find the kept token no longer good:
    each is refused (401), neither fails on the cache the other changed."""
    from streamer.auth import AuthError, TokenVerifier

    clock = ManualClock()
    fetcher = FakeFetcher(jwks(jwk(pems[0][1], "old")))
    ring = KeyRing(jwks_url=URL, fetcher=fetcher, clock=clock, max_age_s=600)
    verifier = TokenVerifier(clock=clock, keys=ring)
    token = _token(pems[0][0], clock, kid="old", exp=int(clock.now().timestamp()) + 300)
    await verifier.authenticate(token)
    if case == "retired":
        fetcher.body = jwks(jwk(pems[1][1], "new"))
    clock.advance(600)  # the JWKS is old (and the token expired)
    fetcher.gate = asyncio.Event()
    both = [asyncio.create_task(verifier.authenticate(token)) for _ in range(2)]
    await asyncio.sleep(0)
    fetcher.gate.set()
    results = await asyncio.gather(*both, return_exceptions=True)
    assert [type(r) for r in results] == [AuthError, AuthError]
