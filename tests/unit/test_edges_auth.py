"""JWT verification: the full matrix of accepted and refused tokens (DESIGN §4)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from streamer.auth import AuthError, TokenVerifier, load_public_key, token_from_request
from streamer.errors import ErrorCode
from streamer.testing import ManualClock
from streamer.tokens import generate_rsa_key_pair, mint_token

KeyPair = tuple[str, str]


@pytest.fixture(scope="module")
def keys() -> KeyPair:
    return generate_rsa_key_pair()


@pytest.fixture(scope="module")
def other_keys() -> KeyPair:
    return generate_rsa_key_pair()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def verifier(keys: KeyPair, clock: ManualClock) -> TokenVerifier:
    return TokenVerifier(keys[1], clock=clock)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def _claims(clock: ManualClock, **overrides: Any) -> dict[str, Any]:
    now = int(clock.now().timestamp())
    claims: dict[str, Any] = {
        "sub": "user-1",
        "tenant_id": "tenant-1",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(private_pem: str, claims: dict[str, Any]) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return jwt.encode(claims, key, algorithm="RS256")  # type: ignore[arg-type]


def _reason(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(AuthError) as caught:
        verifier.verify(token)
    assert caught.value.code is ErrorCode.UNAUTHORIZED
    assert caught.value.message == "Unauthorized"
    return caught.value.reason


def test_valid_token_gives_the_identity(
    keys: KeyPair, verifier: TokenVerifier, clock: ManualClock
) -> None:
    token = mint_token(
        keys[0], sub="user-1", tenant_id="tenant-1", permissions=["read"], now=clock.now()
    )
    identity = verifier.verify(token)
    assert (identity.user_id, identity.tenant_id, identity.permissions) == (
        "user-1",
        "tenant-1",
        ("read",),
    )


def test_token_without_permissions_has_none(
    keys: KeyPair, verifier: TokenVerifier, clock: ManualClock
) -> None:
    assert verifier.verify(_sign(keys[0], _claims(clock))).permissions == ()


def test_alg_none_is_refused(verifier: TokenVerifier, clock: ManualClock) -> None:
    token = _unsigned({"alg": "none", "typ": "JWT"}, _claims(clock)) + "."
    assert "refused" in _reason(verifier, token)


def test_hs256_signed_with_the_public_key_is_refused(
    keys: KeyPair, verifier: TokenVerifier, clock: ManualClock
) -> None:
    """The classic key-confusion attack: the public key used as an HMAC secret."""
    signing_input = _unsigned({"alg": "HS256", "typ": "JWT"}, _claims(clock))
    signature = hmac.new(keys[1].encode(), signing_input.encode(), hashlib.sha256).digest()
    assert "HS256" in _reason(verifier, f"{signing_input}.{_b64(signature)}")


def test_expired_token_is_refused(
    keys: KeyPair, verifier: TokenVerifier, clock: ManualClock
) -> None:
    token = mint_token(keys[0], sub="u", tenant_id="t", ttl_s=60, now=clock.now())
    clock.advance(61)
    assert _reason(verifier, token) == "token expired"


def test_token_expiring_exactly_now_is_refused(
    keys: KeyPair, verifier: TokenVerifier, clock: ManualClock
) -> None:
    token = mint_token(keys[0], sub="u", tenant_id="t", ttl_s=60, now=clock.now())
    clock.advance(60)
    assert _reason(verifier, token) == "token expired"


def test_token_without_exp_is_refused(
    keys: KeyPair, verifier: TokenVerifier, clock: ManualClock
) -> None:
    assert _reason(verifier, _sign(keys[0], _claims(clock, exp=None))) == "missing exp"


def test_nbf_in_the_future_is_refused(
    keys: KeyPair, verifier: TokenVerifier, clock: ManualClock
) -> None:
    nbf = int(clock.now().timestamp()) + 300
    assert "nbf" in _reason(verifier, _sign(keys[0], _claims(clock, nbf=nbf)))


def test_iat_more_than_60_seconds_ahead_is_refused(
    keys: KeyPair, verifier: TokenVerifier, clock: ManualClock
) -> None:
    iat = int(clock.now().timestamp()) + 61
    token = _sign(keys[0], _claims(clock, iat=iat, nbf=None))
    assert "iat" in _reason(verifier, token)


def test_iat_30_seconds_ahead_is_accepted(
    keys: KeyPair, verifier: TokenVerifier, clock: ManualClock
) -> None:
    """Clock skew between issuer and verifier is tolerated up to 60 s."""
    iat = int(clock.now().timestamp()) + 30
    assert verifier.verify(_sign(keys[0], _claims(clock, iat=iat, nbf=None))).user_id == "user-1"


def test_time_claims_that_are_not_numbers_are_refused(
    keys: KeyPair, verifier: TokenVerifier, clock: ManualClock
) -> None:
    assert _reason(verifier, _sign(keys[0], _claims(clock, exp="tomorrow"))) == (
        "exp is not a number"
    )


def test_wrong_issuer_is_refused(keys: KeyPair, clock: ManualClock) -> None:
    verifier = TokenVerifier(keys[1], clock=clock, issuer="https://issuer.example")
    token = mint_token(
        keys[0], sub="u", tenant_id="t", issuer="https://evil.example", now=clock.now()
    )
    assert _reason(verifier, token) == "wrong issuer"


def test_missing_issuer_is_refused_when_one_is_configured(
    keys: KeyPair, clock: ManualClock
) -> None:
    verifier = TokenVerifier(keys[1], clock=clock, issuer="https://issuer.example")
    token = mint_token(keys[0], sub="u", tenant_id="t", now=clock.now())
    assert _reason(verifier, token) == "wrong issuer"


def test_right_issuer_is_accepted(keys: KeyPair, clock: ManualClock) -> None:
    verifier = TokenVerifier(keys[1], clock=clock, issuer="https://issuer.example")
    token = mint_token(
        keys[0], sub="u", tenant_id="t", issuer="https://issuer.example", now=clock.now()
    )
    assert verifier.verify(token).tenant_id == "t"


@pytest.mark.parametrize("claim", ["sub", "tenant_id"])
@pytest.mark.parametrize("value", [None, "", "   ", 42])
def test_missing_or_empty_identity_claim_is_refused(
    keys: KeyPair, verifier: TokenVerifier, clock: ManualClock, claim: str, value: Any
) -> None:
    claims = _claims(clock)
    if value is None:
        del claims[claim]
    else:
        claims[claim] = value
    assert _reason(verifier, _sign(keys[0], claims)) == f"missing {claim}"


@pytest.mark.parametrize("claim", ["sub", "tenant_id"])
def test_identity_claim_with_the_key_separator_is_refused(
    keys: KeyPair, verifier: TokenVerifier, clock: ManualClock, claim: str
) -> None:
    """`#` separates the parts of a request key; allowing it would let owners collide."""
    token = _sign(keys[0], _claims(clock, **{claim: "a#b"}))
    assert _reason(verifier, token) == f"{claim} has a forbidden shape"


def test_permissions_that_are_not_a_list_of_strings_are_refused(
    keys: KeyPair, verifier: TokenVerifier, clock: ManualClock
) -> None:
    token = _sign(keys[0], _claims(clock, permissions=["read", 7]))
    assert "permissions" in _reason(verifier, token)


def test_tampered_signature_is_refused(
    keys: KeyPair, verifier: TokenVerifier, clock: ManualClock
) -> None:
    token = mint_token(keys[0], sub="u", tenant_id="t", now=clock.now())
    header, payload, signature = token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    tampered = signature[:middle] + flipped + signature[middle + 1 :]
    assert _reason(verifier, f"{header}.{payload}.{tampered}") == "bad signature"


def test_tampered_payload_is_refused(
    keys: KeyPair, verifier: TokenVerifier, clock: ManualClock
) -> None:
    header, _, signature = mint_token(keys[0], sub="u", tenant_id="t", now=clock.now()).split(".")
    forged = _b64(json.dumps(_claims(clock, sub="admin")).encode())
    assert _reason(verifier, f"{header}.{forged}.{signature}") == "bad signature"


def test_token_signed_with_another_key_is_refused(
    other_keys: KeyPair, verifier: TokenVerifier, clock: ManualClock
) -> None:
    token = mint_token(other_keys[0], sub="u", tenant_id="t", now=clock.now())
    assert _reason(verifier, token) == "bad signature"


def test_pkcs1_and_spki_public_keys_both_verify(keys: KeyPair, clock: ManualClock) -> None:
    spki = keys[1]
    pkcs1 = (
        load_public_key(spki)
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
        .decode()
    )
    assert spki.startswith("-----BEGIN PUBLIC KEY-----")
    assert pkcs1.startswith("-----BEGIN RSA PUBLIC KEY-----")
    token = mint_token(keys[0], sub="u", tenant_id="t", now=clock.now())
    for pem in (spki, pkcs1):
        assert TokenVerifier(pem, clock=clock).verify(token).user_id == "u"


def test_key_with_escaped_newlines_verifies(keys: KeyPair, clock: ManualClock) -> None:
    """Env vars often carry a PEM on one line with literal `\\n`."""
    escaped = keys[1].strip().replace("\n", "\\n")
    token = mint_token(keys[0], sub="u", tenant_id="t", now=clock.now())
    assert TokenVerifier(escaped, clock=clock).verify(token).user_id == "u"


def test_very_long_token_is_refused_before_parsing(
    keys: KeyPair, verifier: TokenVerifier, clock: ManualClock
) -> None:
    token = mint_token(
        keys[0], sub="u", tenant_id="t", now=clock.now(), extra_claims={"pad": "x" * 9000}
    )
    assert "longer than" in _reason(verifier, token)


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c", "...."])
def test_garbage_tokens_are_refused(verifier: TokenVerifier, token: str) -> None:
    assert _reason(verifier, token)


@pytest.mark.parametrize(
    ("pem", "words"),
    [
        ("not a key", "not a PEM public key"),
        ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "not a PEM public key"),
    ],
)
def test_malformed_key_fails_at_construction_with_one_line(
    clock: ManualClock, pem: str, words: str
) -> None:
    with pytest.raises(ValueError, match=words) as caught:
        TokenVerifier(pem, clock=clock)
    assert "\n" not in str(caught.value)


def test_private_key_given_as_public_key_fails_at_construction(
    keys: KeyPair, clock: ManualClock
) -> None:
    with pytest.raises(ValueError, match="private key"):
        TokenVerifier(keys[0], clock=clock)


def test_non_rsa_key_fails_at_construction(clock: ManualClock) -> None:
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with pytest.raises(ValueError, match="not an RSA public key"):
        TokenVerifier(ec_pem, clock=clock)


def test_token_from_query_string() -> None:
    assert token_from_request({"Authorization": "abc.def.ghi"}, {}) == "abc.def.ghi"


def test_token_from_lower_case_query_key() -> None:
    assert token_from_request({"authorization": "abc.def.ghi"}, None) == "abc.def.ghi"


@pytest.mark.parametrize("name", ["Authorization", "authorization", "AUTHORIZATION"])
def test_token_from_bearer_header_any_case(name: str) -> None:
    assert token_from_request(None, {name: "Bearer abc.def.ghi"}) == "abc.def.ghi"


def test_bearer_scheme_is_case_insensitive() -> None:
    assert token_from_request(None, {"Authorization": "bearer abc.def.ghi"}) == "abc.def.ghi"


def test_other_authorization_schemes_give_no_token() -> None:
    assert token_from_request(None, {"Authorization": "Basic dXNlcjpwYXNz"}) is None


def test_no_token_anywhere_is_none() -> None:
    assert token_from_request({"other": "x"}, {"Host": "example"}) is None
    assert token_from_request(None, None) is None
    assert token_from_request({"Authorization": ""}, {"Authorization": "Bearer "}) is None


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ({"Authorization": ["forged", "valid"]}, None),
        ({"Authorization": ["same", "same"]}, None),
        ({"Authorization": "a", "authorization": "b"}, None),
        ({"Authorization": "a.b.c"}, {"Authorization": "Bearer x.y.z"}),
        ({"Authorization": "a.b.c"}, {"Authorization": "Basic dXNlcjpwYXNz"}),
        (None, {"Authorization": ["Bearer a.b.c", "Bearer x.y.z"]}),
    ],
)
def test_two_authorization_values_are_ambiguous(
    query: dict[str, Any] | None, headers: dict[str, Any] | None
) -> None:
    with pytest.raises(AuthError) as refused:
        token_from_request(query, headers)
    assert refused.value.reason == "two Authorization values"


def test_the_same_token_in_the_query_and_the_header_is_one_token() -> None:
    assert (
        token_from_request({"Authorization": ["a.b.c"]}, {"Authorization": ["Bearer a.b.c"]})
        == "a.b.c"
    )


# -- tokens verified once ------------------------------------------------------------


def _counting_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    decoded: list[str] = []
    original = jwt.decode

    def decode(token: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(token)
        return original(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", decode)
    return decoded


async def test_a_token_seen_before_is_not_verified_again(
    verifier: TokenVerifier, keys: KeyPair, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded = _counting_decodes(monkeypatch)
    token = _sign(keys[0], _claims(clock, permissions=["read"]))
    first = await verifier.authenticate(token)
    again = await verifier.authenticate(token)
    assert first == again
    assert again.permissions == ("read",)
    assert len(decoded) == 1


async def test_a_remembered_token_still_expires(
    verifier: TokenVerifier, keys: KeyPair, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded = _counting_decodes(monkeypatch)
    token = _sign(keys[0], _claims(clock))
    await verifier.authenticate(token)
    clock.advance(3600)
    for _ in range(2):
        with pytest.raises(AuthError) as refused:
            await verifier.authenticate(token)
        assert refused.value.reason == "token expired"
    # Forgotten once it failed: the second refusal checked the signature again.
    assert len(decoded) == 2


async def test_a_token_refused_is_not_remembered(
    verifier: TokenVerifier, keys: KeyPair, other_keys: KeyPair, clock: ManualClock
) -> None:
    early = _sign(keys[0], _claims(clock, nbf=int(clock.now().timestamp()) + 60))
    forged = _sign(other_keys[0], _claims(clock))
    with pytest.raises(AuthError):
        await verifier.authenticate(early)
    clock.advance(60)
    assert (await verifier.authenticate(early)).user_id == "user-1"
    for _ in range(2):
        with pytest.raises(AuthError) as refused:
            await verifier.authenticate(forged)
        assert refused.value.reason == "bad signature"
