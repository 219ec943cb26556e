"""The AsyncAPI document: what it says of an app, and that the router's replies fit it.

(The official AsyncAPI parser validates the document in the TypeScript client's
tests, `clients/typescript/test/asyncapi.test.mjs`.)
"""

from __future__ import annotations

import re
import typing
from typing import Annotated, Any, Literal

import pytest
from core_harness import make_core
from jsonschema import Draft202012Validator
from pydantic import BaseModel, Field

from streamer import Progress, Request, Streamer
from streamer.asyncapi import ERROR_CODE_MEANINGS, asyncapi_document
from streamer.demo import app as demo_app
from streamer.errors import ErrorCode
from streamer.protocol import ServerMessage

COMPONENT_KEY = re.compile(r"^[a-zA-Z0-9.\-_]+$")


class Person(BaseModel):
    """Someone to greet."""

    name: str = Field(min_length=3)


class Greeting(BaseModel):
    """What `greet_later` answers."""

    text: str
    length: int


def build_app() -> Streamer:
    app = Streamer("contract")

    @app.action("greet")
    async def greet(req: Request[Person]) -> dict[str, str]:
        """Says hello at once."""
        return {"hello": req.payload.name}

    @app.action("greet_later", mode="async")
    async def greet_later(req: Request[Person], progress: Progress) -> Greeting:
        await progress.report(50, "thinking", step=1)
        return Greeting(text=f"hello {req.payload.name}", length=len(req.payload.name))

    @app.action("anything", mode="async")
    async def anything(req: Request[dict[str, Any]], progress: Progress):
        return req.payload

    return app


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi_document(build_app())


def validator(document: dict[str, Any], message: str) -> Draft202012Validator:
    """Validates a wire message against one message of the document."""
    root = {
        "$ref": f"#/components/messages/{message}/payload",
        "components": document["components"],
    }
    return Draft202012Validator(root)


def assert_fits(document: dict[str, Any], message: str, body: dict[str, Any]) -> None:
    errors = [error.message for error in validator(document, message).iter_errors(body)]
    assert errors == [], f"{message}: {errors} for {body}"


def test_every_action_and_builtin_is_an_operation_the_server_receives(
    document: dict[str, Any],
) -> None:
    received = {
        op["x-streamer-action"]: (op["x-streamer-mode"], op["x-streamer-builtin"])
        for op in document["operations"].values()
        if op["action"] == "receive"
    }
    assert received == {
        "greet": ("sync", False),
        "greet_later": ("async", False),
        "anything": ("async", False),
        "ping": ("sync", True),
        "status": ("sync", True),
        "subscribe": ("sync", True),
        "cancel": ("sync", True),
    }


def test_replies_name_the_messages_of_each_mode(document: dict[str, Any]) -> None:
    def replies(key: str) -> list[str]:
        return [
            m["$ref"].rsplit("/", 1)[1] for m in document["operations"][key]["reply"]["messages"]
        ]

    assert replies("greet") == ["greet.response", "error"]
    assert replies("greet_later") == [
        "acknowledgment",
        "progress",
        "greet_later.complete",
        "error",
    ]
    for operation in document["operations"].values():
        for ref in [*operation["messages"], *operation.get("reply", {}).get("messages", [])]:
            name = ref["$ref"].rsplit("/", 1)[1]
            assert name in document["channels"]["api"]["messages"]
            assert name in document["components"]["messages"]


def test_the_payload_schema_is_the_pydantic_model(document: dict[str, Any]) -> None:
    frame = document["components"]["messages"]["greet.request"]["payload"]
    assert frame["properties"]["action"] == {"type": "string", "const": "greet"}
    assert frame["properties"]["payload"] == {"$ref": "#/components/schemas/Person"}
    person = document["components"]["schemas"]["Person"]
    assert person["required"] == ["name"]
    assert person["properties"]["name"]["minLength"] == 3
    untyped = document["components"]["messages"]["anything.request"]["payload"]
    assert untyped["properties"]["payload"] == {"type": "object"}


def test_the_result_schema_comes_from_the_return_annotation(document: dict[str, Any]) -> None:
    messages = document["components"]["messages"]
    sync_data = messages["greet.response"]["payload"]["properties"]["data"]
    assert sync_data == {"additionalProperties": {"type": "string"}, "type": "object"}
    async_result = messages["greet_later.complete"]["payload"]["properties"]["result"]
    assert async_result == {"$ref": "#/components/schemas/Greeting"}
    assert document["components"]["schemas"]["Greeting"]["required"] == ["text", "length"]
    no_annotation = messages["anything.complete"]["payload"]["properties"]["result"]
    assert no_annotation == {}


def test_the_demo_report_result_is_typed() -> None:
    document = asyncapi_document(demo_app)
    complete = document["components"]["messages"]["generate_report.complete"]
    assert complete["payload"]["properties"]["result"] == {
        "$ref": "#/components/schemas/ReportResult"
    }
    assert "url" in document["components"]["schemas"]["ReportResult"]["required"]


async def test_the_router_replies_fit_the_documented_messages(document: dict[str, Any]) -> None:
    core = make_core(build_app())
    conn = await core.connect("c1")

    assert_fits(document, "greet.response", await core.send(conn, "greet", {"name": "Ada"}))
    assert_fits(document, "error", await core.send(conn, "greet", {"name": "A"}))
    assert_fits(document, "error", await core.send(conn, "nope", {}))
    assert_fits(document, "ping.response", await core.send(conn, "ping"))

    ack = await core.send(conn, "greet_later", {"name": "Ada"}, id="r1")
    assert_fits(document, "acknowledgment", ack)
    assert_fits(document, "status.response", await core.send(conn, "status", {"request_id": "r1"}))
    subscribed = await core.send(conn, "subscribe", {"request_id": "r1"})
    assert_fits(document, "subscribe.response", subscribed)
    await core.process("r1")
    progress, complete = core.received("c1")
    assert_fits(document, "progress", progress)
    assert_fits(document, "greet_later.complete", complete)
    done = await core.send(conn, "status", {"request_id": "r1"})
    assert done["data"]["result"] == {"text": "hello Ada", "length": 3}
    assert_fits(document, "status.response", done)
    assert_fits(document, "cancel.response", await core.send(conn, "cancel", {"request_id": "r1"}))

    await core.send(conn, "greet_later", {"name": "Bob"}, id="r2")
    assert_fits(document, "cancel.response", await core.send(conn, "cancel", {"request_id": "r2"}))
    cancelled = await core.send(conn, "status", {"request_id": "r2"})
    assert cancelled["data"]["status"] == "CANCELLED"
    assert_fits(document, "status.response", cancelled)
    (notice,) = core.received("c1")[2:]
    assert_fits(document, "error", notice)

    await core.pusher.to_connection("c1", {"hello": 1}, topic="news")
    await core.pusher.to_connection("c1", [1, "two"])
    for pushed in core.received("c1")[3:]:
        assert_fits(document, "notification", pushed)
    assert len(core.received("c1")) == 5


def test_a_reply_that_breaks_the_contract_does_not_fit(document: dict[str, Any]) -> None:
    """The check above can fail: a wrong result or a missing field is caught."""
    good = {
        "type": "complete",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "request_id": "r1",
        "success": True,
        "result": {"text": "hi", "length": 2},
    }
    assert list(validator(document, "greet_later.complete").iter_errors(good)) == []
    wrong_result = good | {"result": {"text": "hi"}}
    assert list(validator(document, "greet_later.complete").iter_errors(wrong_result))
    no_id = {k: v for k, v in good.items() if k != "request_id"}
    assert list(validator(document, "greet_later.complete").iter_errors(no_id))


def test_every_server_message_type_is_a_message(document: dict[str, Any]) -> None:
    (union, *_) = typing.get_args(ServerMessage)
    types = {model.model_fields["type"].default for model in typing.get_args(union)}
    assert {"response", "acknowledgment", "progress", "complete", "error"} <= types
    assert types <= set(document["components"]["messages"])
    if "notification" in types:
        assert document["operations"]["notification"]["action"] == "send"


def test_every_error_code_is_listed_with_its_meaning(document: dict[str, Any]) -> None:
    assert set(ERROR_CODE_MEANINGS) == set(ErrorCode)
    assert document["components"]["schemas"]["ErrorCode"]["enum"] == [c.value for c in ErrorCode]
    for code in ErrorCode:
        assert f"`{code.value}`: {ERROR_CODE_MEANINGS[code]}" in document["info"]["description"]


def test_auth_is_the_token_in_the_query_or_a_bearer_header(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["tokenQuery"] | {"description": ""} == {
        "type": "httpApiKey",
        "name": "Authorization",
        "in": "query",
        "description": "",
    }
    assert (schemes["tokenHeader"]["scheme"], schemes["tokenHeader"]["bearerFormat"]) == (
        "bearer",
        "JWT",
    )
    for server in document["servers"].values():
        assert {ref["$ref"].rsplit("/", 1)[1] for ref in server["security"]} == set(schemes)


def test_the_local_server_is_the_given_url() -> None:
    document = asyncapi_document(build_app(), server_url="ws://127.0.0.1:4001/prod")
    local = document["servers"]["local"]
    assert (local["host"], local["protocol"], local["pathname"]) == (
        "127.0.0.1:4001",
        "ws",
        "/prod",
    )


def test_action_names_that_are_not_component_keys_get_safe_unique_keys() -> None:
    app = Streamer()

    @app.action("reports/monthly v2")
    async def one(req: Request[dict[str, Any]]) -> None: ...

    @app.action("reports_monthly_v2")
    async def two(req: Request[dict[str, Any]]) -> None: ...

    document = asyncapi_document(app)
    names = {
        op["x-streamer-action"]: key
        for key, op in document["operations"].items()
        if "x-streamer-action" in op
    }
    assert names["reports/monthly v2"] != names["reports_monthly_v2"]
    for key in document["components"]["messages"]:
        assert COMPONENT_KEY.match(key), key
    frame = document["components"]["messages"][f"{names['reports/monthly v2']}.request"]
    assert frame["payload"]["properties"]["action"]["const"] == "reports/monthly v2"


class Cat(BaseModel):
    kind: Literal["cat"]


class Dog(BaseModel):
    kind: Literal["dog"]


class Pet(BaseModel):
    pet: Annotated[Cat | Dog, Field(discriminator="kind")]


def test_a_discriminated_union_uses_the_asyncapi_discriminator_form() -> None:
    app = Streamer()

    @app.action("adopt")
    async def adopt(req: Request[Pet]) -> None: ...

    pet = asyncapi_document(app)["components"]["schemas"]["Pet"]
    assert pet["properties"]["pet"]["discriminator"] == "kind"
