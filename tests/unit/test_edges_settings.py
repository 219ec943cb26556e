"""Settings from the environment: defaults, required names, one-line errors."""

from __future__ import annotations

import dataclasses

import pytest

from streamer.settings import Settings, SettingsError, normalise_pem
from streamer.tokens import generate_rsa_key_pair


@pytest.fixture(scope="module")
def public_pem() -> str:
    return generate_rsa_key_pair()[1]


def _error(environ: dict[str, str], **kwargs: object) -> str:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(environ, **kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_empty_environment_gives_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_defaults_follow_the_deployment_guide() -> None:
    settings = Settings()
    assert settings.log_level == "INFO"
    assert settings.connection_ttl_hours == 24
    assert settings.request_ttl_days == 7
    assert settings.max_connections_per_user == 10
    assert settings.async_threshold_s == 5
    assert settings.app == "streamer.demo:app"
    assert settings.cancel_on_disconnect is False
    assert settings.allowed_tenants is None


def test_every_field_is_read_from_its_variable(public_pem: str) -> None:
    environ = {
        "JWT_PUBLIC_KEY": public_pem,
        "CONNECTIONS_TABLE": "c",
        "REQUESTS_TABLE": "r",
        "SUBSCRIPTIONS_TABLE": "s",
        "WEBSOCKET_ENDPOINT": "https://abc.execute-api.us-east-1.amazonaws.com/prod",
        "AWS_REGION": "eu-west-1",
        "LOG_LEVEL": "debug",
        "CONNECTION_TTL_HOURS": "2",
        "REQUEST_TTL_DAYS": "1.5",
        "MAX_CONNECTIONS_PER_USER": "3",
        "ASYNC_THRESHOLD_SECONDS": "0",
        "JWT_ISSUER": "https://issuer.example",
        "ALLOWED_TENANTS": "acme, globex ,",
        "STREAMER_APP": "my.module:app",
        "CANCEL_ON_DISCONNECT": "yes",
        "DYNAMODB_ENDPOINT_URL": "http://localhost:5000",
        "RATE_LIMIT_PER_MINUTE": "50",
        "MAX_MESSAGE_BYTES": "1024",
        "PROGRESS_MAX_PER_SECOND": "0",
        "PROGRESS_PERSIST_INTERVAL_SECONDS": "2.5",
        "LEASE_GRACE_SECONDS": "30",
    }
    assert Settings.from_env(environ) == Settings(
        jwt_public_key=public_pem,
        connections_table="c",
        requests_table="r",
        subscriptions_table="s",
        websocket_endpoint="https://abc.execute-api.us-east-1.amazonaws.com/prod",
        aws_region="eu-west-1",
        log_level="DEBUG",
        connection_ttl_hours=2,
        request_ttl_days=1.5,
        max_connections_per_user=3,
        async_threshold_s=0,
        jwt_issuer="https://issuer.example",
        allowed_tenants=frozenset({"acme", "globex"}),
        app="my.module:app",
        cancel_on_disconnect=True,
        dynamodb_endpoint_url="http://localhost:5000",
        rate_limit_per_minute=50,
        max_message_bytes=1024,
        progress_max_per_s=0,
        progress_persist_interval_s=2.5,
        lease_grace_s=30,
    )


def test_describe_lists_every_field_once() -> None:
    described = [doc.field for doc in Settings.describe()]
    assert sorted(described) == sorted(f.name for f in dataclasses.fields(Settings))
    assert all(doc.description for doc in Settings.describe())


def test_describe_names_the_documented_variables() -> None:
    envs = {doc.env: doc.default for doc in Settings.describe()}
    assert envs["ASYNC_THRESHOLD_SECONDS"] == "5"
    assert envs["STREAMER_APP"] == "streamer.demo:app"
    assert envs["CONNECTION_TTL_HOURS"] == "24"
    assert envs["JWT_PUBLIC_KEY"] == ""


def test_missing_required_variable_is_named() -> None:
    assert _error({}, required=["JWT_PUBLIC_KEY"]) == "JWT_PUBLIC_KEY is required"


def test_blank_required_variable_counts_as_missing() -> None:
    assert _error({"REQUESTS_TABLE": "  "}, required=["REQUESTS_TABLE"]) == (
        "REQUESTS_TABLE is required"
    )


def test_aws_default_region_stands_in_for_aws_region() -> None:
    settings = Settings.from_env({"AWS_DEFAULT_REGION": "ap-south-1"}, required=["AWS_REGION"])
    assert settings.aws_region == "ap-south-1"


@pytest.mark.parametrize("raw", ["abc", "0", "-3", "2.5"])
def test_malformed_integer_is_named_with_its_value(raw: str) -> None:
    assert _error({"MAX_CONNECTIONS_PER_USER": raw}) == (
        f"MAX_CONNECTIONS_PER_USER must be a positive integer, got {raw!r}"
    )


@pytest.mark.parametrize("raw", ["soon", "0", "-1", "nan", "inf"])
def test_malformed_positive_number_is_named(raw: str) -> None:
    assert _error({"CONNECTION_TTL_HOURS": raw}).startswith("CONNECTION_TTL_HOURS must be")


def test_negative_threshold_is_refused() -> None:
    assert _error({"ASYNC_THRESHOLD_SECONDS": "-1"}) == (
        "ASYNC_THRESHOLD_SECONDS must be a number >= 0, got '-1'"
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("1", True), ("YES", True), ("false", False), ("0", False), ("no", False)],
)
def test_booleans_accept_the_usual_spellings(raw: str, expected: bool) -> None:
    assert Settings.from_env({"CANCEL_ON_DISCONNECT": raw}).cancel_on_disconnect is expected


def test_malformed_boolean_is_named() -> None:
    assert _error({"CANCEL_ON_DISCONNECT": "maybe"}) == (
        "CANCEL_ON_DISCONNECT must be true or false, got 'maybe'"
    )


def test_unknown_log_level_is_named() -> None:
    assert _error({"LOG_LEVEL": "LOUD"}).startswith("LOG_LEVEL must be one of")


def test_malformed_app_target_is_named() -> None:
    assert _error({"STREAMER_APP": "no_colon"}).startswith("STREAMER_APP must look like")


def test_blank_allowed_tenants_allow_everyone() -> None:
    assert Settings.from_env({"ALLOWED_TENANTS": " , "}).allowed_tenants is None


def test_subscriptions_table_follows_the_connections_table() -> None:
    settings = Settings.from_env({"CONNECTIONS_TABLE": "streamer-connections-prod"})
    assert settings.subscriptions_table == "streamer-subscriptions-prod"


def test_explicit_subscriptions_table_wins() -> None:
    settings = Settings.from_env(
        {"CONNECTIONS_TABLE": "streamer-connections-prod", "SUBSCRIPTIONS_TABLE": "subs"}
    )
    assert settings.subscriptions_table == "subs"


def test_pem_with_literal_backslash_n_is_normalised(public_pem: str) -> None:
    escaped = public_pem.strip().replace("\n", "\\n")
    assert Settings.from_env({"JWT_PUBLIC_KEY": escaped}).jwt_public_key == public_pem


def test_pem_flattened_onto_one_line_is_normalised(public_pem: str) -> None:
    flattened = " ".join(public_pem.split("\n"))
    assert normalise_pem(flattened) == public_pem


def test_malformed_public_key_is_named() -> None:
    message = _error({"JWT_PUBLIC_KEY": "not-a-key"})
    assert message.startswith("JWT_PUBLIC_KEY is not a PEM public key")
