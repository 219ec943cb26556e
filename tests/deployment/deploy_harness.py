"""Runs the Pulumi program under Pulumi's unit-test mocks and records what it declares.

No CLI and no cloud: the mock monitor hands each resource registration to
`RecordingMocks`, which answers with ids and ARNs shaped like AWS's and keeps the
fully resolved inputs (and dependencies) for the tests to read.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import runpy
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pulumi
from google.protobuf import json_format  # type: ignore[import-untyped]
from pulumi.runtime import mocks as pulumi_mocks

# pulumi_aws warns at import time about resources it renamed (none of which the
# stack uses); import the service modules once here, where that noise is expected.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "aws.* has been deprecated", DeprecationWarning)
    for _service in (
        "apigateway",
        "acm",
        "apigatewayv2",
        "cloudwatch",
        "dynamodb",
        "iam",
        "lambda_",
        "sqs",
    ):
        # Modules load lazily: touching an attribute runs the import for real.
        hasattr(importlib.import_module(f"pulumi_aws.{_service}"), "load")

__all__ = [
    "ACCOUNT",
    "API_ID",
    "BASE_CONFIG",
    "BUNDLE",
    "ISSUED_CERTIFICATES",
    "REGION",
    "SECRET_KEY",
    "SECRET_SIG",
    "TEST_PUBLIC_KEY",
    "Declared",
    "Deployment",
    "deploy",
    "streamer_stack",
]

PROGRAM_DIR = Path(__file__).resolve().parents[2] / "deployment" / "pulumi"
sys.path.insert(0, str(PROGRAM_DIR))

import streamer_stack  # noqa: E402  (importable once PROGRAM_DIR is on the path)

from adapters.aws_lambda.bundle import MANIFEST_NAME, BundleManifest  # noqa: E402
from streamer.tokens import generate_rsa_key_pair  # noqa: E402

REGION = "eu-west-1"
ACCOUNT = "123456789012"
API_ID = "a1b2c3d4e5"
SECRET_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
"""Pulumi's wire marker of a secret value: `{SECRET_KEY: SECRET_SIG, "value": ...}`."""

_, TEST_PUBLIC_KEY = generate_rsa_key_pair()
"""A real key, so the functions' own start-up checks can read it."""


BUNDLE = BundleManifest(python_version="3.12", architecture="x86_64", streamer_version="0.1.0")
"""The manifest of the bundle the program is given unless a test says otherwise."""

ISSUED_CERTIFICATES = {"api.example.com": f"arn:aws:acm:{REGION}:{ACCOUNT}:certificate/issued-1"}
"""The region's ISSUED ACM certificates, by domain, as `aws.acm.get_certificate` finds them."""


BASE_CONFIG = {
    "aws:region": REGION,
    "streamer:environment": "prod",
    "streamer:jwtPublicKey": TEST_PUBLIC_KEY,
}
"""The required settings only."""


@dataclass
class Declared:
    """One resource the program registered: its type, logical name and resolved inputs."""

    typ: str
    name: str
    inputs: dict[str, Any]
    wire: dict[str, Any]
    """The inputs as serialized on the wire (secrets still wrapped)."""
    dependencies: set[str] = field(default_factory=set)
    """Logical names of the resources it depends on."""

    def policy(self) -> dict[str, Any]:
        """The JSON policy document of an `iam.RolePolicy`."""
        document: dict[str, Any] = json.loads(self.inputs["policy"])
        return document


@dataclass
class Deployment:
    """Everything one run of the program declared, plus its resolved outputs."""

    resources: list[Declared]
    outputs: dict[str, Any]
    """The stack outputs `__main__` exported, resolved."""
    certificate_lookups: list[dict[str, Any]] = field(default_factory=list)
    """The arguments of each `aws.acm.get_certificate` the program made."""

    def all(self, typ: str) -> list[Declared]:
        """Every resource of one Pulumi type token."""
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str, name: str) -> Declared:
        """The resource of that type and logical name."""
        found = [r for r in self.resources if r.typ == typ and r.name == name]
        assert len(found) == 1, f"expected one {typ} named {name}, found {len(found)}"
        return found[0]

    def statements(self, function_key: str) -> dict[str, dict[str, Any]]:
        """The inline policy statements of one function's role, by Sid."""
        document = self.one("aws:iam/rolePolicy:RolePolicy", f"{function_key}-policy").policy()
        return {s["Sid"]: s for s in document["Statement"]}


def _reveal(value: Any) -> Any:
    """`value` with Pulumi's secret wrappers taken off, for asserting on."""
    if isinstance(value, dict):
        if value.get(SECRET_KEY) == SECRET_SIG:
            return _reveal(value["value"])
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_reveal(v) for v in value]
    return value


def _arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{resource}"


class RecordingMocks(pulumi.runtime.Mocks):
    """Answers registrations with AWS-shaped ids/ARNs and records the inputs."""

    def __init__(self) -> None:
        self.resources: list[Declared] = []
        self.certificate_lookups: list[dict[str, Any]] = []

    def new_resource(self, args: Any) -> tuple[str, dict[str, Any]]:
        inputs: dict[str, Any] = dict(args.inputs)
        name = inputs.get("name") or args.name
        state = dict(inputs)
        typ = args.typ
        resource_id = f"{args.name}-id"
        if typ == "aws:dynamodb/table:Table":
            state["arn"] = _arn("dynamodb", f"table/{name}")
            state["streamArn"] = f"{state['arn']}/stream/2026-01-01T00:00:00.000"
            resource_id = name
        elif typ == "aws:lambda/function:Function":
            state["arn"] = _arn("lambda", f"function:{name}")
            state["invokeArn"] = (
                f"arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/"
                f"{state['arn']}/invocations"
            )
            resource_id = name
        elif typ == "aws:iam/role:Role":
            state["arn"] = f"arn:aws:iam::{ACCOUNT}:role/{args.name}"
            state["name"] = args.name
            resource_id = args.name
        elif typ == "aws:cloudwatch/logGroup:LogGroup":
            state["arn"] = _arn("logs", f"log-group:{name}")
            resource_id = name
        elif typ == "aws:sqs/queue:Queue":
            state["arn"] = _arn("sqs", name)
            state["url"] = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}"
            resource_id = state["url"]
        elif typ == "aws:apigatewayv2/api:Api":
            resource_id = API_ID
            state["executionArn"] = _arn("execute-api", API_ID)
            state["apiEndpoint"] = f"wss://{API_ID}.execute-api.{REGION}.amazonaws.com"
        elif typ == "aws:apigatewayv2/stage:Stage":
            resource_id = name
        elif typ == "aws:cloudwatch/eventRule:EventRule":
            state["arn"] = _arn("events", f"rule/{name}")
            resource_id = name
        elif typ == "aws:apigatewayv2/domainName:DomainName":
            resource_id = inputs["domainName"]
            configuration = dict(inputs["domainNameConfiguration"])
            configuration["targetDomainName"] = f"d-abc123.execute-api.{REGION}.amazonaws.com"
            configuration["hostedZoneId"] = "Z2FDTNDATAQYW2"
            state["domainNameConfiguration"] = configuration
        self.resources.append(Declared(typ, args.name, _reveal(inputs), {}))
        return resource_id, state

    def call(self, args: Any) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        if args.token == "aws:index/getRegion:getRegion":
            return {"region": REGION, "name": REGION, "id": REGION}, []
        if args.token == "aws:acm/getCertificate:getCertificate":
            self.certificate_lookups.append(dict(args.args))
            arn = ISSUED_CERTIFICATES.get(args.args["domain"])
            if arn is None or args.args.get("statuses") != ["ISSUED"]:
                # As the provider fails the lookup: an invoke failure, no result.
                return {}, [
                    ("domain", f"no ACM Certificate matching domain ({args.args['domain']})")
                ]
            return {"arn": arn, "domain": args.args["domain"], "id": arn, "status": "ISSUED"}, []
        raise AssertionError(f"unexpected provider call {args.token}")


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """Keeps each registration's wire inputs and dependencies, which mocks don't see."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.recording = mocks

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != "pulumi:pulumi:Stack":
            # Registrations run on worker threads: find this one by type and name.
            declared = next(
                r
                for r in self.recording.resources
                if r.typ == request.type and r.name == request.name
            )
            declared.wire = json_format.MessageToDict(request.object)
            declared.dependencies = {urn.rsplit("::", 1)[-1] for urn in request.dependencies}
        return response


def deploy(
    config: dict[str, str],
    *,
    secret_keys: tuple[str, ...] = (),
    bundle: BundleManifest | None = BUNDLE,
) -> Deployment:
    """Run the program once under mocks with the given `streamer:*`/`aws:*` config.

    The program is given a zip holding only `bundle` as its manifest (none when None).

    Pulumi's runtime drives its own event loop on this thread; it gets a fresh one,
    closed afterwards, so async tests before and after never share loop state.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        with tempfile.TemporaryDirectory() as directory:
            # The mocks never read the code; the program reads the manifest.
            path = Path(directory) / "streamer-lambda.zip"
            with zipfile.ZipFile(path, "w") as archive:
                if bundle is not None:
                    archive.writestr(MANIFEST_NAME, bundle.to_json())
            return _run_program({"streamer:bundlePath": str(path), **config}, secret_keys)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def _run_program(config: dict[str, str], secret_keys: tuple[str, ...]) -> Deployment:
    recording = RecordingMocks()
    pulumi.runtime.set_mocks(
        recording,
        project="streamer",
        stack="test",
        preview=False,
        monitor=RecordingMonitor(recording),
    )
    pulumi.runtime.set_all_config(config, list(secret_keys))
    exported: dict[str, Any] = {}
    outputs: dict[str, Any] = {}

    def export(name: str, value: Any) -> None:
        exported[name] = value

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def program() -> Any:
        # The real entry point, as `pulumi up` runs it; its exports are collected.
        with mock.patch.object(pulumi, "export", export):
            runpy.run_path(str(PROGRAM_DIR / "__main__.py"), run_name="__main__")
        return pulumi.Output.all(**exported).apply(outputs.update)

    program()
    return Deployment(recording.resources, outputs, recording.certificate_lookups)
