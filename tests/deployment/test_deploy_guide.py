"""The deployment guide's own `Pulumi.prod.yaml`, and the bundle the program is given:
what deploys unchanged, and what preview refuses in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_harness import (
    ACCOUNT,
    BASE_CONFIG,
    ISSUED_CERTIFICATES,
    REGION,
    TEST_PUBLIC_KEY,
    Deployment,
    deploy,
    streamer_stack,
)

from adapters.aws_lambda.bundle import BundleManifest

GUIDE_STACK = (
    Path(__file__).resolve().parents[1] / "fixtures" / "deployment_guide" / "Pulumi.prod.yaml"
)
"""The guide's file, verbatim (its placeholder key included)."""
FUNCTION = "aws:lambda/function:Function"


def _guide_config() -> dict[str, str]:
    config: dict[str, str] = yaml.safe_load(GUIDE_STACK.read_text())["config"]
    return config


def _with_real_key(config: dict[str, str]) -> dict[str, str]:
    """The one edit the guide asks for: its placeholder key replaced by a real one."""
    return {**config, "streamer:jwtPublicKey": TEST_PUBLIC_KEY}


@pytest.fixture(scope="module")
def guide_deployment() -> Deployment:
    return deploy(_with_real_key(_guide_config()))


def _refusal(config: dict[str, str], **kwargs: Any) -> str:
    with pytest.raises(streamer_stack.StackConfigError) as refused:
        deploy(config, **kwargs)
    message = str(refused.value)
    assert "\n" not in message
    return message


def test_the_guides_stack_names_everything_as_its_debug_commands_do(
    guide_deployment: Deployment,
) -> None:
    names = {r.inputs["name"] for r in guide_deployment.all(FUNCTION)}
    assert "streamer-router-prod" in names
    assert names == {f"streamer-{spec.key}-prod" for spec in streamer_stack.FUNCTIONS}
    tables = {r.inputs["name"] for r in guide_deployment.all("aws:dynamodb/table:Table")}
    assert {"streamer-connections-prod", "streamer-requests-prod"} <= tables
    stage = guide_deployment.one("aws:apigatewayv2/stage:Stage", "websocket-stage")
    assert stage.inputs["name"] == "prod"


def test_the_guides_domain_uses_the_issued_certificate_found_for_it(
    guide_deployment: Deployment,
) -> None:
    domain = guide_deployment.one("aws:apigatewayv2/domainName:DomainName", "custom-domain")
    assert domain.inputs["domainName"] == "api.example.com"
    configuration = domain.inputs["domainNameConfiguration"]
    assert configuration["certificateArn"] == ISSUED_CERTIFICATES["api.example.com"]
    (lookup,) = guide_deployment.certificate_lookups
    assert (lookup["domain"], lookup["statuses"]) == ("api.example.com", ["ISSUED"])
    assert lookup["mostRecent"] is True
    assert guide_deployment.outputs["websocket_url"] == "wss://api.example.com/prod"


def test_the_guides_placeholder_key_is_refused_in_one_line() -> None:
    message = _refusal(_guide_config())
    assert "streamer:jwtPublicKey" in message
    assert "YOUR_PUBLIC_KEY_HERE" in message


def test_a_key_that_is_not_a_public_key_is_refused_in_one_line() -> None:
    message = _refusal({**BASE_CONFIG, "streamer:jwtPublicKey": "not a key"})
    assert message.startswith("streamer:jwtPublicKey is not a PEM public key")


def test_a_domain_with_no_issued_certificate_is_refused_in_one_line() -> None:
    message = _refusal({**BASE_CONFIG, "streamer:domain": "wss://other.example.com"})
    assert "other.example.com has no ISSUED ACM certificate" in message
    assert "streamer:certificateArn" in message


def test_a_configured_certificate_is_used_without_a_lookup() -> None:
    arn = f"arn:aws:acm:{REGION}:{ACCOUNT}:certificate/configured"
    deployment = deploy(
        {**BASE_CONFIG, "streamer:domain": "api.example.com", "streamer:certificateArn": arn}
    )
    domain = deployment.one("aws:apigatewayv2/domainName:DomainName", "custom-domain")
    assert domain.inputs["domainNameConfiguration"]["certificateArn"] == arn
    assert deployment.certificate_lookups == []


@pytest.mark.parametrize(
    ("environment", "suffix"),
    [("production", "prod"), ("development", "dev"), ("prod", "prod"), ("staging", "staging")],
)
def test_environment_names_take_the_guides_short_suffix(environment: str, suffix: str) -> None:
    config = streamer_stack.StackConfig(environment=environment, jwt_public_key="k")
    assert config.name_suffix == suffix


def test_functions_take_runtime_and_architecture_from_the_bundle() -> None:
    bundle = BundleManifest(python_version="3.13", architecture="arm64", streamer_version="t")
    deployment = deploy(BASE_CONFIG, bundle=bundle)
    for function in deployment.all(FUNCTION):
        assert function.inputs["runtime"] == "python3.13"
        assert function.inputs["architectures"] == ["arm64"]


@pytest.mark.parametrize(
    ("stack_setting", "bundle"),
    [
        (
            {"streamer:architecture": "arm64"},
            BundleManifest(python_version="3.12", architecture="x86_64", streamer_version="t"),
        ),
        (
            {"streamer:runtime": "python3.12"},
            BundleManifest(python_version="3.11", architecture="x86_64", streamer_version="t"),
        ),
    ],
)
def test_a_bundle_built_for_another_target_is_refused_in_one_line(
    stack_setting: dict[str, str], bundle: BundleManifest
) -> None:
    message = _refusal({**BASE_CONFIG, **stack_setting}, bundle=bundle)
    assert f"is for {bundle.runtime} {bundle.architecture}" in message
    assert "streamer lambda build --python" in message


def test_a_bundle_without_a_manifest_is_refused_in_one_line() -> None:
    message = _refusal(BASE_CONFIG, bundle=None)
    assert "streamer lambda build" in message
