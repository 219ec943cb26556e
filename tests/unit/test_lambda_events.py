"""Typed views of the Lambda events, EMF rendering, and the bundle's file rules."""

from __future__ import annotations

import base64
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from adapters.aws_lambda.bundle import (
    RUNTIME_REQUIREMENTS,
    _is_kept,
    pip_install_command,
    requirement_pins,
)
from adapters.aws_lambda.events import EventType, MalformedEvent, StreamBatch, WebSocketEvent
from adapters.aws_lambda.metrics import Metric, MetricsBatch, Unit
from adapters.aws_lambda.processor import _client_id_of

ROOT = Path(__file__).resolve().parent.parent.parent
EVENTS = ROOT / "tests" / "fixtures" / "lambda_events"


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


# --- WebSocket events ------------------------------------------------------------------


def test_a_connect_event_gives_id_endpoint_query_ip_and_lower_cased_headers() -> None:
    event = WebSocketEvent.parse(_load("connect.json"))
    assert event.event_type is EventType.CONNECT
    assert event.route_key == "$connect"
    assert event.connection_id == "TWegAfymhcwCENw="
    assert event.endpoint == "https://abcd123456.execute-api.us-east-1.amazonaws.com/prod"
    assert event.query == {"Authorization": "TOKEN"}
    assert event.source_ip == "192.0.2.1"
    assert event.user_agent == "Python/3.12 websockets/13.1"
    assert event.headers["x-forwarded-proto"] == "https"
    assert event.request_time_epoch_ms == 1707502303420


def test_a_message_event_gives_its_body_and_message_id() -> None:
    event = WebSocketEvent.parse(_load("message.json"))
    assert event.event_type is EventType.MESSAGE
    assert event.body == '{"action":"ping"}'
    assert event.message_id == "TWegqcC5oAMCJrQ="
    assert event.headers == {}
    assert event.query == {}


def test_a_base64_encoded_body_is_decoded_to_bytes() -> None:
    raw = _load("message.json")
    raw["body"] = base64.b64encode(b'{"action":"ping"}').decode()
    raw["isBase64Encoded"] = True
    assert WebSocketEvent.parse(raw).body == b'{"action":"ping"}'


def test_a_disconnect_event_gives_its_close_code_and_reason() -> None:
    event = WebSocketEvent.parse(_load("disconnect.json"))
    assert event.event_type is EventType.DISCONNECT
    assert event.disconnect_status_code == 1005
    assert event.disconnect_reason == "Client-side close frame status not set"


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"requestContext": {"eventType": "CONNECT"}},
        {"requestContext": {"connectionId": "abc", "eventType": "SOMETHING"}},
    ],
)
def test_an_event_that_is_not_a_websocket_event_is_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(MalformedEvent):
        WebSocketEvent.parse(raw)


# --- stream batches --------------------------------------------------------------------


def test_a_stream_batch_keeps_each_record_with_its_sequence_number() -> None:
    batch = StreamBatch.parse(_load("dynamodb_stream.json"))
    [record] = batch.records
    assert record.sequence_number == "111100000000000000000001"
    assert record.raw["eventName"] == "INSERT"


def test_a_stream_event_without_records_is_refused() -> None:
    with pytest.raises(MalformedEvent):
        StreamBatch.parse(_load("scheduled.json"))


# --- EMF -------------------------------------------------------------------------------


def test_one_flush_writes_one_emf_line_with_counts_summed_and_latencies_kept() -> None:
    lines: list[str] = []
    metrics = MetricsBatch(properties={"function_name": "f"}, write=lines.append, now_ms=lambda: 7)
    metrics.add(Metric.REQUESTS_COMPLETED)
    metrics.add(Metric.REQUESTS_COMPLETED)
    metrics.add(Metric.PROCESSING_LATENCY, 12.5, Unit.MILLISECONDS)
    metrics.add(Metric.PROCESSING_LATENCY, 30, Unit.MILLISECONDS)
    metrics.set(Metric.ACTIVE_CONNECTIONS, 4)
    metrics.set(Metric.ACTIVE_CONNECTIONS, 5)
    metrics.flush()
    metrics.flush()
    [line] = lines
    assert json.loads(line) == {
        "function_name": "f",
        "_aws": {
            "Timestamp": 7,
            "CloudWatchMetrics": [
                {
                    "Namespace": "Streamer",
                    "Dimensions": [[]],
                    "Metrics": [
                        {"Name": "RequestsCompleted", "Unit": "Count"},
                        {"Name": "ProcessingLatency", "Unit": "Milliseconds"},
                        {"Name": "ActiveConnections", "Unit": "Count"},
                    ],
                }
            ],
        },
        "RequestsCompleted": 2.0,
        "ProcessingLatency": [12.5, 30.0],
        "ActiveConnections": 5.0,
    }


def test_every_design_metric_has_a_name() -> None:
    assert {m.value for m in Metric} == {
        "ConnectionEstablished",
        "ConnectionClosed",
        "AuthenticationFailed",
        "ActiveConnections",
        "RequestsQueued",
        "RequestsCompleted",
        "RequestsFailed",
        "ProcessingLatency",
    }


# --- bundle rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "kept"),
    [
        ("botocore/data/dynamodb/2012-08-10/service-2.json.gz", True),
        ("botocore/data/apigatewaymanagementapi/2018-11-29/endpoint-rule-set-1.json.gz", True),
        ("botocore/data/dynamodb/2012-08-10/examples-1.json", False),
        ("botocore/data/s3/2006-03-01/service-2.json.gz", False),
        ("botocore/data/endpoints.json", True),
        ("botocore/data/_retry.json", True),
        ("botocore/data/sdk-default-configuration.json", True),
        ("boto3/data/dynamodb/2012-08-10/resources-1.json", True),
        ("boto3/data/ec2/2016-11-15/resources-1.json", False),
        ("aiohttp/__pycache__/client.cpython-312.pyc", False),
        ("aiohttp/_http_parser.pyx", False),
        ("bin/jp.py", False),
        ("cryptography/hazmat/bindings/_rust.abi3.so", True),
        ("pydantic-2.14.4.dist-info/RECORD", True),
    ],
)
def test_the_bundle_keeps_only_what_the_runtime_reads(path: str, kept: bool) -> None:
    assert _is_kept(Path(path)) is kept


@pytest.mark.parametrize(
    ("path", "kept"),
    [
        ("aiohttp/__pycache__/client.cpython-312.pyc", True),
        ("aiohttp/__pycache__/client.cpython-311.pyc", False),
        ("__pycache__/typing_extensions.cpython-312.pyc", True),
        ("botocore/__pycache__/client.cpython-312.pyc", True),
        ("botocore/data/__pycache__/x.cpython-312.pyc", False),
        ("multidict/tests/__pycache__/test_x.cpython-312.pyc", False),
        ("bin/__pycache__/jp.cpython-312.pyc", False),
    ],
)
def test_a_compiled_bundle_keeps_the_target_bytecode_of_kept_modules(path: str, kept: bool) -> None:
    assert _is_kept(Path(path), bytecode_tag="cpython-312") is kept


def test_the_bundle_installs_the_project_dependencies_less_the_client_only_ones() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {d.split(">")[0].split("=")[0].split("<")[0].strip() for d in declared}
    assert set(RUNTIME_REQUIREMENTS) == names - {"websockets"}


def test_pip_fetches_manylinux_wheels_for_the_target_pinned_to_the_tested_versions() -> None:
    command = pip_install_command(Path("/t"), arch="arm64", python_version="3.12")
    assert command[:3] == [sys.executable, "-m", "pip"]
    assert "--only-binary=:all:" in command
    platforms = [command[i + 1] for i, arg in enumerate(command) if arg == "--platform"]
    assert platforms == [
        "manylinux2014_aarch64",
        "manylinux_2_28_aarch64",
        "manylinux_2_34_aarch64",
    ]
    assert command[command.index("--python-version") + 1] == "3.12"
    assert any(pin.startswith("botocore==") for pin in requirement_pins())


@pytest.mark.parametrize(("arch", "python"), [("sparc", "3.12"), ("x86_64", "3")])
def test_an_unknown_target_is_refused(arch: str, python: str) -> None:
    with pytest.raises(ValueError, match=r"arch|version"):
        pip_install_command(Path("/t"), arch=arch, python_version=python)


@pytest.mark.parametrize(
    ("key", "logged"),
    [("t#u#a#b", "a#b"), ("t#u#ünï#", "ünï#"), ("t#u#" + "#" * 128, "#" * 128), ("junk", "junk")],
)
def test_the_processor_logs_the_clients_id_read_from_the_key(key: str, logged: str) -> None:
    assert _client_id_of(key) == logged
