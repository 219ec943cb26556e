"""Stack configuration: the custom domain's forms, required settings, exported outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_harness import ACCOUNT, API_ID, BASE_CONFIG, REGION, Deployment, deploy, streamer_stack


@pytest.mark.parametrize(
    "domain",
    [
        "wss://api.example.com",
        "api.example.com",
        "wss://api.example.com/",
        " https://api.example.com/x ",
    ],
)
def test_domain_is_reduced_to_its_host(domain: str) -> None:
    assert streamer_stack.domain_host(domain) == "api.example.com"


def test_a_missing_bundle_names_the_command_that_builds_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="streamer lambda build"):
        streamer_stack.check_bundle(str(tmp_path / "streamer-lambda.zip"))


@pytest.mark.parametrize("factor", [0, 11])
def test_parallelization_outside_what_lambda_allows_is_refused(factor: int) -> None:
    with pytest.raises(ValueError, match="processorParallelization"):
        streamer_stack.StackConfig(
            environment="prod", jwt_public_key="k", processor_parallelization=factor
        )


def test_defaults_follow_the_guide() -> None:
    config = streamer_stack.StackConfig(environment="prod", jwt_public_key="k")
    assert config.stage == "prod"
    assert config.bundle_path == "../../dist/streamer-lambda.zip"
    assert config.app == "streamer.demo:app"
    assert (config.log_level, config.connection_ttl_hours) == ("INFO", 24)
    assert (config.request_ttl_days, config.max_connections_per_user) == (7, 10)


def test_stack_exports_endpoints_tables_and_queue(minimal_deployment: Deployment) -> None:
    base = f"{API_ID}.execute-api.{REGION}.amazonaws.com/prod"
    assert minimal_deployment.outputs == {
        "websocket_url": f"wss://{base}",
        "management_endpoint": f"https://{base}",
        "execute_api_url": f"wss://{base}",
        "connections_table": "streamer-connections-prod",
        "requests_table": "streamer-requests-prod",
        "subscriptions_table": "streamer-subscriptions-prod",
        "dlq_url": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/streamer-processor-dlq-prod",
        "api_id": API_ID,
        "dashboard": "streamer-prod",
        "pusher_role_arn": f"arn:aws:iam::{ACCOUNT}:role/pusher-role",
    }


def test_stack_with_a_domain_exports_where_to_point_its_dns(deployment: Deployment) -> None:
    assert deployment.outputs["websocket_url"] == "wss://api.example.com/prod"
    assert deployment.outputs["domain_target"] == f"d-abc123.execute-api.{REGION}.amazonaws.com"
    assert deployment.outputs["domain_hosted_zone_id"] == "Z2FDTNDATAQYW2"


@pytest.fixture(scope="module")
def existing_logging_role() -> Deployment:
    return deploy(
        {**BASE_CONFIG, "streamer:manageApiGatewayAccount": "false"},
        secret_keys=("streamer:jwtPublicKey",),
    )


def test_an_account_with_its_own_api_gateway_logging_role_keeps_it(
    existing_logging_role: Deployment,
) -> None:
    assert not existing_logging_role.all("aws:apigateway/account:Account")
    stage = existing_logging_role.one("aws:apigatewayv2/stage:Stage", "websocket-stage")
    assert "accessLogSettings" in stage.inputs


@pytest.fixture(scope="module")
def identity_provider_deployment() -> Deployment:
    """Keys from an identity provider only: no `jwtPublicKey` at all."""
    config = {k: v for k, v in BASE_CONFIG.items() if k != "streamer:jwtPublicKey"}
    return deploy(
        {
            **config,
            "streamer:jwtJwksUrl": "https://idp.example.com/.well-known/jwks.json",
            "streamer:jwtAudience": "api://streamer",
        }
    )


def test_a_jwks_url_alone_configures_the_connect_function(
    identity_provider_deployment: Deployment,
) -> None:
    from adapters.aws_lambda.runtime import REQUIRED_ONE_OF, REQUIRED_SETTINGS
    from streamer.settings import Settings

    connect = identity_provider_deployment.one("aws:lambda/function:Function", "connect-function")
    variables = connect.inputs["environment"]["variables"]
    assert variables["JWT_JWKS_URL"] == "https://idp.example.com/.well-known/jwks.json"
    assert variables["JWT_AUDIENCE"] == "api://streamer"
    assert "JWT_PUBLIC_KEY" not in variables
    (one_of,) = REQUIRED_ONE_OF["connect"]
    assert any(variables.get(name) for name in one_of)
    settings = Settings.from_env(
        {**variables, "AWS_REGION": REGION}, required=REQUIRED_SETTINGS["connect"]
    )
    assert settings.jwt_jwks_url == "https://idp.example.com/.well-known/jwks.json"


def test_neither_a_key_nor_a_jwks_is_refused() -> None:
    with pytest.raises(ValueError, match="jwtPublicKey or streamer:jwtJwksUrl"):
        streamer_stack.StackConfig(environment="prod", jwt_public_key=None)
