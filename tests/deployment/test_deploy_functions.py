"""The five Lambda functions: runtime, handler, sizing, tracing, environment, logs."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from deploy_harness import (
    REGION,
    SECRET_KEY,
    SECRET_SIG,
    TEST_PUBLIC_KEY,
    Deployment,
    streamer_stack,
)

from adapters.aws_lambda.bundle import BUNDLE_NAME
from adapters.aws_lambda.runtime import REQUIRED_SETTINGS
from streamer.settings import Settings

FUNCTION = "aws:lambda/function:Function"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
KEYS = ("connect", "disconnect", "router", "processor", "sweeper")
ENDPOINT = "https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/prod"


def _function(deployment: Deployment, key: str) -> dict[str, Any]:
    return deployment.one(FUNCTION, f"{key}-function").inputs


def _variables(deployment: Deployment, key: str) -> dict[str, str]:
    variables: dict[str, str] = _function(deployment, key)["environment"]["variables"]
    return variables


def test_every_function_is_declared_once_with_its_handler(deployment: Deployment) -> None:
    handlers = {r.inputs["name"]: r.inputs["handler"] for r in deployment.all(FUNCTION)}
    assert handlers == {
        f"streamer-{key}-prod": f"adapters.aws_lambda.{key}.handler" for key in KEYS
    }


@pytest.mark.parametrize("key", KEYS)
def test_function_runs_python_312_with_active_tracing(deployment: Deployment, key: str) -> None:
    function = _function(deployment, key)
    assert function["runtime"] == "python3.12"
    assert function["tracingConfig"] == {"mode": "Active"}
    assert function["role"] == f"arn:aws:iam::123456789012:role/{key}-role"


def test_processor_has_the_lambda_maximum_timeout_and_a_gigabyte(deployment: Deployment) -> None:
    processor = _function(deployment, "processor")
    assert (processor["timeout"], processor["memorySize"]) == (900, 1024)


def test_router_fits_inside_the_api_gateway_integration_timeout(deployment: Deployment) -> None:
    assert _function(deployment, "router")["timeout"] <= 29


def test_sweeper_finishes_well_before_its_next_run_is_due_twice(deployment: Deployment) -> None:
    assert _function(deployment, "sweeper")["timeout"] <= 300


def test_functions_share_the_bundle_from_the_configured_path(deployment: Deployment) -> None:
    (path,) = {r.wire["code"]["path"] for r in deployment.all(FUNCTION)}
    assert path.endswith("/streamer-lambda.zip")


@pytest.mark.parametrize("key", KEYS)
def test_function_knows_the_three_tables_and_the_guide_settings(
    deployment: Deployment, key: str
) -> None:
    variables = _variables(deployment, key)
    assert variables["CONNECTIONS_TABLE"] == "streamer-connections-prod"
    assert variables["REQUESTS_TABLE"] == "streamer-requests-prod"
    assert variables["SUBSCRIPTIONS_TABLE"] == "streamer-subscriptions-prod"
    assert variables["LOG_LEVEL"] == "INFO"
    assert variables["CONNECTION_TTL_HOURS"] == "24"
    assert variables["REQUEST_TTL_DAYS"] == "7"
    assert variables["MAX_CONNECTIONS_PER_USER"] == "10"
    assert variables["STREAMER_APP"] == "streamer.demo:app"
    assert "AWS_REGION" not in variables, "reserved: Lambda sets it"


def test_disconnect_gets_the_endpoint_only_when_it_cancels_and_notifies(
    deployment: Deployment, minimal_deployment: Deployment
) -> None:
    assert _variables(deployment, "disconnect")["WEBSOCKET_ENDPOINT"] == ENDPOINT
    assert "WEBSOCKET_ENDPOINT" not in _variables(minimal_deployment, "disconnect")


@pytest.mark.parametrize("key", ["router", "processor", "sweeper"])
def test_posting_functions_get_the_stage_management_endpoint(
    deployment: Deployment, key: str
) -> None:
    assert _variables(deployment, key)["WEBSOCKET_ENDPOINT"] == ENDPOINT


def test_only_connect_gets_the_jwt_public_key(deployment: Deployment) -> None:
    assert _variables(deployment, "connect")["JWT_PUBLIC_KEY"] == TEST_PUBLIC_KEY
    for key in KEYS[1:]:
        assert "JWT_PUBLIC_KEY" not in _variables(deployment, key)


def test_jwt_public_key_stays_a_secret_in_the_state(deployment: Deployment) -> None:
    wire = deployment.one(FUNCTION, "connect-function").wire
    key = wire["environment"]["variables"]["JWT_PUBLIC_KEY"]
    assert key[SECRET_KEY] == SECRET_SIG


def test_cancel_on_disconnect_reaches_the_functions_that_disconnect(
    deployment: Deployment, minimal_deployment: Deployment
) -> None:
    for key in ("disconnect", "router"):
        assert _variables(deployment, key)["CANCEL_ON_DISCONNECT"] == "true"
        assert "CANCEL_ON_DISCONNECT" not in _variables(minimal_deployment, key)


@pytest.mark.parametrize("key", KEYS)
def test_each_function_has_its_own_log_group_kept_30_days_made_first(
    deployment: Deployment, key: str
) -> None:
    log_group = deployment.one(LOG_GROUP, f"{key}-logs").inputs
    assert log_group["name"] == f"/aws/lambda/streamer-{key}-prod"
    assert log_group["retentionInDays"] == 30
    function = deployment.one(FUNCTION, f"{key}-function")
    assert {f"{key}-logs", f"{key}-policy"} <= function.dependencies


@pytest.mark.parametrize("spec", streamer_stack.FUNCTIONS, ids=lambda spec: spec.key)
def test_handler_names_a_function_the_bundle_contains(spec: streamer_stack.FunctionSpec) -> None:
    module_name, _, attribute = spec.handler.rpartition(".")
    assert callable(getattr(importlib.import_module(module_name), attribute))


def test_default_bundle_path_is_where_streamer_lambda_build_writes() -> None:
    config = streamer_stack.StackConfig(environment="prod", jwt_public_key="k")
    assert config.bundle_path == f"../../dist/{BUNDLE_NAME}"


@pytest.mark.parametrize(("key", "required"), REQUIRED_SETTINGS.items())
def test_function_environment_passes_the_functions_own_start_up_checks(
    deployment: Deployment, key: str, required: tuple[str, ...]
) -> None:
    """What a cold start validates: required names present, every value well-formed."""
    environment = {**_variables(deployment, key), "AWS_REGION": REGION}
    settings = Settings.from_env(environment, required=required)
    assert settings.requests_table == "streamer-requests-prod"


def test_every_variable_set_is_one_streamer_reads(deployment: Deployment) -> None:
    known = {doc.env for doc in Settings.describe()}
    for key in KEYS:
        assert set(_variables(deployment, key)) <= known, key
