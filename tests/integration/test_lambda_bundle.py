"""The deployable zip: built from manylinux wheels, small, and importable with
nothing but itself on the path."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from adapters.aws_lambda.bundle import BUNDLE_NAME, MAX_BUNDLE_BYTES, build_bundle
from streamer.settings import Settings
from streamer.tokens import generate_rsa_key_pair, mint_token

EVENTS = Path(__file__).resolve().parent.parent / "fixtures" / "lambda_events"
HANDLERS = ("connect", "disconnect", "router", "processor", "sweeper")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zip for this machine's Python and architecture (so it can be imported here)."""
    arch = {"x86_64": "x86_64", "AMD64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}[
        platform.machine()
    ]
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return build_bundle(tmp_path_factory.mktemp("dist"), arch=arch, python_version=python)


@pytest.fixture(scope="module")
def unpacked(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("unpacked")
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(target)
    return target


def _run_isolated(code: str, path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter that sees the stdlib and `path`, nothing else:
    `-I` ignores PYTHON* variables and the user site, `-S` skips site-packages."""
    prelude = f"import sys; sys.path.insert(0, {str(path)!r})\n"
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=path,
        env=env,
        timeout=120,
        check=False,
    )


def test_the_bundle_is_at_most_10_mb(bundle: Path) -> None:
    assert bundle.name == BUNDLE_NAME
    assert bundle.stat().st_size <= MAX_BUNDLE_BYTES


def test_the_bundle_holds_the_project_and_no_tests_caches_or_emulator(bundle: Path) -> None:
    names = zipfile.ZipFile(bundle).namelist()
    assert "streamer/__init__.py" in names
    assert "adapters/aws_lambda/router.py" in names
    assert not [n for n in names if n.startswith(("emulator/", "tests/", "bin/"))]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    services = {
        n.split("/")[2] for n in names if n.startswith("botocore/data/") and n.count("/") > 2
    }
    assert services == {"dynamodb", "dynamodbstreams", "apigatewaymanagementapi", "sts"}


def test_every_handler_imports_from_the_bundle_alone(unpacked: Path) -> None:
    code = f"""
    import importlib, json, sys
    assert not [p for p in sys.path if "site-packages" in p], sys.path
    for name in {list(HANDLERS)!r}:
        module = importlib.import_module("adapters.aws_lambda." + name)
        assert callable(module.handler)
    import aioboto3, botocore, jwt, pydantic_core
    from cryptography.hazmat.primitives.asymmetric import rsa
    origins = [m.__file__ for m in (aioboto3, botocore, jwt, pydantic_core)]
    print(json.dumps(origins))
    """
    done = _run_isolated(code, unpacked, env={"PATH": os.environ.get("PATH", "")})
    assert done.returncode == 0, done.stderr
    assert all(origin.startswith(str(unpacked)) for origin in json.loads(done.stdout))


def test_the_bundled_connect_handler_accepts_a_token_against_moto(
    unpacked: Path, dynamodb_settings: Settings, moto_endpoint: str
) -> None:
    """The trimmed botocore data, the stripped extension modules (cryptography
    verifies the RS256 signature) and the handler work together, outside this venv."""
    private_key, public_key = generate_rsa_key_pair()
    event = json.loads((EVENTS / "connect.json").read_text())
    token = mint_token(private_key, sub="u1", tenant_id="t1")
    event["queryStringParameters"] = {"Authorization": token}
    event["multiValueQueryStringParameters"] = {"Authorization": [token]}
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "CONNECTIONS_TABLE": dynamodb_settings.connections_table,
        "REQUESTS_TABLE": dynamodb_settings.requests_table,
        "DYNAMODB_ENDPOINT_URL": moto_endpoint,
        "JWT_PUBLIC_KEY": public_key,
        "EVENT": json.dumps(event),
    }
    code = """
    import json, os
    from adapters.aws_lambda import connect
    print(json.dumps(connect.handler(json.loads(os.environ["EVENT"]), None)))
    """
    done = _run_isolated(code, unpacked, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"statusCode": 200}
