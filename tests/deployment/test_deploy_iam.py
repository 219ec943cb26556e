"""IAM: one role per function, each allowed only what its code calls, on only its
tables, indexes, log group, stream, queue and this API's stage."""

from __future__ import annotations

import json

import pytest
from deploy_harness import ACCOUNT, API_ID, REGION, Deployment

KEYS = ("connect", "disconnect", "router", "processor", "sweeper")
ROLE = "aws:iam/role:Role"
POLICY = "aws:iam/rolePolicy:RolePolicy"

_TABLE = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/streamer-{{}}-prod"
CONNECTIONS = _TABLE.format("connections")
REQUESTS = _TABLE.format("requests")
SUBSCRIPTIONS = _TABLE.format("subscriptions")

Grant = tuple[str, str]
_DELIVERY: set[Grant] = {
    ("dynamodb:DeleteItem", CONNECTIONS),
    ("dynamodb:UpdateItem", CONNECTIONS),
    ("dynamodb:Query", SUBSCRIPTIONS),
    ("dynamodb:DeleteItem", SUBSCRIPTIONS),
    ("dynamodb:Query", f"{SUBSCRIPTIONS}/index/ConnectionIndex"),
}
_CANCEL_ON_DISCONNECT: set[Grant] = {
    ("dynamodb:UpdateItem", REQUESTS),
    ("dynamodb:Query", f"{REQUESTS}/index/ConnectionIndex"),
    *_DELIVERY,
}
DYNAMODB_GRANTS: dict[str, set[Grant]] = {
    "connect": {
        ("dynamodb:PutItem", CONNECTIONS),
        ("dynamodb:UpdateItem", CONNECTIONS),
        ("dynamodb:GetItem", CONNECTIONS),
        ("dynamodb:Query", f"{CONNECTIONS}/index/UserIndex"),
    },
    "disconnect": {
        ("dynamodb:DeleteItem", CONNECTIONS),
        ("dynamodb:UpdateItem", CONNECTIONS),
        ("dynamodb:GetItem", CONNECTIONS),
        ("dynamodb:DeleteItem", SUBSCRIPTIONS),
        ("dynamodb:Query", f"{SUBSCRIPTIONS}/index/ConnectionIndex"),
    },
    "router": {
        ("dynamodb:GetItem", CONNECTIONS),
        ("dynamodb:GetItem", REQUESTS),
        ("dynamodb:PutItem", REQUESTS),
        ("dynamodb:UpdateItem", REQUESTS),
        ("dynamodb:PutItem", SUBSCRIPTIONS),
        *_DELIVERY,
    },
    "processor": {
        ("dynamodb:GetItem", REQUESTS),
        ("dynamodb:UpdateItem", REQUESTS),
        *_DELIVERY,
    },
    "sweeper": {
        ("dynamodb:UpdateItem", REQUESTS),
        ("dynamodb:Query", f"{REQUESTS}/index/StatusIndex"),
        ("dynamodb:GetItem", CONNECTIONS),
        ("dynamodb:Scan", CONNECTIONS),
        *_DELIVERY,
    },
}
"""Without CANCEL_ON_DISCONNECT: exactly the calls the stores make for each function."""

STAGE_ARN = f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}/prod"


def _grants(deployment: Deployment, key: str, service: str) -> set[Grant]:
    return {
        (action, resource)
        for statement in deployment.statements(key).values()
        for action in statement["Action"]
        if action.startswith(f"{service}:")
        for resource in statement["Resource"]
    }


@pytest.mark.parametrize("key", KEYS)
def test_function_has_its_own_role_assumed_only_by_lambda(deployment: Deployment, key: str) -> None:
    role = deployment.one(ROLE, f"{key}-role")
    trust = json.loads(role.inputs["assumeRolePolicy"])
    assert trust["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]
    assert deployment.one(POLICY, f"{key}-policy").inputs["role"] == f"{key}-role"
    assert "managedPolicyArns" not in role.inputs
    attached = deployment.all("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    assert not [a for a in attached if a.inputs["role"] == f"{key}-role"]


@pytest.mark.parametrize("key", KEYS)
def test_no_statement_uses_a_wildcard_action(deployment: Deployment, key: str) -> None:
    actions = [a for s in deployment.statements(key).values() for a in s["Action"]]
    assert actions
    assert not [a for a in actions if "*" in a]


@pytest.mark.parametrize("key", KEYS)
def test_only_xray_is_granted_on_every_resource(deployment: Deployment, key: str) -> None:
    """X-Ray has no resource-level permissions; everything else names its ARNs."""
    statements = deployment.statements(key)
    unscoped = {sid for sid, s in statements.items() if "*" in s["Resource"]}
    assert unscoped == {"XRay"}
    assert statements["XRay"]["Action"] == ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]


@pytest.mark.parametrize("key", KEYS)
def test_function_may_only_make_the_dynamodb_calls_its_code_makes(
    minimal_deployment: Deployment, key: str
) -> None:
    grants = _grants(minimal_deployment, key, "dynamodb")
    table_grants = {(action, arn) for action, arn in grants if "/stream/" not in arn}
    assert table_grants == DYNAMODB_GRANTS[key]


@pytest.mark.parametrize("key", ["disconnect", "router"])
def test_cancel_on_disconnect_adds_cancelling_the_connections_requests_and_telling_followers(
    deployment: Deployment, key: str
) -> None:
    grants = _grants(deployment, key, "dynamodb")
    assert grants == DYNAMODB_GRANTS[key] | _CANCEL_ON_DISCONNECT


@pytest.mark.parametrize("key", KEYS)
def test_statement_ids_are_unique_in_each_policy(deployment: Deployment, key: str) -> None:
    document = deployment.one(POLICY, f"{key}-policy").policy()
    sids = [s["Sid"] for s in document["Statement"]]
    assert len(sids) == len(set(sids))


@pytest.mark.parametrize("key", ["router", "processor", "sweeper"])
def test_posting_functions_manage_connections_of_this_stage_only(
    deployment: Deployment, key: str
) -> None:
    assert _grants(deployment, key, "execute-api") == {
        ("execute-api:ManageConnections", f"{STAGE_ARN}/POST/@connections/*")
    }


@pytest.mark.parametrize("key", ["connect", "disconnect"])
def test_connect_and_disconnect_never_call_the_management_api(
    minimal_deployment: Deployment, key: str
) -> None:
    assert _grants(minimal_deployment, key, "execute-api") == set()


def test_a_disconnect_that_cancels_tells_followers_through_this_stage(
    deployment: Deployment,
) -> None:
    assert _grants(deployment, "disconnect", "execute-api") == {
        ("execute-api:ManageConnections", f"{STAGE_ARN}/POST/@connections/*")
    }


@pytest.mark.parametrize("key", KEYS)
def test_function_writes_only_to_its_own_log_group(deployment: Deployment, key: str) -> None:
    group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/streamer-{key}-prod:*"
    assert _grants(deployment, key, "logs") == {
        ("logs:CreateLogStream", group),
        ("logs:PutLogEvents", group),
    }


def test_only_the_processor_reads_the_requests_stream(deployment: Deployment) -> None:
    stream = f"{REQUESTS}/stream/2026-01-01T00:00:00.000"
    assert deployment.statements("processor")["RequestsStream"] == {
        "Sid": "RequestsStream",
        "Effect": "Allow",
        "Action": [
            "dynamodb:DescribeStream",
            "dynamodb:GetRecords",
            "dynamodb:GetShardIterator",
            "dynamodb:ListStreams",
        ],
        "Resource": [stream],
    }
    for key in KEYS:
        if key != "processor":
            assert "RequestsStream" not in deployment.statements(key)


def test_only_the_processor_may_send_to_its_dead_letter_queue(deployment: Deployment) -> None:
    queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:streamer-processor-dlq-prod"
    assert _grants(deployment, "processor", "sqs") == {("sqs:SendMessage", queue)}
    for key in KEYS:
        if key != "processor":
            assert _grants(deployment, key, "sqs") == set()


def test_api_gateway_logging_role_is_assumed_only_by_api_gateway(deployment: Deployment) -> None:
    role = deployment.one(ROLE, "apigateway-cloudwatch-role").inputs
    trust = json.loads(role["assumeRolePolicy"])
    assert [s["Principal"] for s in trust["Statement"]] == [{"Service": "apigateway.amazonaws.com"}]
    (attachment,) = deployment.all("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    assert attachment.inputs == {
        "role": "apigateway-cloudwatch-role",
        "policyArn": "arn:aws:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs",
    }
    account = deployment.one("aws:apigateway/account:Account", "apigateway-account")
    assert account.inputs["cloudwatchRoleArn"].endswith(":role/apigateway-cloudwatch-role")
    assert "apigateway-cloudwatch-logs" in account.dependencies


def test_the_pusher_role_may_walk_the_indexes_post_and_clean_up_nothing_more(
    deployment: Deployment,
) -> None:
    """The role (and log group) the stack makes for a pushing function of the user's own."""
    role = deployment.one(ROLE, "pusher-role")
    trust = json.loads(role.inputs["assumeRolePolicy"])
    assert [s["Principal"] for s in trust["Statement"]] == [{"Service": "lambda.amazonaws.com"}]
    assert _grants(deployment, "pusher", "dynamodb") == {
        ("dynamodb:DeleteItem", CONNECTIONS),
        ("dynamodb:UpdateItem", CONNECTIONS),
        ("dynamodb:Query", f"{CONNECTIONS}/index/UserIndex"),
        ("dynamodb:Query", f"{CONNECTIONS}/index/TenantIndex"),
        ("dynamodb:DeleteItem", SUBSCRIPTIONS),
        ("dynamodb:Query", f"{SUBSCRIPTIONS}/index/ConnectionIndex"),
    }
    assert _grants(deployment, "pusher", "execute-api") == {
        ("execute-api:ManageConnections", f"{STAGE_ARN}/POST/@connections/*")
    }
    group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/streamer-pusher-prod:*"
    assert _grants(deployment, "pusher", "logs") == {
        ("logs:CreateLogStream", group),
        ("logs:PutLogEvents", group),
    }
