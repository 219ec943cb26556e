"""The AsyncAPI 3.0 document of an app: its actions, the built-ins, every server message.

`asyncapi_document(app)` is pure: schemas come from the pydantic payload models,
the handlers' return annotations and the wire models of `streamer.protocol`, so
the document cannot say something the router does not do. The emulator serves it
at `GET /asyncapi.json`; `streamer asyncapi` prints it; `streamer codegen
typescript` turns it into the TypeScript types of the app's actions.

The document describes the server: an action is an operation the server
*receives*, answered on the same channel by its `reply` messages; a
`notification` is an operation the server *sends*. Every operation carries
`x-streamer-action` (the wire name), `x-streamer-mode` and `x-streamer-builtin`,
which the code generator reads.
"""

from __future__ import annotations

import copy
import re
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.errors import PydanticSchemaGenerationError, PydanticUserError
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import core_schema

from streamer.app import RESERVED_ACTIONS, ActionSpec, Streamer
from streamer.errors import ErrorCode
from streamer.frames import MESSAGE_LIMIT_BYTES
from streamer.protocol import MAX_CLIENT_ID_CHARS, ServerMessage

__all__ = [
    "ASYNCAPI_VERSION",
    "ERROR_CODE_MEANINGS",
    "asyncapi_document",
]

ASYNCAPI_VERSION = "3.0.0"
_CHANNEL = "api"
_CHANNEL_REF = f"#/channels/{_CHANNEL}"
_REF_TEMPLATE = "#/components/schemas/{model}"
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")

ERROR_CODE_MEANINGS: Mapping[ErrorCode, str] = {
    ErrorCode.VALIDATION_ERROR: "The frame or its payload is invalid; `details` lists why.",
    ErrorCode.UNAUTHORIZED: "The token was refused (the handshake fails with HTTP 401/403).",
    ErrorCode.NOT_FOUND: "No such request for this user in this tenant.",
    ErrorCode.INVALID_ACTION: "No action has this name.",
    ErrorCode.INTERNAL_ERROR: "The server failed; nothing about why is sent, it is logged.",
    ErrorCode.TIMEOUT: "The action ran past its timeout.",
    ErrorCode.RATE_LIMITED: "Too many messages a minute on this connection, or connections.",
    ErrorCode.PROCESSING_FAILED: "The async action failed after its retries.",
    ErrorCode.CANCELLED: "The request was cancelled.",
    ErrorCode.PAYLOAD_TOO_LARGE: "The message or the result is over the size limit.",
}
"""What each wire error code means, as the document tells clients."""

_BUILTIN_DESCRIPTIONS = {
    "ping": "Heartbeat (API Gateway closes a socket idle for 10 minutes): answers "
    "`pong` with this connection's id.",
    "status": "The stored state of one of your async requests.",
    "subscribe": "The stored state of one of your async requests; its further progress "
    "and outcome then come to this connection too (resume after a reconnect).",
    "cancel": "Cancel one of your pending or running async requests; subscribers get "
    "an `error` with `CANCELLED`.",
}


# -- the built-ins' shapes (what the router answers; a test holds them to it) --------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestIdPayload(_Strict):
    """Names one of your async requests."""

    request_id: str = Field(min_length=1, max_length=MAX_CLIENT_ID_CHARS)


class PingPayload(_Strict):
    """Nothing."""


class PingResult(_Strict):
    """The heartbeat's answer."""

    pong: Literal[True]
    connection_id: str


class RequestError(_Strict):
    """Why a request FAILED or was CANCELLED."""

    code: ErrorCode
    message: str
    details: Any = None


class RequestSnapshot(_Strict):
    """The stored state of an async request (no storage key, tenant or user)."""

    request_id: str
    action: str
    status: Literal["PENDING", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"]
    progress: float = Field(ge=0, le=100)
    message: str
    details: dict[str, Any]
    created_at: str
    updated_at: str
    result: Any = Field(default=None, description="Present once COMPLETED.")
    error: RequestError | None = Field(default=None, description="Present once FAILED/CANCELLED.")


class SubscribeResult(RequestSnapshot):
    """The snapshot, and whether this connection now follows the request."""

    subscribed: bool


class CancelResult(_Strict):
    """What a cancel did."""

    request_id: str
    status: Literal["PENDING", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"]
    cancelled: bool


_BUILTIN_TYPES: Mapping[str, tuple[type[BaseModel], type[BaseModel]]] = {
    "ping": (PingPayload, PingResult),
    "status": (RequestIdPayload, RequestSnapshot),
    "subscribe": (RequestIdPayload, SubscribeResult),
    "cancel": (RequestIdPayload, CancelResult),
}


# -- the document ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Action:
    """One operation of the document, before its schemas are generated."""

    key: str
    name: str
    mode: Literal["sync", "async"]
    builtin: bool
    description: str
    timeout_s: float | None
    payload: TypeAdapter[Any] | None
    result: TypeAdapter[Any] | None
    result_mode: JsonSchemaMode = "serialization"
    """A built-in's result model describes a dict the router builds, in which a field
    with a default may be absent: its schema is the validation one."""


def asyncapi_document(
    app: Streamer,
    *,
    async_threshold_s: float = 5.0,
    server_url: str = "ws://localhost:3001",
    version: str = "1.0.0",
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of `app` as a JSON-ready dict.

    Args:
        app: the actions to describe.
        async_threshold_s: resolves each action's mode, as the router does.
        server_url: the WebSocket URL of the `local` server (the emulator's).
        version: `info.version`, the version of the app's API.
    """
    actions = list(_actions(app, async_threshold_s))
    messages_by_type = _server_message_models()
    inputs: list[tuple[tuple[str, str], JsonSchemaMode, TypeAdapter[Any]]] = []
    for action in actions:
        if action.payload is not None:
            inputs.append(((action.key, "payload"), "validation", action.payload))
        if action.result is not None:
            inputs.append(((action.key, "result"), action.result_mode, action.result))
    for type_name, model in messages_by_type.items():
        inputs.append(((type_name, "message"), "serialization", TypeAdapter(model)))
    schemas_by_key, definitions = TypeAdapter.json_schemas(
        inputs, ref_template=_REF_TEMPLATE, schema_generator=_WireSchema
    )
    _tell_wire_truths(definitions.get("$defs", {}), messages_by_type)
    schemas: dict[str, Any] = {
        name: _asyncapi_schema(schema) for name, schema in definitions.get("$defs", {}).items()
    }

    def schema_of(key: str, part: str, mode: JsonSchemaMode) -> JsonSchemaValue:
        found = schemas_by_key.get(((key, part), mode))
        return _asyncapi_schema(found) if found is not None else {}

    generic = {
        type_name: schema_of(type_name, "message", "serialization")
        for type_name in messages_by_type
    }
    messages: dict[str, Any] = {}
    for type_name, schema in generic.items():
        messages[type_name] = _message(type_name, schema, _resolve(schema, schemas))

    operations: dict[str, Any] = {}
    for action in actions:
        payload_schema: JsonSchemaValue = {"type": "object"}
        if action.payload is not None:
            payload_schema = schema_of(action.key, "payload", "validation")
        result_schema: JsonSchemaValue = {}
        if action.result is not None:
            result_schema = schema_of(action.key, "result", action.result_mode)
        request_name = f"{action.key}.request"
        messages[request_name] = {
            "name": request_name,
            "title": f"{action.name} request",
            "summary": f"Run `{action.name}`.",
            "payload": _request_frame(action.name, payload_schema),
        }
        final_type = "response" if action.mode == "sync" else "complete"
        final_field = "data" if final_type == "response" else "result"
        final_name = f"{action.key}.{final_type}"
        final = copy.deepcopy(_resolve(generic[final_type], schemas))
        final["properties"][final_field] = result_schema
        final["title"] = f"{action.name} {final_type}"
        messages[final_name] = _message(final_name, final, final)
        replies = [final_name, "error"]
        if action.mode == "async":
            replies = ["acknowledgment", "progress", final_name, "error"]
        operations[action.key] = {
            "action": "receive",
            "channel": {"$ref": _CHANNEL_REF},
            "title": action.name,
            "summary": _first_line(action.description) or f"The `{action.name}` action.",
            "description": _operation_description(action),
            "messages": [_channel_message_ref(request_name)],
            "reply": {
                "channel": {"$ref": _CHANNEL_REF},
                "messages": [_channel_message_ref(name) for name in replies],
            },
            "x-streamer-action": action.name,
            "x-streamer-mode": action.mode,
            "x-streamer-builtin": action.builtin,
            "x-streamer-timeout-s": action.timeout_s,
        }
    if "notification" in messages:
        operations["notification"] = {
            "action": "send",
            "channel": {"$ref": _CHANNEL_REF},
            "title": "notification",
            "summary": "A server push, not tied to a request.",
            "description": "Backend code pushes to one connection, to every connection of "
            "a user, or to a whole tenant. Best effort, at most once per connection.",
            "messages": [_channel_message_ref("notification")],
        }

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": f"{app.name} (Streamer WebSocket API)",
            "version": version,
            "description": _INFO_DESCRIPTION,
        },
        "defaultContentType": "application/json",
        "servers": _servers(server_url),
        "channels": {
            _CHANNEL: {
                "address": "/",
                "title": "The WebSocket API",
                "description": "One socket carries every request: each client frame names "
                "an action and an optional client `id`; every server message about a "
                "request carries that id as `request_id`.",
                "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
                "bindings": {
                    "ws": {
                        "query": {
                            "type": "object",
                            "properties": {
                                "Authorization": {
                                    "type": "string",
                                    "description": "The JWT, when it is not sent as the "
                                    "`Authorization: Bearer` header (browsers cannot).",
                                }
                            },
                        },
                        "bindingVersion": "0.1.0",
                    }
                },
            }
        },
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "securitySchemes": {
                "tokenQuery": {
                    "type": "httpApiKey",
                    "name": "Authorization",
                    "in": "query",
                    "description": "An RS256 JWT with `sub` and `tenant_id` in the "
                    "`Authorization` query parameter of the handshake.",
                },
                "tokenHeader": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "The same JWT as an `Authorization: Bearer` header.",
                },
            },
        },
    }


_INFO_DESCRIPTION = (
    "Long operations over one WebSocket. A client sends `{id?, action, payload, metadata?}`. "
    "A sync action answers one `response`; an async action answers an `acknowledgment`, "
    "then `progress` (percentages never decreasing), then `complete` or `error`. "
    "Every server message has an RFC 3339 UTC `timestamp`. A connection only sees its own "
    "user's requests in its own tenant; any other id answers `NOT_FOUND`. "
    f"Messages are at most {MESSAGE_LIMIT_BYTES // 1024} KB; an idle socket closes after "
    "10 minutes (send `ping`).\n\nError codes:\n"
    + "\n".join(f"- `{code.value}`: {meaning}" for code, meaning in ERROR_CODE_MEANINGS.items())
)


class _WireSchema(GenerateJsonSchema):
    """Pydantic's schemas, where what is serialised lists every field as required:
    a server message or a result always carries all of them."""

    def field_is_required(
        self,
        field: core_schema.ModelField | core_schema.DataclassField | core_schema.TypedDictField,
        total: bool,
    ) -> bool:
        if self.mode == "serialization":
            return True
        return super().field_is_required(field, total)


def _tell_wire_truths(
    definitions: dict[str, Any], messages_by_type: Mapping[str, type[BaseModel]]
) -> None:
    """What the message models cannot say themselves: `timestamp` is RFC 3339, and an
    error without a request id leaves `request_id` out (`protocol.encode`)."""
    for type_name, model in messages_by_type.items():
        schema = definitions.get(model.__name__)
        if not isinstance(schema, dict):
            continue
        properties = schema.get("properties", {})
        if "timestamp" in properties:
            properties["timestamp"]["format"] = "date-time"
        if type_name == "error":
            schema["required"] = [name for name in schema["required"] if name != "request_id"]
            properties["request_id"] = {"type": "string", "title": "Request Id"}


def _actions(app: Streamer, async_threshold_s: float) -> Iterator[_Action]:
    keys: set[str] = set()
    for name, spec in sorted(app.actions.items()):
        yield _Action(
            key=_unique_key(name, keys),
            name=name,
            mode=spec.resolved_mode(async_threshold_s),
            builtin=False,
            description=spec.description,
            timeout_s=spec.effective_timeout_s(async_threshold_s),
            payload=TypeAdapter(spec.payload_model) if spec.payload_model is not None else None,
            result=_result_adapter(spec),
        )
    for name in sorted(RESERVED_ACTIONS):
        payload, result = _BUILTIN_TYPES[name]
        yield _Action(
            key=_unique_key(name, keys),
            name=name,
            mode="sync",
            builtin=True,
            description=_BUILTIN_DESCRIPTIONS[name],
            timeout_s=None,
            payload=TypeAdapter(payload),
            result=TypeAdapter(result),
            result_mode="validation",
        )


def _unique_key(name: str, taken: set[str]) -> str:
    """A component key for an action name (keys allow `[A-Za-z0-9_-]` only)."""
    base = _KEY_UNSAFE.sub("_", name) or "action"
    key, n = base, 1
    while key in taken or key == "notification":
        n += 1
        key = f"{base}_{n}"
    taken.add(key)
    return key


def _result_adapter(spec: ActionSpec) -> TypeAdapter[Any] | None:
    """The result's type from the handler's return annotation, when it gives one."""
    try:
        hint = typing.get_type_hints(spec.handler).get("return")
    except (NameError, TypeError):
        return None
    if hint is None or hint is Any or hint is type(None):
        return None
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(hint)
        adapter.json_schema(mode="serialization")
    except (PydanticSchemaGenerationError, PydanticUserError, TypeError):
        return None
    return adapter


def _server_message_models() -> dict[str, type[BaseModel]]:
    """Every server message model by its `type`, read from the protocol's union."""
    union, *_ = typing.get_args(ServerMessage)
    found: dict[str, type[BaseModel]] = {}
    for model in typing.get_args(union):
        literal = model.model_fields["type"].default
        found[str(literal)] = model
    return found


def _resolve(schema: JsonSchemaValue, schemas: Mapping[str, Any]) -> JsonSchemaValue:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        resolved = schemas[ref.rsplit("/", 1)[1]]
        return dict(resolved) if isinstance(resolved, dict) else {}
    return schema


def _asyncapi_schema(schema: Any) -> Any:
    """A pydantic JSON Schema as the AsyncAPI Schema Object takes it: `discriminator`
    is a property name there, not OpenAPI's object."""
    if isinstance(schema, dict):
        converted = {key: _asyncapi_schema(value) for key, value in schema.items()}
        discriminator = converted.get("discriminator")
        if isinstance(discriminator, dict):
            name = discriminator.get("propertyName")
            if isinstance(name, str):
                converted["discriminator"] = name
            else:
                del converted["discriminator"]
        return converted
    if isinstance(schema, list):
        return [_asyncapi_schema(item) for item in schema]
    return schema


def _request_frame(action: str, payload_schema: JsonSchemaValue) -> dict[str, Any]:
    return {
        "type": "object",
        "title": f"{action} frame",
        "required": ["action"],
        "properties": {
            "id": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_CLIENT_ID_CHARS,
                "description": "Your id for the request; every reply carries it as "
                "`request_id`. A repeated id of an async request is idempotent.",
            },
            "action": {"type": "string", "const": action},
            "payload": payload_schema,
            "metadata": {"type": "object", "description": "Passed to the action as is."},
        },
    }


def _message(name: str, schema: JsonSchemaValue, resolved: JsonSchemaValue) -> dict[str, Any]:
    message: dict[str, Any] = {"name": name, "payload": schema}
    title = resolved.get("title")
    if isinstance(title, str):
        message["title"] = title
    description = resolved.get("description")
    if isinstance(description, str):
        message["summary"] = _first_line(description)
    return message


def _channel_message_ref(name: str) -> dict[str, str]:
    return {"$ref": f"{_CHANNEL_REF}/messages/{name}"}


def _operation_description(action: _Action) -> str:
    if action.mode == "sync":
        flow = "Sync: answered by one `response` whose `data` is the result, or an `error`."
    else:
        flow = (
            "Async: answered by an `acknowledgment`, then `progress` messages, then "
            "`complete` with the `result`, or an `error`."
        )
    text = f"{action.description}\n\n{flow}" if action.description else flow
    if action.timeout_s is not None:
        text += f" Times out after {action.timeout_s:g} s (`TIMEOUT`)."
    return text


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def _servers(server_url: str) -> dict[str, Any]:
    parts = urlsplit(server_url)
    security = [
        {"$ref": "#/components/securitySchemes/tokenQuery"},
        {"$ref": "#/components/securitySchemes/tokenHeader"},
    ]
    local: dict[str, Any] = {
        "host": parts.netloc or "localhost:3001",
        "protocol": parts.scheme or "ws",
        "description": "The local emulator (`make run`); any stage path works too.",
        "security": security,
    }
    if parts.path not in ("", "/"):
        local["pathname"] = parts.path
    return {
        "local": local,
        "production": {
            "host": "{apiId}.execute-api.{region}.amazonaws.com",
            "pathname": "/{stage}",
            "protocol": "wss",
            "description": "API Gateway WebSocket API (or your custom domain).",
            "variables": {
                "apiId": {"description": "The WebSocket API's id."},
                "region": {"default": "us-east-1", "description": "The AWS region."},
                "stage": {"default": "prod", "description": "The deployed stage."},
            },
            "security": security,
        },
    }
