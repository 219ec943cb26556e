"""`AwsJsonSession` and `AwsJsonClient`: DynamoDB and DynamoDB Streams over keep-alive
HTTP/1.1 to a plain-HTTP endpoint, with botocore's values, errors and retries.

What a call costs on the event loop is the body's walk and JSON, a SigV4
signature and one exchange on a pooled socket. What it skips of aiobotocore's
pipeline: event hooks, endpoint rule sets, type validation of parameters
(unknown and missing ones still raise `ParamValidationError`), aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import threading
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from botocore.config import Config
from botocore.exceptions import ConnectionError as BotocoreConnectionError
from botocore.exceptions import HTTPClientError
from botocore.retries import quota
from botocore.retries.standard import (
    ExponentialBackoff,
    RetryContext,
    RetryPolicy,
    RetryQuotaChecker,
    StandardRetryConditions,
)

from adapters.awsjson.http import ConnectionPool, HttpResponse
from adapters.awsjson.shapes import Walk, compile_input, compile_output
from adapters.awsjson.signing import SigV4Signer, StaticCredentials

if TYPE_CHECKING:
    import botocore.session
    from botocore.model import OperationModel, ServiceModel

__all__ = ["AwsJsonClient", "AwsJsonSession", "ClientMeta", "get_awsjson_session"]

SERVICES: Final = frozenset({"dynamodb", "dynamodbstreams"})
"""The services it speaks (both AWS JSON 1.0)."""

_USER_AGENT: Final = "streamer-awsjson/1"
_DEFAULT_CONFIG: Final = Config(
    retries={"mode": "standard", "total_max_attempts": 5},
    connect_timeout=3.0,
    read_timeout=10.0,
    max_pool_connections=50,
)
"""`adapters.aws.client_config()`'s values, when a client is made without a config."""

_ENCODER: Final = json.JSONEncoder(separators=(",", ":"))
"""botocore sends `json.dumps` of the body; the same JSON, without the spaces."""

_session: AwsJsonSession | None = None


def get_awsjson_session() -> AwsJsonSession:
    """The process's `AwsJsonSession`, made on first use."""
    global _session
    if _session is None:
        _session = AwsJsonSession()
    return _session


@dataclass(frozen=True, slots=True)
class ClientMeta:
    """What botocore's `client.meta` offers that a caller may read.

    Args:
        service_model: the botocore service model.
        region_name: the client's region.
        endpoint_url: where it sends calls.
        config: the botocore config it was made with.
        method_to_api_mapping: `put_item` → `PutItem`, for each operation.
    """

    service_model: ServiceModel
    region_name: str
    endpoint_url: str
    config: Config
    method_to_api_mapping: dict[str, str]


@dataclass(frozen=True, slots=True)
class _Operation:
    """One operation, compiled: its model, target header and the two walks."""

    name: str
    model: OperationModel
    target: str
    serialize: Walk
    parse: Walk


@dataclass(slots=True)
class _Service:
    """A loaded service model, its exceptions and its operations compiled on first use."""

    model: ServiceModel
    exceptions: Any
    content_type: str
    methods: dict[str, str]
    operations: dict[str, _Operation] = field(default_factory=dict)

    def operation(self, name: str) -> _Operation:
        found = self.operations.get(name)
        if found is None:
            model = self.model.operation_model(name)
            found = _Operation(
                name=name,
                model=model,
                target=f"{self.model.metadata['targetPrefix']}.{name}",
                serialize=compile_input(model.input_shape)
                if model.input_shape is not None
                else (lambda _: {}),
                parse=compile_output(model.output_shape)
                if model.output_shape is not None
                else (lambda _: {}),
            )
            self.operations[name] = found
        return found


class AwsJsonSession:
    """Makes `AwsJsonClient`s: `async with session.client("dynamodb", **kwargs)`, the
    same call as on an aioboto3 session. Service models, compiled operations and
    credentials found in the environment are shared by its clients.
    """

    def __init__(self) -> None:
        self._botocore: botocore.session.Session | None = None
        self._lock = threading.Lock()
        self._services: dict[str, _Service] = {}

    @contextlib.asynccontextmanager
    async def client(
        self,
        service_name: str,
        *,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        config: Config | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
    ) -> AsyncIterator[AwsJsonClient]:
        """An open client of `service_name`, its connections closed when the block ends.

        Raises:
            ValueError: a service other than DynamoDB (Streams), no `endpoint_url`,
                an `https` one, or a retry mode other than standard.
        """
        if service_name not in SERVICES:
            raise ValueError(f"AwsJsonSession speaks {sorted(SERVICES)}, not {service_name!r}")
        if not endpoint_url:
            raise ValueError("AwsJsonSession needs an endpoint_url (a local DynamoDB)")
        url = urlsplit(endpoint_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"AwsJsonSession speaks plain HTTP, not {endpoint_url!r}")
        config = _DEFAULT_CONFIG.merge(config) if config is not None else _DEFAULT_CONFIG
        options: Any = config  # botocore's Config sets its attributes dynamically
        retries = options.retries or {}
        if retries.get("mode", "standard") != "standard":
            raise ValueError(f"AwsJsonSession retries in standard mode, not {retries['mode']!r}")
        loop = asyncio.get_running_loop()
        service = await loop.run_in_executor(None, self._service, service_name)
        if aws_access_key_id and aws_secret_access_key:
            credentials = StaticCredentials(
                aws_access_key_id, aws_secret_access_key, aws_session_token
            )
        else:
            credentials = await loop.run_in_executor(None, self._environment_credentials)
        region = (
            region_name if region_name else await loop.run_in_executor(None, self._default_region)
        )
        port = url.port or 80
        host_header = url.netloc.rpartition("@")[2]
        path = url.path or "/"
        pool = ConnectionPool(
            host=url.hostname,
            port=port,
            endpoint_url=endpoint_url,
            max_connections=options.max_pool_connections or 10,
            connect_timeout_s=float(options.connect_timeout or 60),
            read_timeout_s=float(options.read_timeout or 60),
        )
        signer = SigV4Signer(
            credentials,
            region=region,
            service=service.model.signing_name or service_name,
            host=host_header,
            path=path,
        )
        made = AwsJsonClient(
            service=service,
            pool=pool,
            signer=signer,
            meta=ClientMeta(service.model, region, endpoint_url, config, dict(service.methods)),
            max_attempts=int(retries.get("total_max_attempts", retries.get("max_attempts", 2) + 1)),
            path=path,
        )
        try:
            yield made
        finally:
            pool.close()

    @property
    def botocore_session(self) -> botocore.session.Session:
        """The botocore session its models and credentials come from (made on first use)."""
        with self._lock:
            if self._botocore is None:
                import botocore.session

                self._botocore = botocore.session.get_session()
            return self._botocore

    def _service(self, name: str) -> _Service:
        with self._lock:
            found = self._services.get(name)
        if found is not None:
            return found
        from botocore import xform_name
        from botocore.errorfactory import ClientExceptionsFactory

        model = self.botocore_session.get_service_model(name)
        service = _Service(
            model=model,
            exceptions=ClientExceptionsFactory().create_client_exceptions(model),
            content_type=f"application/x-amz-json-{model.metadata['jsonVersion']}",
            methods={xform_name(op): op for op in model.operation_names},
        )
        with self._lock:
            return self._services.setdefault(name, service)

    def _environment_credentials(self) -> StaticCredentials:
        found = self.botocore_session.get_credentials()
        if found is None:
            from botocore.exceptions import NoCredentialsError

            raise NoCredentialsError()
        frozen = found.get_frozen_credentials()
        if not frozen.access_key or not frozen.secret_key:
            from botocore.exceptions import NoCredentialsError

            raise NoCredentialsError()
        return StaticCredentials(frozen.access_key, frozen.secret_key, frozen.token)

    def _default_region(self) -> str:
        region = self.botocore_session.get_config_variable("region")
        if not region:
            from botocore.exceptions import NoRegionError

            raise NoRegionError()
        return str(region)


class AwsJsonClient:
    """A DynamoDB or DynamoDB Streams client: `await client.put_item(**params)`.

    Results are botocore's (`ResponseMetadata` included); a refusal raises the
    service's modelled `ClientError` subclass (`client.exceptions.…`) with the
    `response` botocore would give; a connection that fails raises botocore's
    `EndpointConnectionError`, `ConnectTimeoutError`, `ReadTimeoutError` or
    `ConnectionClosedError`. Throttling, 5xx, bad checksums and connection
    errors are retried as in botocore's standard mode: `max_attempts` tries with
    exponential backoff and jitter, within the same retry quota.

    Only operations, `exceptions` and `meta` are offered: no waiters or
    paginators (`adapters.dynamodb.tables` keeps aioboto3's client for those).

    Args:
        service: the compiled service.
        pool: the connections it sends on (closed by its session).
        signer: signs each attempt.
        meta: `client.meta`.
        max_attempts: tries per call, the first included.
        path: the request path.
    """

    def __init__(
        self,
        *,
        service: _Service,
        pool: ConnectionPool,
        signer: SigV4Signer,
        meta: ClientMeta,
        max_attempts: int,
        path: str,
    ) -> None:
        self._service = service
        self._pool = pool
        self._signer = signer
        self._max_attempts = max_attempts
        self._request_line = f"POST {path} HTTP/1.1\r\n"
        self._tail = f"Accept-Encoding: identity\r\nUser-Agent: {_USER_AGENT}\r\n"
        self._policy = RetryPolicy(
            retry_checker=StandardRetryConditions(max_attempts=max_attempts),
            retry_backoff=ExponentialBackoff(),
        )
        self._quota = quota.RetryQuota()
        self._quota_checker = RetryQuotaChecker(self._quota)
        self._error_parser: Any = None
        self.exceptions = service.exceptions
        self.meta = meta

    @property
    def pool(self) -> ConnectionPool:
        """Its connection pool (tests look at reuse)."""
        return self._pool

    def __getattr__(self, name: str) -> Callable[..., Coroutine[Any, Any, dict[str, Any]]]:
        operation_name = self._service.methods.get(name) if not name.startswith("_") else None
        if operation_name is None:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        operation = self._service.operation(operation_name)

        @functools.wraps(self._call)
        async def call(*args: Any, **params: Any) -> dict[str, Any]:
            if args:
                raise TypeError(f"{name}() only accepts keyword arguments.")
            return await self._call(operation, params)

        call.__name__ = call.__qualname__ = name
        setattr(self, name, call)
        return call

    async def _call(self, operation: _Operation, params: dict[str, Any]) -> dict[str, Any]:
        body = _ENCODER.encode(operation.serialize(params)).encode()
        content_type = self._service.content_type
        head_end = f"Content-Length: {len(body)}\r\n{self._tail}\r\n"
        retry_context: dict[str, Any] = {}
        attempts = 1
        while True:
            headers = self._signer.headers(
                target=operation.target, content_type=content_type, body=body
            )
            data = f"{self._request_line}{headers}{head_end}".encode() + body
            response: HttpResponse | None = None
            exception: Exception | None = None
            try:
                response = await self._pool.request(data)
            except (HTTPClientError, BotocoreConnectionError) as exc:
                exception = exc
            if response is not None and response.status_code < 300 and _is_intact(response):
                parsed = _parse_body(operation.parse, response.content)
                parsed["ResponseMetadata"] = _metadata(response, attempts)
                if attempts >= self._max_attempts:
                    parsed["ResponseMetadata"]["MaxAttemptsReached"] = True
                self._release_quota(retry_context, response)
                return parsed
            parsed_error = self._parse_slowly(operation, response) if response else None
            context = RetryContext(
                attempt_number=attempts,
                operation_model=operation.model,
                parsed_response=parsed_error,
                http_response=response,
                caught_exception=exception,
                request_context=retry_context,
            )
            checker = self._quota_checker
            if self._policy.should_retry(context) and checker.acquire_retry_quota(context):
                await asyncio.sleep(self._policy.compute_retry_delay(context))
                attempts += 1
                continue
            if exception is not None:
                raise exception
            assert response is not None
            assert parsed_error is not None
            metadata = parsed_error.setdefault("ResponseMetadata", {})
            metadata.update(context.get_retry_metadata())
            metadata["RetryAttempts"] = attempts - 1
            self._release_quota(retry_context, response)
            if response.status_code < 300:
                return parsed_error
            code = parsed_error.get("Error", {}).get("Code")
            raise self.exceptions.from_code(code)(parsed_error, operation.name)

    def _release_quota(self, retry_context: dict[str, Any], response: HttpResponse) -> None:
        """Give retry quota back after a 2xx, as botocore's `after-call` hook does: what
        the last retry took, or one unit when there was none."""
        if 200 <= response.status_code < 300:
            self._quota.release(retry_context.get("retry_quota_capacity", 1))

    def _parse_slowly(self, operation: _Operation, response: HttpResponse) -> dict[str, Any]:
        """botocore's own parse: errors (and their modelled fields, e.g. the `Item` of
        a failed condition) and a body whose checksum did not match."""
        if self._error_parser is None:
            from botocore.parsers import create_parser

            self._error_parser = create_parser("json")
        response_dict = {
            "status_code": response.status_code,
            "headers": response.headers,
            "body": response.content,
            "context": {"operation_name": operation.name},
        }
        parsed: dict[str, Any] = self._error_parser.parse(
            response_dict, operation.model.output_shape
        )
        if response.status_code >= 300:
            code = parsed.get("Error", {}).get("Code")
            error_shape = (
                self._service.model.shape_for_error_code(code) if code is not None else None
            )
            if error_shape is not None:
                parsed.update(self._error_parser.parse(response_dict, error_shape))
        return parsed


def _is_intact(response: HttpResponse) -> bool:
    """The body matches DynamoDB's `x-amz-crc32` (botocore retries one that does not)."""
    checksum = response.headers.get("x-amz-crc32")
    return checksum is None or zlib.crc32(response.content) & 0xFFFFFFFF == int(checksum)


def _parse_body(parse: Walk, content: bytes) -> dict[str, Any]:
    if not content:
        return {}
    text = content.decode("utf-8")
    try:
        decoded = json.loads(text)
    except ValueError:
        decoded = {"message": text}
    parsed: dict[str, Any] = parse(decoded)
    return parsed


def _metadata(response: HttpResponse, attempts: int) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    request_id = response.headers.get("x-amzn-requestid")
    if request_id is not None:
        metadata["RequestId"] = request_id
    metadata["HTTPStatusCode"] = response.status_code
    metadata["HTTPHeaders"] = dict(response.headers)
    metadata["RetryAttempts"] = attempts - 1
    return metadata
