"""The Streamer stack: everything the deployment guide creates, declared with Pulumi.

`StackConfig.from_pulumi()` reads the `streamer:*` settings; `create_stack(config)`
declares the tables, functions, WebSocket API, stream mapping, schedule, IAM,
alarms and dashboard, and returns them so `__main__` can export the outputs and
tests can inspect them under Pulumi's mocks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from adapters.aws_lambda.bundle import BundleManifest, read_manifest
from streamer.pem import load_public_keys

__all__ = [
    "ACCESS_LOG_FORMAT",
    "ACTIVE_CONNECTIONS_ALARM_THRESHOLD",
    "ALARM_PERIOD_S",
    "ERROR_ALARM_THRESHOLD",
    "FUNCTIONS",
    "ITERATOR_AGE_ALARM_MS",
    "NAME_SUFFIXES",
    "PENDING_FILTER_PATTERN",
    "PLACEHOLDER_KEY",
    "FunctionSpec",
    "StackConfig",
    "StackConfigError",
    "StreamerStack",
    "TableAccess",
    "bundle_manifest",
    "check_bundle",
    "create_stack",
    "domain_host",
]

NAME_SUFFIXES = {"production": "prod", "development": "dev"}
"""`streamer:environment` values whose resources take the guide's short suffix
(`streamer-router-prod`); any other environment is its own suffix."""
PLACEHOLDER_KEY = "YOUR_PUBLIC_KEY_HERE"
"""What the deployment guide's `Pulumi.prod.yaml` holds in place of a key."""
LOG_RETENTION_DAYS = 30
ALARM_PERIOD_S = 300
ERROR_ALARM_THRESHOLD = 10
ACTIVE_CONNECTIONS_ALARM_THRESHOLD = 9000
"""The guide's alarm: API Gateway allows 10,000 concurrent connections per API."""
ITERATOR_AGE_ALARM_MS = 300_000
"""A processor five minutes behind the requests stream is a backlog worth a page."""
STREAM_BATCH_SIZE = 10
STREAM_MAX_RETRY_ATTEMPTS = 5
STREAM_MAX_RECORD_AGE_S = 3600
DLQ_RETENTION_S = 14 * 24 * 3600
SWEEP_SCHEDULE = "rate(1 minute)"
MANAGE_CONNECTIONS_METHODS = ("POST",)
"""The functions only post to connections (never GET or DELETE one)."""
STREAM_READ_ACTIONS = (
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:ListStreams",
)
XRAY_ACTIONS = ("xray:PutTraceSegments", "xray:PutTelemetryRecords")
LOG_ACTIONS = ("logs:CreateLogStream", "logs:PutLogEvents")
APIGATEWAY_CLOUDWATCH_POLICY = (
    "arn:aws:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"
)

PENDING_FILTER_PATTERN = '{"dynamodb": {"NewImage": {"Status": {"S": ["PENDING"]}}}}'
"""Only a claimable PENDING image invokes the processor; progress writes,
completions and removals never leave the stream. On the `dynamodb` key alone, as
AWS documents DynamoDB stream filtering: a REMOVE has no `NewImage`, so INSERT and
MODIFY are the only records it can select."""

ACCESS_LOG_FORMAT = (
    '{"requestId":"$context.requestId","ip":"$context.identity.sourceIp",'
    '"requestTime":"$context.requestTime","routeKey":"$context.routeKey",'
    '"eventType":"$context.eventType","status":"$context.status",'
    '"connectionId":"$context.connectionId","error":"$context.error.message",'
    '"integrationError":"$context.integrationErrorMessage"}'
)
"""One JSON line per API Gateway event; no query string, so tokens never land here."""


# --- what each function is and may touch ---------------------------------------------


@dataclass(frozen=True, slots=True)
class TableAccess:
    """What one function may do to one table.

    Args:
        table: `connections`, `requests` or `subscriptions`.
        actions: DynamoDB actions on the table itself (a base-table `Query` included).
        index_queries: indexes the function may `Query`.
    """

    table: str
    actions: tuple[str, ...] = ()
    index_queries: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """One Lambda function of the stack.

    Args:
        key: short name (`connect`, …); the function is `streamer-<key>-<env>`.
        handler: the handler inside the bundle.
        timeout_s, memory_mb: sizing.
        tables: least-privilege table access.
        posts: delivers messages: gets `WEBSOCKET_ENDPOINT` and may call the
            `@connections` management API of the stage.
        disconnects: runs `ConnectionService.disconnect` (so honours
            `CANCEL_ON_DISCONNECT`).
    """

    key: str
    handler: str
    timeout_s: int
    memory_mb: int
    tables: tuple[TableAccess, ...]
    posts: bool = False
    disconnects: bool = False


# What `ConnectionService.disconnect` touches: `$disconnect`, and the router when
# a reply finds its client gone.
_DISCONNECT_ACCESS = (
    TableAccess("connections", ("dynamodb:DeleteItem", "dynamodb:UpdateItem")),
    TableAccess("subscriptions", ("dynamodb:DeleteItem",), ("ConnectionIndex",)),
)
# Delivery reads a request's followers and cleans up after a gone connection.
_DELIVERY_ACCESS = (
    TableAccess("connections", ("dynamodb:DeleteItem", "dynamodb:UpdateItem")),
    TableAccess("subscriptions", ("dynamodb:Query", "dynamodb:DeleteItem"), ("ConnectionIndex",)),
)
# With CANCEL_ON_DISCONNECT, a disconnect also cancels the connection's requests
# and tells their followers.
_CANCEL_ON_DISCONNECT_ACCESS = (
    TableAccess("requests", ("dynamodb:UpdateItem",), ("ConnectionIndex",)),
    *_DELIVERY_ACCESS,
)
# A new record adds one to the counter item (`UpdateItem` ADD), a deleted one (the
# `DeleteItem`s above) takes one away; `ActiveConnections` reads it (`GetItem`) after a
# connect or disconnect and on every sweep, and the sweeper corrects its drift with a
# `Scan` at most hourly.
_COUNT_CONNECTIONS_ACCESS = (TableAccess("connections", ("dynamodb:GetItem",)),)
_RECOUNT_CONNECTIONS_ACCESS = (
    TableAccess("connections", ("dynamodb:GetItem", "dynamodb:Scan", "dynamodb:UpdateItem")),
)

FUNCTIONS: tuple[FunctionSpec, ...] = (
    FunctionSpec(
        key="connect",
        handler="adapters.aws_lambda.connect.handler",
        timeout_s=10,
        memory_mb=256,
        tables=(
            TableAccess("connections", ("dynamodb:PutItem", "dynamodb:UpdateItem"), ("UserIndex",)),
            *_COUNT_CONNECTIONS_ACCESS,
        ),
    ),
    FunctionSpec(
        key="disconnect",
        handler="adapters.aws_lambda.disconnect.handler",
        timeout_s=10,
        memory_mb=256,
        tables=(*_DISCONNECT_ACCESS, *_COUNT_CONNECTIONS_ACCESS),
        disconnects=True,
    ),
    FunctionSpec(
        key="router",
        handler="adapters.aws_lambda.router.handler",
        # API Gateway gives an integration at most 29 s.
        timeout_s=29,
        memory_mb=512,
        tables=(
            TableAccess("connections", ("dynamodb:GetItem",)),
            TableAccess(
                "requests", ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem")
            ),
            TableAccess("subscriptions", ("dynamodb:PutItem",)),
            *_DELIVERY_ACCESS,
            *_DISCONNECT_ACCESS,
        ),
        posts=True,
        disconnects=True,
    ),
    FunctionSpec(
        key="processor",
        handler="adapters.aws_lambda.processor.handler",
        timeout_s=900,
        memory_mb=1024,
        tables=(
            TableAccess("requests", ("dynamodb:GetItem", "dynamodb:UpdateItem")),
            *_DELIVERY_ACCESS,
        ),
        posts=True,
    ),
    FunctionSpec(
        key="sweeper",
        handler="adapters.aws_lambda.sweeper.handler",
        timeout_s=300,
        memory_mb=256,
        tables=(
            TableAccess("requests", ("dynamodb:UpdateItem",), ("StatusIndex",)),
            *_DELIVERY_ACCESS,
            *_RECOUNT_CONNECTIONS_ACCESS,
        ),
        posts=True,
    ),
)

# Server push from a function of your own (`adapters.aws_lambda.pusher`): walk the user
# and tenant indexes, post, and clean up after a gone connection.
_PUSH_ACCESS = (
    TableAccess(
        "connections", ("dynamodb:DeleteItem", "dynamodb:UpdateItem"), ("UserIndex", "TenantIndex")
    ),
    TableAccess("subscriptions", ("dynamodb:DeleteItem",), ("ConnectionIndex",)),
)
PUSHER = FunctionSpec(
    key="pusher",
    handler="",
    timeout_s=60,
    memory_mb=256,
    tables=_PUSH_ACCESS,
    posts=True,
)
"""Not a function of the stack: the role (`pusher_role_arn`) and log group it makes for
yours, to be named `streamer-pusher-<env>`, that pushes from outside an action."""

_ROUTE_FUNCTIONS = {"$connect": "connect", "$disconnect": "disconnect", "$default": "router"}


class StackConfigError(pulumi.RunError, ValueError):
    """A stack setting or the bundle is wrong: `pulumi preview` prints this one line
    (a `RunError`), with no traceback."""


def check_bundle(path: str) -> None:
    """Fail before any resource is planned when the Lambda bundle is missing.

    Raises:
        FileNotFoundError: naming the path and the command that makes it.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"no Lambda bundle at {path}: run `streamer lambda build` in the repository "
            "root, or point streamer:bundlePath at the zip"
        )


def bundle_manifest(config: StackConfig) -> BundleManifest:
    """What the bundle was built for, checked against the stack's settings.

    Raises:
        StackConfigError: the bundle has no readable manifest, or was built for
            another Python or architecture than `streamer:runtime` /
            `streamer:architecture` ask for (one line saying how to rebuild it).
    """
    try:
        manifest = read_manifest(config.bundle_path)
    except (OSError, ValueError) as exc:
        raise StackConfigError(f"Lambda bundle: {exc}") from None
    wanted_runtime = config.runtime or manifest.runtime
    wanted_arch = config.architecture or manifest.architecture
    if (wanted_runtime, wanted_arch) != (manifest.runtime, manifest.architecture):
        python = wanted_runtime.removeprefix("python")
        raise StackConfigError(
            f"the Lambda bundle {config.bundle_path} is for {manifest.runtime} "
            f"{manifest.architecture}, the stack asks for {wanted_runtime} {wanted_arch}: "
            f"rebuild it with `streamer lambda build --python {python} --arch {wanted_arch}` "
            "or change streamer:runtime / streamer:architecture"
        )
    return manifest


def _check_public_key(key: str | None) -> None:
    """Refuse the guide's placeholder or a key the connect function could not load.

    Raises:
        StackConfigError: one line naming `streamer:jwtPublicKey`.
    """
    if key is None:
        return
    if PLACEHOLDER_KEY in key:
        raise StackConfigError(
            f"streamer:jwtPublicKey is the guide's placeholder ({PLACEHOLDER_KEY}): set your "
            "RSA public key, e.g. `pulumi config set --secret streamer:jwtPublicKey "
            "< jwt_public.pem`"
        )
    try:
        load_public_keys(key)
    except ValueError as exc:
        raise StackConfigError(f"streamer:jwtPublicKey {exc}") from None


def domain_host(domain: str) -> str:
    """The host of `streamer:domain`: `wss://api.example.com/` → `api.example.com`."""
    host = domain.strip()
    if "://" in host:
        host = host.split("://", 1)[1]
    return host.split("/", 1)[0]


# --- configuration ---------------------------------------------------------------------


@dataclass(frozen=True)
class StackConfig:
    """Everything the stack is configured by (`streamer:*` in the stack's config).

    Args:
        environment: names every resource: `streamer-connections-<suffix>`, where the
            suffix is the environment, shortened as the guide's names are
            (`production` → `prod`, `development` → `dev`; `NAME_SUFFIXES`).
        jwt_public_key: PEM public key(s) for the connect function (a secret); None
            when `jwt_jwks_url` alone verifies tokens.
        stage: the WebSocket stage name (also the custom domain's mapping key).
        domain: optional custom domain (`wss://api.example.com` or a bare host).
        certificate_arn: regional ACM certificate for `domain`; when unset, the
            region's most recent ISSUED certificate for the domain's host.
        bundle_path: the zip `streamer lambda build` makes.
        app: `STREAMER_APP`, the user's actions as `module:attribute`.
        architecture: Lambda architecture; None takes the bundle's (its manifest),
            a value that differs from the bundle's is refused at preview.
        runtime: Lambda runtime (`python3.12`); None takes the bundle's, likewise.
        log_level, connection_ttl_hours, request_ttl_days, max_connections_per_user,
        jwt_issuer, allowed_tenants, cancel_on_disconnect: function settings (DESIGN §7).
        jwt_jwks_url: the identity provider's JWKS (`JWT_JWKS_URL`), with or
            instead of `jwt_public_key`.
        jwt_audience: the required `aud` claim (`JWT_AUDIENCE`).
        throttle_burst_limit, throttle_rate_limit: default route throttling.
        processor_parallelization: concurrent batches per stream shard (1-10). The
            processor runs a batch's records one after another, so this is what
            lets a long action not hold up the requests queued behind it.
        manage_api_gateway_account: set the region's API Gateway CloudWatch role
            (access logging needs it; turn off when the account already has one).
        alarm_topic_arn: optional SNS topic every alarm notifies.
    """

    environment: str
    jwt_public_key: pulumi.Input[str] | None
    stage: str = "prod"
    domain: str | None = None
    certificate_arn: str | None = None
    bundle_path: str = "../../dist/streamer-lambda.zip"
    app: str = "streamer.demo:app"
    architecture: str | None = None
    runtime: str | None = None
    log_level: str = "INFO"
    connection_ttl_hours: float = 24.0
    request_ttl_days: float = 7.0
    max_connections_per_user: int = 10
    jwt_issuer: str | None = None
    allowed_tenants: str | None = None
    cancel_on_disconnect: bool = False
    throttle_burst_limit: int = 1000
    throttle_rate_limit: float = 500.0
    processor_parallelization: int = 10
    manage_api_gateway_account: bool = True
    alarm_topic_arn: str | None = None
    jwt_jwks_url: str | None = None
    jwt_audience: str | None = None

    def __post_init__(self) -> None:
        if self.jwt_public_key is None and not self.jwt_jwks_url:
            raise StackConfigError("streamer:jwtPublicKey or streamer:jwtJwksUrl is required")
        if not 1 <= self.processor_parallelization <= 10:
            raise StackConfigError("streamer:processorParallelization must be between 1 and 10")

    @property
    def name_suffix(self) -> str:
        """The suffix of every resource name (`prod` for `production`)."""
        return NAME_SUFFIXES.get(self.environment, self.environment)

    @classmethod
    def from_pulumi(cls, config: pulumi.Config | None = None) -> StackConfig:
        """Read the `streamer:*` settings of the current stack."""
        config = config if config is not None else pulumi.Config("streamer")
        defaults = cls(environment="", jwt_public_key="")
        # Checked in the clear now (preview fails on it in one line); deployed as a secret.
        _check_public_key(config.get("jwtPublicKey"))
        jwks_url = config.get("jwtJwksUrl") or None
        return cls(
            environment=config.require("environment"),
            # With a JWKS the key is optional (static keys beside it still verify).
            jwt_public_key=(
                config.get_secret("jwtPublicKey")
                if jwks_url
                else config.require_secret("jwtPublicKey")
            ),
            jwt_jwks_url=jwks_url,
            jwt_audience=config.get("jwtAudience") or None,
            stage=config.get("stage") or defaults.stage,
            domain=config.get("domain") or None,
            certificate_arn=config.get("certificateArn") or None,
            bundle_path=config.get("bundlePath") or defaults.bundle_path,
            app=config.get("app") or defaults.app,
            architecture=config.get("architecture") or None,
            runtime=config.get("runtime") or None,
            log_level=config.get("logLevel") or defaults.log_level,
            connection_ttl_hours=_float(
                config, "connectionTtlHours", defaults.connection_ttl_hours
            ),
            request_ttl_days=_float(config, "requestTtlDays", defaults.request_ttl_days),
            max_connections_per_user=_int(
                config, "maxConnectionsPerUser", defaults.max_connections_per_user
            ),
            jwt_issuer=config.get("jwtIssuer") or None,
            allowed_tenants=config.get("allowedTenants") or None,
            cancel_on_disconnect=_bool(config, "cancelOnDisconnect", False),
            throttle_burst_limit=_int(config, "throttleBurstLimit", defaults.throttle_burst_limit),
            throttle_rate_limit=_float(config, "throttleRateLimit", defaults.throttle_rate_limit),
            processor_parallelization=_int(
                config, "processorParallelization", defaults.processor_parallelization
            ),
            manage_api_gateway_account=_bool(config, "manageApiGatewayAccount", True),
            alarm_topic_arn=config.get("alarmTopicArn") or None,
        )


def _float(config: pulumi.Config, key: str, default: float) -> float:
    value = config.get_float(key)
    return default if value is None else value


def _int(config: pulumi.Config, key: str, default: int) -> int:
    value = config.get_int(key)
    return default if value is None else value


def _bool(config: pulumi.Config, key: str, default: bool) -> bool:
    value = config.get_bool(key)
    return default if value is None else value


def _number(value: float) -> str:
    return f"{value:g}"


# --- the stack -------------------------------------------------------------------------


@dataclass
class StreamerStack:
    """The declared resources, keyed the way the outputs and tests look them up."""

    tables: dict[str, aws.dynamodb.Table]
    functions: dict[str, aws.lambda_.Function]
    roles: dict[str, aws.iam.Role]
    log_groups: dict[str, aws.cloudwatch.LogGroup]
    api: aws.apigatewayv2.Api
    stage: aws.apigatewayv2.Stage
    dead_letter_queue: aws.sqs.Queue
    stream_mapping: aws.lambda_.EventSourceMapping
    alarms: dict[str, aws.cloudwatch.MetricAlarm]
    dashboard: aws.cloudwatch.Dashboard
    websocket_url: pulumi.Output[str]
    management_endpoint: pulumi.Output[str]
    domain: aws.apigatewayv2.DomainName | None = None
    extra_outputs: dict[str, pulumi.Input[Any]] = field(default_factory=dict)

    def export(self) -> None:
        """Export the stack outputs (`pulumi stack output`)."""
        pulumi.export("websocket_url", self.websocket_url)
        pulumi.export("management_endpoint", self.management_endpoint)
        for key, table in self.tables.items():
            pulumi.export(f"{key}_table", table.name)
        pulumi.export("dlq_url", self.dead_letter_queue.url)
        pulumi.export("api_id", self.api.id)
        pulumi.export("dashboard", self.dashboard.dashboard_name)
        for key, value in self.extra_outputs.items():
            pulumi.export(key, value)


def create_stack(config: StackConfig) -> StreamerStack:
    """Declare every resource of the deployment guide for `config.environment`."""
    check_bundle(config.bundle_path)
    manifest = bundle_manifest(config)
    certificate_arn = _certificate_arn(config)
    env = config.name_suffix
    region = aws.get_region_output().region
    tables = _tables(env)
    api = aws.apigatewayv2.Api(
        "websocket-api",
        name=f"streamer-{env}",
        protocol_type="WEBSOCKET",
        route_selection_expression="$request.body.action",
        description="Streamer: long-running operations over WebSocket",
    )
    management_endpoint = pulumi.Output.format(
        "https://{0}.execute-api.{1}.amazonaws.com/{2}", api.id, region, config.stage
    )
    dlq = aws.sqs.Queue(
        "processor-dlq",
        name=f"streamer-processor-dlq-{env}",
        message_retention_seconds=DLQ_RETENTION_S,
        sqs_managed_sse_enabled=True,
    )

    roles: dict[str, aws.iam.Role] = {}
    log_groups: dict[str, aws.cloudwatch.LogGroup] = {}
    functions: dict[str, aws.lambda_.Function] = {}
    code = pulumi.FileArchive(config.bundle_path)
    for spec in FUNCTIONS:
        name = f"streamer-{spec.key}-{env}"
        log_group = aws.cloudwatch.LogGroup(
            f"{spec.key}-logs", name=f"/aws/lambda/{name}", retention_in_days=LOG_RETENTION_DAYS
        )
        role = aws.iam.Role(
            f"{spec.key}-role",
            assume_role_policy=_assume_role_policy("lambda.amazonaws.com"),
            description=f"Execution role of {name}",
        )
        policy = aws.iam.RolePolicy(
            f"{spec.key}-policy",
            role=role.id,
            policy=_function_policy(
                spec, config, tables, log_group, api, dlq if spec.key == "processor" else None
            ),
        )
        functions[spec.key] = aws.lambda_.Function(
            f"{spec.key}-function",
            name=name,
            role=role.arn,
            runtime=manifest.runtime,
            handler=spec.handler,
            code=code,
            architectures=[manifest.architecture],
            timeout=spec.timeout_s,
            memory_size=spec.memory_mb,
            tracing_config=aws.lambda_.FunctionTracingConfigArgs(mode="Active"),
            environment=aws.lambda_.FunctionEnvironmentArgs(
                variables=_environment(spec, config, tables, management_endpoint)
            ),
            opts=pulumi.ResourceOptions(depends_on=[log_group, policy]),
        )
        roles[spec.key] = role
        log_groups[spec.key] = log_group

    roles[PUSHER.key], log_groups[PUSHER.key] = _pusher_role(config, tables, api)
    stage = _websocket_api(config, api, functions)
    stream_mapping = aws.lambda_.EventSourceMapping(
        "processor-stream",
        function_name=functions["processor"].arn,
        event_source_arn=tables["requests"].stream_arn,
        starting_position="LATEST",
        batch_size=STREAM_BATCH_SIZE,
        parallelization_factor=config.processor_parallelization,
        filter_criteria=aws.lambda_.EventSourceMappingFilterCriteriaArgs(
            filters=[
                aws.lambda_.EventSourceMappingFilterCriteriaFilterArgs(
                    pattern=PENDING_FILTER_PATTERN
                )
            ]
        ),
        function_response_types=["ReportBatchItemFailures"],
        bisect_batch_on_function_error=True,
        maximum_retry_attempts=STREAM_MAX_RETRY_ATTEMPTS,
        maximum_record_age_in_seconds=STREAM_MAX_RECORD_AGE_S,
        destination_config=aws.lambda_.EventSourceMappingDestinationConfigArgs(
            on_failure=aws.lambda_.EventSourceMappingDestinationConfigOnFailureArgs(
                destination_arn=dlq.arn
            )
        ),
    )
    _sweeper_schedule(env, functions["sweeper"])
    alarms = _alarms(config, functions, dlq)
    dashboard = _dashboard(env, config.stage, region, api, functions, dlq)

    websocket_url = pulumi.Output.format(
        "wss://{0}.execute-api.{1}.amazonaws.com/{2}", api.id, region, config.stage
    )
    domain = None
    extra: dict[str, pulumi.Input[Any]] = {
        "execute_api_url": websocket_url,
        "pusher_role_arn": roles[PUSHER.key].arn,
    }
    if config.domain and certificate_arn is not None:
        domain = _custom_domain(config, certificate_arn, api, stage)
        websocket_url = pulumi.Output.from_input(
            f"wss://{domain_host(config.domain)}/{config.stage}"
        )
        # Point the domain's DNS (CNAME or alias) at these.
        extra["domain_target"] = domain.domain_name_configuration.target_domain_name
        extra["domain_hosted_zone_id"] = domain.domain_name_configuration.hosted_zone_id
    return StreamerStack(
        tables=tables,
        functions=functions,
        roles=roles,
        log_groups=log_groups,
        api=api,
        stage=stage,
        dead_letter_queue=dlq,
        stream_mapping=stream_mapping,
        alarms=alarms,
        dashboard=dashboard,
        websocket_url=websocket_url,
        management_endpoint=management_endpoint,
        domain=domain,
        extra_outputs=extra,
    )


# --- tables ----------------------------------------------------------------------------


def _gsi(name: str, hash_key: str, range_key: str | None = None) -> Any:
    keys = [
        aws.dynamodb.TableGlobalSecondaryIndexKeySchemaArgs(
            attribute_name=hash_key, key_type="HASH"
        )
    ]
    if range_key is not None:
        keys.append(
            aws.dynamodb.TableGlobalSecondaryIndexKeySchemaArgs(
                attribute_name=range_key, key_type="RANGE"
            )
        )
    return aws.dynamodb.TableGlobalSecondaryIndexArgs(
        name=name, key_schemas=keys, projection_type="ALL"
    )


def _table(
    key: str,
    env: str,
    *,
    hash_key: str,
    range_key: str | None = None,
    attributes: Sequence[str],
    indexes: Sequence[Any],
    stream: bool = False,
) -> aws.dynamodb.Table:
    return aws.dynamodb.Table(
        f"{key}-table",
        name=f"streamer-{key}-{env}",
        billing_mode="PAY_PER_REQUEST",
        hash_key=hash_key,
        range_key=range_key,
        attributes=[aws.dynamodb.TableAttributeArgs(name=a, type="S") for a in attributes],
        global_secondary_indexes=list(indexes),
        ttl=aws.dynamodb.TableTtlArgs(attribute_name="TTL", enabled=True),
        point_in_time_recovery=aws.dynamodb.TablePointInTimeRecoveryArgs(enabled=True),
        stream_enabled=stream or None,
        stream_view_type="NEW_AND_OLD_IMAGES" if stream else None,
    )


def _tables(env: str) -> dict[str, aws.dynamodb.Table]:
    """The three tables of DESIGN §6 (same keys and indexes as `streamer tables create`)."""
    return {
        "connections": _table(
            "connections",
            env,
            hash_key="ConnectionID",
            attributes=("ConnectionID", "UserID", "TenantID"),
            indexes=(_gsi("UserIndex", "UserID"), _gsi("TenantIndex", "TenantID")),
        ),
        "requests": _table(
            "requests",
            env,
            hash_key="RequestID",
            attributes=("RequestID", "ConnectionID", "Status", "UserID", "CreatedAt"),
            indexes=(
                _gsi("ConnectionIndex", "ConnectionID", "CreatedAt"),
                _gsi("StatusIndex", "Status", "CreatedAt"),
                _gsi("UserIndex", "UserID", "CreatedAt"),
            ),
            stream=True,
        ),
        "subscriptions": _table(
            "subscriptions",
            env,
            hash_key="RequestID",
            range_key="ConnectionID",
            attributes=("RequestID", "ConnectionID"),
            indexes=(_gsi("ConnectionIndex", "ConnectionID"),),
        ),
    }


# --- functions: environment and IAM ----------------------------------------------------


def _environment(
    spec: FunctionSpec,
    config: StackConfig,
    tables: Mapping[str, aws.dynamodb.Table],
    management_endpoint: pulumi.Output[str],
) -> dict[str, pulumi.Input[str]]:
    variables: dict[str, pulumi.Input[str]] = {
        "CONNECTIONS_TABLE": tables["connections"].name,
        "REQUESTS_TABLE": tables["requests"].name,
        "SUBSCRIPTIONS_TABLE": tables["subscriptions"].name,
        "LOG_LEVEL": config.log_level,
        "CONNECTION_TTL_HOURS": _number(config.connection_ttl_hours),
        "REQUEST_TTL_DAYS": _number(config.request_ttl_days),
        "MAX_CONNECTIONS_PER_USER": str(config.max_connections_per_user),
        "STREAMER_APP": config.app,
    }
    if spec.key == "connect":
        if config.jwt_public_key is not None:
            variables["JWT_PUBLIC_KEY"] = config.jwt_public_key
        if config.jwt_jwks_url:
            variables["JWT_JWKS_URL"] = config.jwt_jwks_url
        if config.jwt_audience:
            variables["JWT_AUDIENCE"] = config.jwt_audience
        if config.jwt_issuer:
            variables["JWT_ISSUER"] = config.jwt_issuer
        if config.allowed_tenants:
            variables["ALLOWED_TENANTS"] = config.allowed_tenants
    if spec.disconnects and config.cancel_on_disconnect:
        variables["CANCEL_ON_DISCONNECT"] = "true"
    if _posts(spec, config):
        variables["WEBSOCKET_ENDPOINT"] = management_endpoint
    return variables


def _assume_role_policy(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": service},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )


def _statement(sid: str, actions: Sequence[str], resources: Sequence[Any]) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": list(actions), "Resource": list(resources)}


def _posts(spec: FunctionSpec, config: StackConfig) -> bool:
    """Whether the function delivers messages (a cancelling disconnect does too)."""
    return spec.posts or (spec.disconnects and config.cancel_on_disconnect)


def _table_access(spec: FunctionSpec, config: StackConfig) -> list[TableAccess]:
    """The function's table access, merged to one entry per table."""
    grants = list(spec.tables)
    if spec.disconnects and config.cancel_on_disconnect:
        grants.extend(_CANCEL_ON_DISCONNECT_ACCESS)
    merged: dict[str, TableAccess] = {}
    for grant in grants:
        seen = merged.get(grant.table, TableAccess(grant.table))
        merged[grant.table] = TableAccess(
            grant.table,
            tuple(dict.fromkeys((*seen.actions, *grant.actions))),
            tuple(dict.fromkeys((*seen.index_queries, *grant.index_queries))),
        )
    return list(merged.values())


def _function_policy(
    spec: FunctionSpec,
    config: StackConfig,
    tables: Mapping[str, aws.dynamodb.Table],
    log_group: aws.cloudwatch.LogGroup,
    api: aws.apigatewayv2.Api,
    dead_letter_queue: aws.sqs.Queue | None,
) -> pulumi.Output[str]:
    """The function's inline policy: its tables and indexes, its log group, X-Ray,
    and, where they apply, this stage's management API, the stream and the DLQ."""
    statements: list[dict[str, Any]] = []
    for access in _table_access(spec, config):
        table = tables[access.table]
        title = access.table.capitalize()
        if access.actions:
            statements.append(_statement(f"{title}Table", access.actions, [table.arn]))
        if access.index_queries:
            index_arns = [
                pulumi.Output.concat(table.arn, "/index/", index) for index in access.index_queries
            ]
            statements.append(_statement(f"{title}Indexes", ["dynamodb:Query"], index_arns))
    if _posts(spec, config):
        connections_arns = [
            pulumi.Output.format("{0}/{1}/{2}/@connections/*", api.execution_arn, config.stage, m)
            for m in MANAGE_CONNECTIONS_METHODS
        ]
        statements.append(
            _statement("ManageConnections", ["execute-api:ManageConnections"], connections_arns)
        )
    if spec.key == "processor":
        statements.append(
            _statement("RequestsStream", STREAM_READ_ACTIONS, [tables["requests"].stream_arn])
        )
    if dead_letter_queue is not None:
        statements.append(
            _statement("DeadLetterQueue", ["sqs:SendMessage"], [dead_letter_queue.arn])
        )
    statements.append(_statement("Logs", LOG_ACTIONS, [pulumi.Output.concat(log_group.arn, ":*")]))
    # X-Ray has no resource-level permissions: "*" is the only resource it accepts.
    statements.append(_statement("XRay", XRAY_ACTIONS, ["*"]))
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": statements})


def _pusher_role(
    config: StackConfig, tables: Mapping[str, aws.dynamodb.Table], api: aws.apigatewayv2.Api
) -> tuple[aws.iam.Role, aws.cloudwatch.LogGroup]:
    """The execution role and log group of your own pushing function."""
    name = f"streamer-{PUSHER.key}-{config.name_suffix}"
    log_group = aws.cloudwatch.LogGroup(
        f"{PUSHER.key}-logs", name=f"/aws/lambda/{name}", retention_in_days=LOG_RETENTION_DAYS
    )
    role = aws.iam.Role(
        f"{PUSHER.key}-role",
        assume_role_policy=_assume_role_policy("lambda.amazonaws.com"),
        description=f"Execution role of your pushing function {name}",
    )
    aws.iam.RolePolicy(
        f"{PUSHER.key}-policy",
        role=role.id,
        policy=_function_policy(PUSHER, config, tables, log_group, api, None),
    )
    return role, log_group


# --- the WebSocket API -----------------------------------------------------------------


def _websocket_api(
    config: StackConfig,
    api: aws.apigatewayv2.Api,
    functions: Mapping[str, aws.lambda_.Function],
) -> aws.apigatewayv2.Stage:
    env = config.name_suffix
    routes: list[aws.apigatewayv2.Route] = []
    for route_key, function_key in _ROUTE_FUNCTIONS.items():
        slug = route_key.lstrip("$")
        function = functions[function_key]
        integration = aws.apigatewayv2.Integration(
            f"{slug}-integration",
            api_id=api.id,
            integration_type="AWS_PROXY",
            integration_method="POST",
            integration_uri=function.invoke_arn,
        )
        routes.append(
            aws.apigatewayv2.Route(
                f"{slug}-route",
                api_id=api.id,
                route_key=route_key,
                authorization_type="NONE",
                target=pulumi.Output.concat("integrations/", integration.id),
            )
        )
        aws.lambda_.Permission(
            f"{slug}-invoke",
            action="lambda:InvokeFunction",
            function=function.name,
            principal="apigateway.amazonaws.com",
            source_arn=pulumi.Output.format(
                "{0}/{1}/{2}", api.execution_arn, config.stage, route_key
            ),
        )

    access_logs = aws.cloudwatch.LogGroup(
        "api-access-logs",
        name=f"/aws/apigateway/streamer-{env}",
        retention_in_days=LOG_RETENTION_DAYS,
    )
    stage_dependencies: list[pulumi.Resource] = [*routes]
    if config.manage_api_gateway_account:
        stage_dependencies.append(_apigateway_account())
    return aws.apigatewayv2.Stage(
        "websocket-stage",
        api_id=api.id,
        name=config.stage,
        auto_deploy=True,
        access_log_settings=aws.apigatewayv2.StageAccessLogSettingsArgs(
            destination_arn=access_logs.arn, format=ACCESS_LOG_FORMAT
        ),
        default_route_settings=aws.apigatewayv2.StageDefaultRouteSettingsArgs(
            throttling_burst_limit=config.throttle_burst_limit,
            throttling_rate_limit=config.throttle_rate_limit,
        ),
        opts=pulumi.ResourceOptions(depends_on=stage_dependencies),
    )


def _apigateway_account() -> aws.apigateway.Account:
    """The region-wide role API Gateway writes access logs with (one per account)."""
    role = aws.iam.Role(
        "apigateway-cloudwatch-role",
        assume_role_policy=_assume_role_policy("apigateway.amazonaws.com"),
        description="Lets API Gateway write access logs to CloudWatch",
    )
    attachment = aws.iam.RolePolicyAttachment(
        "apigateway-cloudwatch-logs",
        role=role.name,
        policy_arn=APIGATEWAY_CLOUDWATCH_POLICY,
    )
    return aws.apigateway.Account(
        "apigateway-account",
        cloudwatch_role_arn=role.arn,
        opts=pulumi.ResourceOptions(depends_on=[attachment]),
    )


def _certificate_arn(config: StackConfig) -> str | None:
    """The custom domain's certificate: `streamer:certificateArn`, else the region's
    most recent ISSUED ACM certificate for the domain's host; None without a domain.

    Raises:
        StackConfigError: a domain with no such certificate (one line saying what to do).
    """
    if not config.domain:
        return None
    if config.certificate_arn:
        return config.certificate_arn
    host = domain_host(config.domain)
    try:
        found = aws.acm.get_certificate(domain=host, statuses=["ISSUED"], most_recent=True)
    except Exception:
        # The provider reports "no certificate" as a failed invoke, with no type of its own.
        raise StackConfigError(
            f"streamer:domain {host} has no ISSUED ACM certificate in this region: request one "
            f"(`aws acm request-certificate --domain-name {host} --validation-method DNS`) "
            "and validate it, or set streamer:certificateArn"
        ) from None
    return str(found.arn)


def _custom_domain(
    config: StackConfig,
    certificate_arn: str,
    api: aws.apigatewayv2.Api,
    stage: aws.apigatewayv2.Stage,
) -> aws.apigatewayv2.DomainName:
    assert config.domain is not None
    domain = aws.apigatewayv2.DomainName(
        "custom-domain",
        domain_name=domain_host(config.domain),
        domain_name_configuration=aws.apigatewayv2.DomainNameDomainNameConfigurationArgs(
            certificate_arn=certificate_arn,
            endpoint_type="REGIONAL",
            security_policy="TLS_1_2",
        ),
    )
    # Mapped under the stage name, so wss://<domain>/<stage> as in the guide.
    aws.apigatewayv2.ApiMapping(
        "custom-domain-mapping",
        api_id=api.id,
        domain_name=domain.id,
        stage=stage.name,
        api_mapping_key=config.stage,
    )
    return domain


# --- schedule, alarms, dashboard ---------------------------------------------------------


def _sweeper_schedule(env: str, sweeper: aws.lambda_.Function) -> None:
    rule = aws.cloudwatch.EventRule(
        "sweeper-schedule",
        name=f"streamer-sweeper-{env}",
        schedule_expression=SWEEP_SCHEDULE,
        description="Requeue or fail requests whose processor lease expired",
    )
    aws.cloudwatch.EventTarget("sweeper-target", rule=rule.name, arn=sweeper.arn)
    aws.lambda_.Permission(
        "sweeper-invoke",
        action="lambda:InvokeFunction",
        function=sweeper.name,
        principal="events.amazonaws.com",
        source_arn=rule.arn,
    )


def _alarms(
    config: StackConfig,
    functions: Mapping[str, aws.lambda_.Function],
    dlq: aws.sqs.Queue,
) -> dict[str, aws.cloudwatch.MetricAlarm]:
    env = config.name_suffix
    actions = [config.alarm_topic_arn] if config.alarm_topic_arn else []

    def alarm(key: str, **kwargs: Any) -> aws.cloudwatch.MetricAlarm:
        return aws.cloudwatch.MetricAlarm(
            f"{key}-alarm",
            name=f"streamer-{key}-{env}",
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
            alarm_actions=actions,
            ok_actions=actions,
            **kwargs,
        )

    alarms = {
        f"errors-{key}": alarm(
            f"high-errors-{key}",
            alarm_description=f"High Lambda error rate: streamer-{key}-{env}",
            namespace="AWS/Lambda",
            metric_name="Errors",
            dimensions={"FunctionName": function.name},
            statistic="Sum",
            period=ALARM_PERIOD_S,
            evaluation_periods=2,
            threshold=ERROR_ALARM_THRESHOLD,
        )
        for key, function in functions.items()
    }
    alarms["connection-limit"] = alarm(
        "connection-limit",
        alarm_description="Approaching the 10,000 connections of one WebSocket API",
        namespace="Streamer",
        metric_name="ActiveConnections",
        statistic="Maximum",
        period=ALARM_PERIOD_S,
        evaluation_periods=1,
        threshold=ACTIVE_CONNECTIONS_ALARM_THRESHOLD,
    )
    alarms["dlq-not-empty"] = alarm(
        "dlq-not-empty",
        alarm_description="Stream records the processor gave up on are in the DLQ",
        namespace="AWS/SQS",
        metric_name="ApproximateNumberOfMessagesVisible",
        dimensions={"QueueName": dlq.name},
        statistic="Maximum",
        period=ALARM_PERIOD_S,
        evaluation_periods=1,
        threshold=0,
    )
    alarms["iterator-age"] = alarm(
        "iterator-age",
        alarm_description="The processor is falling behind the requests stream",
        namespace="AWS/Lambda",
        metric_name="IteratorAge",
        dimensions={"FunctionName": functions["processor"].name},
        statistic="Maximum",
        period=ALARM_PERIOD_S,
        evaluation_periods=1,
        threshold=ITERATOR_AGE_ALARM_MS,
    )
    return alarms


def _dashboard(
    env: str,
    stage: str,
    region: pulumi.Output[str],
    api: aws.apigatewayv2.Api,
    functions: Mapping[str, aws.lambda_.Function],
    dlq: aws.sqs.Queue,
) -> aws.cloudwatch.Dashboard:
    def lambda_metrics(metric: str, stat: str) -> list[list[Any]]:
        return [
            ["AWS/Lambda", metric, "FunctionName", function.name, {"stat": stat}]
            for function in functions.values()
        ]

    def widget(title: str, metrics: list[list[Any]], stat: str) -> dict[str, Any]:
        return {
            "type": "metric",
            "width": 12,
            "height": 6,
            "properties": {
                "title": title,
                "metrics": metrics,
                "period": ALARM_PERIOD_S,
                "stat": stat,
                "region": region,
            },
        }

    widgets = [
        # The guide's widget, one line per function.
        widget(
            "Lambda Performance",
            [
                *lambda_metrics("Invocations", "Sum"),
                *lambda_metrics("Errors", "Sum"),
                *lambda_metrics("Duration", "Average"),
                *lambda_metrics("ConcurrentExecutions", "Maximum"),
            ],
            "Average",
        ),
        widget(
            "Streamer requests",
            [
                ["Streamer", "RequestsQueued", {"stat": "Sum"}],
                ["Streamer", "RequestsCompleted", {"stat": "Sum"}],
                ["Streamer", "RequestsFailed", {"stat": "Sum"}],
                ["Streamer", "ProcessingLatency", {"stat": "p99"}],
            ],
            "Sum",
        ),
        widget(
            "Streamer connections",
            [
                ["Streamer", "ActiveConnections", {"stat": "Maximum"}],
                ["Streamer", "ConnectionEstablished", {"stat": "Sum"}],
                ["Streamer", "ConnectionClosed", {"stat": "Sum"}],
                ["Streamer", "AuthenticationFailed", {"stat": "Sum"}],
            ],
            "Sum",
        ),
        widget(
            "Requests stream",
            [
                ["AWS/Lambda", "IteratorAge", "FunctionName", functions["processor"].name],
                ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", dlq.name],
            ],
            "Maximum",
        ),
        widget(
            "WebSocket API",
            [
                ["AWS/ApiGateway", metric, "ApiId", api.id, "Stage", stage]
                for metric in ("ConnectCount", "MessageCount", "ClientError", "ExecutionError")
            ],
            "Sum",
        ),
    ]
    return aws.cloudwatch.Dashboard(
        "dashboard",
        dashboard_name=f"streamer-{env}",
        dashboard_body=pulumi.Output.json_dumps({"widgets": widgets}),
    )
