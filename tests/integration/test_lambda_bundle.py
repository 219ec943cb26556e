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

from adapters.aws_lambda.bundle import (
    BUNDLE_NAME,
    LEFT_OUT_MODULES,
    MAX_BUNDLE_BYTES,
    build_bundle,
    read_manifest,
    running_python_version,
)
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


def test_the_bundle_fits_its_budget(bundle: Path) -> None:
    assert bundle.name == BUNDLE_NAME
    assert bundle.stat().st_size <= MAX_BUNDLE_BYTES


def test_the_bundle_holds_the_project_and_no_tests_or_emulator(bundle: Path) -> None:
    names = zipfile.ZipFile(bundle).namelist()
    assert "streamer/__init__.py" in names
    assert "adapters/aws_lambda/router.py" in names
    assert not [n for n in names if n.startswith(("emulator/", "tests/", "bin/"))]
    services = {
        n.split("/")[2] for n in names if n.startswith("botocore/data/") and n.count("/") > 2
    }
    assert services == {"dynamodb", "dynamodbstreams", "apigatewaymanagementapi", "sts"}


def test_the_bundle_leaves_out_what_no_handler_can_import(bundle: Path) -> None:
    names = set(zipfile.ZipFile(bundle).namelist())
    assert {"adapters/moto_server.py", "streamer/client.py", "streamer/cli.py"} <= LEFT_OUT_MODULES
    assert {"adapters/moto_http.py", "adapters/moto_updates.py"} <= LEFT_OUT_MODULES
    assert {"adapters/aws_lambda/bundle.py", "adapters/commands.py"} <= LEFT_OUT_MODULES
    assert not [n for n in names if n in LEFT_OUT_MODULES]
    for module in LEFT_OUT_MODULES:
        folder, _, filename = module.rpartition("/")
        cached = f"{folder}/__pycache__/{filename.removesuffix('.py')}."
        assert not [n for n in names if n.startswith(cached)], module


def test_every_module_ships_with_bytecode_for_the_target_python(bundle: Path) -> None:
    names = set(zipfile.ZipFile(bundle).namelist())
    tag = "cpython-" + running_python_version().replace(".", "")
    sources = [n for n in names if n.endswith(".py") and n.startswith(("streamer/", "adapters/"))]
    sources += [n for n in names if n.endswith(".py") and n.startswith(("botocore/", "pydantic/"))]
    missing = []
    for source in sources:
        folder, _, filename = source.rpartition("/")
        if f"{folder}/__pycache__/{filename.removesuffix('.py')}.{tag}.pyc" not in names:
            missing.append(source)
    assert missing == []
    assert not [n for n in names if n.endswith(".pyc") and f".{tag}." not in n]


def test_the_manifest_says_what_the_bundle_was_built_for(bundle: Path) -> None:
    manifest = read_manifest(bundle)
    assert manifest.python_version == running_python_version()
    assert manifest.runtime == f"python{running_python_version()}"
    assert manifest.architecture in ("x86_64", "arm64")
    assert manifest.bytecode is True
    assert manifest.streamer_version


def test_handlers_import_from_the_shipped_bytecode_with_nothing_written(unpacked: Path) -> None:
    """As Lambda's read-only `/var/task`: `-B` writes nothing, so every module the
    router imports must come from the zip's own `.pyc`, none compiled from source."""
    prelude = f"import sys; sys.path.insert(0, {str(unpacked)!r}); "
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-B",
            "-v",
            "-c",
            prelude + "import adapters.aws_lambda.router",
        ],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", "")},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    from_pyc = [line for line in lines if line.startswith(f"# code object from '{unpacked}/")]
    from_source = [line for line in lines if line.startswith(f"# code object from {unpacked}/")]
    assert len(from_pyc) > 100
    assert from_source == []


def test_every_project_module_in_the_bundle_imports_from_it_alone(
    bundle: Path, unpacked: Path
) -> None:
    modules = sorted(
        n.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for n in zipfile.ZipFile(bundle).namelist()
        if n.startswith(("streamer/", "adapters/")) and n.endswith(".py")
    )
    code = f"""
    import importlib
    for name in {modules!r}:
        importlib.import_module(name)
    """
    done = _run_isolated(code, unpacked, env={"PATH": os.environ.get("PATH", "")})
    assert done.returncode == 0, done.stderr[-2000:]


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
