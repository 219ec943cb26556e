"""The WebSocket API: routes, integrations, invoke permissions, stage, custom domain, URLs."""

from __future__ import annotations

import json

import pytest
from deploy_harness import ACCOUNT, API_ID, REGION, Deployment

ROUTES = {"$connect": "connect", "$disconnect": "disconnect", "$default": "router"}
EXECUTION_ARN = f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}"


def test_api_is_a_websocket_api_routing_on_the_action_field(deployment: Deployment) -> None:
    api = deployment.one("aws:apigatewayv2/api:Api", "websocket-api").inputs
    assert api["protocolType"] == "WEBSOCKET"
    assert api["routeSelectionExpression"] == "$request.body.action"
    assert api["name"] == "streamer-prod"


@pytest.mark.parametrize(("route_key", "function_key"), ROUTES.items())
def test_route_proxies_to_its_function(
    deployment: Deployment, route_key: str, function_key: str
) -> None:
    slug = route_key.lstrip("$")
    route = deployment.one("aws:apigatewayv2/route:Route", f"{slug}-route")
    assert route.inputs["routeKey"] == route_key
    assert route.inputs["target"] == f"integrations/{slug}-integration-id"
    assert route.inputs["apiId"] == API_ID
    integration = deployment.one(
        "aws:apigatewayv2/integration:Integration", f"{slug}-integration"
    ).inputs
    assert integration["integrationType"] == "AWS_PROXY"
    assert integration["integrationMethod"] == "POST"
    function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:streamer-{function_key}-prod"
    assert function_arn in integration["integrationUri"]


def test_only_the_three_routes_exist(deployment: Deployment) -> None:
    keys = {r.inputs["routeKey"] for r in deployment.all("aws:apigatewayv2/route:Route")}
    assert keys == set(ROUTES)


@pytest.mark.parametrize(("route_key", "function_key"), ROUTES.items())
def test_api_gateway_may_invoke_the_function_for_its_route_on_this_stage_only(
    deployment: Deployment, route_key: str, function_key: str
) -> None:
    permission = deployment.one(
        "aws:lambda/permission:Permission", f"{route_key.lstrip('$')}-invoke"
    ).inputs
    assert permission["action"] == "lambda:InvokeFunction"
    assert permission["principal"] == "apigateway.amazonaws.com"
    assert permission["function"] == f"streamer-{function_key}-prod"
    assert permission["sourceArn"] == f"{EXECUTION_ARN}/prod/{route_key}"


def test_stage_deploys_itself_after_the_routes_exist(deployment: Deployment) -> None:
    stage = deployment.one("aws:apigatewayv2/stage:Stage", "websocket-stage")
    assert stage.inputs["name"] == "prod"
    assert stage.inputs["autoDeploy"] is True
    assert {"connect-route", "disconnect-route", "default-route"} <= stage.dependencies


def test_stage_throttles_every_route_by_default(deployment: Deployment) -> None:
    stage = deployment.one("aws:apigatewayv2/stage:Stage", "websocket-stage").inputs
    settings = stage["defaultRouteSettings"]
    assert settings["throttlingBurstLimit"] == 1000
    assert settings["throttlingRateLimit"] == 500


def test_stage_writes_json_access_logs_without_tokens_to_its_log_group(
    deployment: Deployment,
) -> None:
    stage = deployment.one("aws:apigatewayv2/stage:Stage", "websocket-stage")
    logs = stage.inputs["accessLogSettings"]
    group = deployment.one("aws:cloudwatch/logGroup:LogGroup", "api-access-logs").inputs
    assert group == {"name": "/aws/apigateway/streamer-prod", "retentionInDays": 30}
    assert logs["destinationArn"] == (
        f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/apigateway/streamer-prod"
    )
    fields = json.loads(logs["format"])
    assert {"requestId", "routeKey", "eventType", "status", "connectionId"} <= set(fields)
    assert not [v for v in fields.values() if "querystring" in v.lower()]
    assert "apigateway-account" in stage.dependencies, "logging needs the account role first"


def test_custom_domain_is_regional_tls12_with_the_given_certificate(
    deployment: Deployment,
) -> None:
    domain = deployment.one("aws:apigatewayv2/domainName:DomainName", "custom-domain").inputs
    assert domain["domainName"] == "api.example.com"
    assert domain["domainNameConfiguration"] == {
        "certificateArn": f"arn:aws:acm:{REGION}:{ACCOUNT}:certificate/abc",
        "endpointType": "REGIONAL",
        "securityPolicy": "TLS_1_2",
    }


def test_custom_domain_maps_the_stage_under_its_name(deployment: Deployment) -> None:
    mapping = deployment.one(
        "aws:apigatewayv2/apiMapping:ApiMapping", "custom-domain-mapping"
    ).inputs
    assert mapping == {
        "apiId": API_ID,
        "domainName": "api.example.com",
        "stage": "prod",
        "apiMappingKey": "prod",
    }


def test_urls_point_at_the_custom_domain_and_the_stage_endpoint(deployment: Deployment) -> None:
    assert deployment.outputs["websocket_url"] == "wss://api.example.com/prod"
    assert deployment.outputs["management_endpoint"] == (
        f"https://{API_ID}.execute-api.{REGION}.amazonaws.com/prod"
    )
    assert deployment.outputs["domain_target"].endswith(f".execute-api.{REGION}.amazonaws.com")


def test_without_a_domain_the_url_is_the_execute_api_stage(
    minimal_deployment: Deployment,
) -> None:
    assert minimal_deployment.outputs["websocket_url"] == (
        f"wss://{API_ID}.execute-api.{REGION}.amazonaws.com/prod"
    )
    assert not minimal_deployment.all("aws:apigatewayv2/domainName:DomainName")
    assert not minimal_deployment.all("aws:apigatewayv2/apiMapping:ApiMapping")
