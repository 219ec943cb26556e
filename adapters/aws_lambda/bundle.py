"""Builds the deployable Lambda zip: the project and its dependencies for the runtime.

Dependencies come from manylinux wheels for the target Python and architecture
(`pip install --platform ... --only-binary=:all:`), pinned to the versions this
environment was tested with. Lambda's runtime ships its own boto3/botocore, but
aiobotocore pins an exact botocore, so the pinned one is bundled, with its data
trimmed to the services Streamer calls. Every module ships with unchecked-hash
bytecode compiled by an interpreter of the target version (Lambda's `/var/task`
is read-only: without it every cold start compiles every module it imports).
No tests, stubs, `emulator/`, or project modules the handlers cannot import (the
CLI, the bundler, the SDK client, the moto helper) go in. A manifest
(`streamer-bundle.json`) says which Python and architecture the zip is for.
Entries are sorted and timestamped alike, so a rebuild of the same inputs gives
the same zip.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = [
    "BOTOCORE_SERVICES",
    "BUNDLE_NAME",
    "LEFT_OUT_MODULES",
    "MANIFEST_NAME",
    "RUNTIME_REQUIREMENTS",
    "BundleManifest",
    "InterpreterNotFound",
    "build_bundle",
    "find_interpreter",
    "pip_install_command",
    "read_manifest",
    "requirement_pins",
    "running_python_version",
]

BUNDLE_NAME: Final = "streamer-lambda.zip"
RUNTIME_REQUIREMENTS: Final = ("aioboto3", "PyJWT", "cryptography", "pydantic")
"""The project's runtime dependencies (pyproject `dependencies`; pinned by a test),
less `websockets`, which only the client SDK and the emulator use."""
_PINNED_TRANSITIVES: Final = ("aiobotocore", "botocore", "boto3")
"""Pinned too, so the bundle runs the AWS stack the tests ran."""

BOTOCORE_SERVICES: Final = frozenset(
    {"dynamodb", "dynamodbstreams", "apigatewaymanagementapi", "sts"}
)
"""The services whose botocore models are kept; every other model is dropped."""
_BOTOCORE_DATA_FILES: Final = frozenset(
    {"endpoints.json", "partitions.json", "sdk-default-configuration.json", "_retry.json"}
)
_BOTO3_RESOURCES: Final = frozenset({"dynamodb"})
_PROJECT_PACKAGES: Final = ("streamer", "adapters")
LEFT_OUT_MODULES: Final = frozenset(
    {
        "adapters/aws_lambda/bundle.py",
        "adapters/commands.py",
        "streamer/cli.py",
        "streamer/client.py",
        "streamer/testing.py",
        *(f"adapters/{m.name}" for m in Path(__file__).resolve().parents[1].glob("moto_*.py")),
    }
)
"""Project modules no handler imports: the `streamer` command and this builder,
the SDK client (needs websockets), the local moto server and its patches of moto
(`adapters/moto_*.py`, need moto), the test fakes."""
MANIFEST_NAME: Final = "streamer-bundle.json"
_ARCHES: Final = {"x86_64": "x86_64", "arm64": "aarch64"}
_SKIPPED_DIRS: Final = frozenset({"__pycache__", "tests", "test"})
_SKIPPED_TOP_LEVEL: Final = frozenset({"bin"})
"""Console scripts pip writes next to the packages."""
_SKIPPED_SUFFIXES: Final = (".pyc", ".pyo", ".pyi", ".c", ".pyx", ".pxd")
"""Caches, type stubs and extension sources: nothing the runtime reads."""
_ZIP_TIME: Final = (1980, 1, 1, 0, 0, 0)
MAX_BUNDLE_BYTES: Final = 16 * 1024 * 1024
"""Our budget (Lambda takes 50 MB zipped): ~10 MB of code, ~4.5 MB of bytecode."""


@dataclass(frozen=True, slots=True)
class BundleManifest:
    """What a bundle was built for, read by the Pulumi program before it deploys.

    Args:
        python_version: the Lambda runtime's Python, e.g. `3.12` (runtime `python3.12`).
        architecture: `x86_64` or `arm64`.
        streamer_version: the version of Streamer inside.
        bytecode: whether the modules' `.pyc` are shipped.
    """

    python_version: str
    architecture: str
    streamer_version: str
    bytecode: bool = True

    @property
    def runtime(self) -> str:
        """The Lambda runtime identifier, e.g. `python3.12`."""
        return f"python{self.python_version}"

    def to_json(self) -> str:
        """The manifest file's text."""
        fields = {
            "python_version": self.python_version,
            "architecture": self.architecture,
            "streamer_version": self.streamer_version,
            "bytecode": self.bytecode,
        }
        return json.dumps(fields, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> BundleManifest:
        """Parse a manifest file.

        Raises:
            ValueError: not a manifest this version writes.
        """
        try:
            data: Any = json.loads(text)
            manifest = cls(
                python_version=str(data["python_version"]),
                architecture=str(data["architecture"]),
                streamer_version=str(data["streamer_version"]),
                bytecode=bool(data.get("bytecode", False)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"malformed {MANIFEST_NAME}: {exc}") from None
        try:
            _version_tuple(manifest.python_version)
        except ValueError as exc:
            raise ValueError(f"{MANIFEST_NAME}: {exc}") from None
        if manifest.architecture not in _ARCHES:
            raise ValueError(f"{MANIFEST_NAME}: unknown architecture {manifest.architecture!r}")
        return manifest


def read_manifest(bundle: Path | str) -> BundleManifest:
    """The manifest of a built zip.

    Raises:
        ValueError: the zip has none (built before manifests) or a malformed one.
        OSError: the zip cannot be read.
    """
    try:
        with zipfile.ZipFile(bundle) as archive:
            text = archive.read(MANIFEST_NAME).decode()
    except KeyError:
        raise ValueError(
            f"{bundle} has no {MANIFEST_NAME}: rebuild it with `streamer lambda build`"
        ) from None
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{bundle} is not a zip: {exc}") from None
    return BundleManifest.from_json(text)


class InterpreterNotFound(ValueError):
    """No working interpreter of the target Python version to compile bytecode with."""


def _platforms(arch: str, python_version: str) -> list[str]:
    try:
        machine = _ARCHES[arch]
    except KeyError:
        raise ValueError(f"arch must be one of {', '.join(_ARCHES)}, got {arch!r}") from None
    platforms = [f"manylinux2014_{machine}"]
    major, minor = _version_tuple(python_version)
    if (major, minor) >= (3, 12):
        # python3.12+ runtimes run on Amazon Linux 2023 (glibc 2.34).
        platforms += [f"manylinux_2_28_{machine}", f"manylinux_2_34_{machine}"]
    return platforms


def _version_tuple(python_version: str) -> tuple[int, int]:
    parts = python_version.split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"python version must look like 3.12, got {python_version!r}")
    return int(parts[0]), int(parts[1])


def requirement_pins() -> list[str]:
    """The requirements to install: each pinned to the version installed here, if any."""
    pins = []
    for name in (*RUNTIME_REQUIREMENTS, *_PINNED_TRANSITIVES):
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def pip_install_command(target: Path, *, arch: str, python_version: str) -> list[str]:
    """The `pip install` that fetches the runtime's wheels into `target`."""
    command = [sys.executable, "-m", "pip", "install", "--target", str(target)]
    for platform in _platforms(arch, python_version):
        command += ["--platform", platform]
    command += [
        "--implementation",
        "cp",
        "--python-version",
        python_version,
        "--only-binary=:all:",
        "--no-compile",
        "--disable-pip-version-check",
        "--quiet",
        *requirement_pins(),
    ]
    return command


def _is_kept(relative: Path, *, bytecode_tag: str | None = None) -> bool:
    """Whether a file of the staged bundle goes into the zip.

    Args:
        relative: the path inside the bundle.
        bytecode_tag: e.g. `cpython-312` to keep that interpreter's `__pycache__`
            files; None drops every `.pyc`.
    """
    parts = relative.parts
    if parts[0] in _SKIPPED_TOP_LEVEL or relative.as_posix() in LEFT_OUT_MODULES:
        return False
    if len(parts) > 1 and parts[-2] == "__pycache__":
        if bytecode_tag is None or not relative.name.endswith(f".{bytecode_tag}.pyc"):
            return False
        return _is_kept(Path(*parts[:-2], relative.name.split(".", 1)[0] + ".py"))
    if any(part in _SKIPPED_DIRS for part in parts[:-1]) or relative.suffix in _SKIPPED_SUFFIXES:
        return False
    if parts[:2] == ("botocore", "data") and len(parts) > 2:
        if len(parts) == 3:
            return parts[2] in _BOTOCORE_DATA_FILES
        return parts[2] in BOTOCORE_SERVICES and not parts[-1].startswith("examples-")
    if parts[:2] == ("boto3", "data") and len(parts) > 2:
        return parts[2] in _BOTO3_RESOURCES
    return parts[:2] != ("boto3", "examples")


def _version_of(interpreter: str) -> str | None:
    """The `X.Y` an interpreter reports, or None when it does not run (a pyenv shim
    whose version is not installed, a broken venv)."""
    try:
        done = subprocess.run(
            [interpreter, "-I", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _pyenv_candidates(python_version: str) -> list[str]:
    """pyenv's installed interpreters of that version, newest first, by full path
    (its shims on PATH may point at another version or none)."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    found = [
        path
        for path in root.glob(f"{python_version}*/bin/python{python_version}")
        if path.parent.parent.name.split(".")[:2] == python_version.split(".")
    ]

    def patch_level(path: Path) -> tuple[int, ...]:
        digits = (part for part in path.parent.parent.name.split(".")[2:3] if part.isdigit())
        return tuple(int(part) for part in digits)

    return [str(path) for path in sorted(found, key=patch_level, reverse=True)]


def find_interpreter(python_version: str, *, python_exe: str | None = None) -> str:
    """A working interpreter of `python_version`, to compile bytecode it can read.

    Looks at `python_exe` when given (and only there), else the running
    interpreter, `pythonX.Y` on PATH, then pyenv's installed versions.

    Raises:
        InterpreterNotFound: in one line, saying how to get one.
    """
    if python_exe is not None:
        version = _version_of(python_exe)
        if version != python_version:
            found = f" (it is Python {version})" if version else ""
            raise InterpreterNotFound(
                f"--python-exe {python_exe} is not a working Python {python_version}{found}"
            )
        return python_exe
    if f"{sys.version_info.major}.{sys.version_info.minor}" == python_version:
        return sys.executable
    candidates: list[str] = []
    on_path = shutil.which(f"python{python_version}")
    if on_path is not None:
        candidates.append(on_path)
    candidates += _pyenv_candidates(python_version)
    for candidate in dict.fromkeys(candidates):
        if _version_of(candidate) == python_version:
            return candidate
    raise InterpreterNotFound(
        f"no working Python {python_version} to compile the bundle's bytecode with: "
        f"install one (`pyenv install {python_version}`, `uv python install {python_version}`, "
        f"or your OS's python{python_version}) and pass --python-exe PATH if it is not on "
        "PATH, or build for this interpreter with --this-python"
    )


def _compile_bytecode(stage: Path, interpreter: str, bytecode_tag: str) -> int:
    """Unchecked-hash `.pyc` files, valid whatever the files' times, with source paths
    as Lambda sees them (`/var/task/...`) in tracebacks; returns how many were made.
    A file that does not compile (never imported) is left without bytecode.

    Raises:
        RuntimeError: the interpreter made no bytecode at all.
    """
    done = subprocess.run(
        [
            interpreter,
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(stage),
            "-p",
            "/var/task",
            str(stage),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    compiled = sum(1 for _ in stage.rglob(f"__pycache__/*.{bytecode_tag}.pyc"))
    if compiled == 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(
            f"{interpreter} compiled no bytecode" + (f": {detail[-1]}" if detail else "")
        )
    return compiled


def _endpoint_prefix(service_dir: Path) -> str:
    """The `endpointPrefix` of a botocore service model (its key in endpoints.json)."""
    for model in sorted(service_dir.glob("*/service-2.json*")):
        raw = model.read_bytes()
        text = gzip.decompress(raw) if model.suffix == ".gz" else raw
        return str(json.loads(text)["metadata"]["endpointPrefix"])
    raise RuntimeError(f"no service model under {service_dir}")


def _trim_endpoints(stage: Path) -> None:
    """Keep only the kept services' entries in botocore's `endpoints.json` (1.2 MB for
    300 services, parsed at every cold start by the first client), written compact."""
    data_dir = stage / "botocore" / "data"
    endpoints = data_dir / "endpoints.json"
    prefixes = {_endpoint_prefix(data_dir / service) for service in BOTOCORE_SERVICES}
    document = json.loads(endpoints.read_text())
    for partition in document["partitions"]:
        services = partition.get("services", {})
        partition["services"] = {k: v for k, v in services.items() if k in prefixes}
    endpoints.write_text(json.dumps(document, separators=(",", ":"), sort_keys=True))


def _strip_tool() -> list[str] | None:
    """A `strip` able to handle both architectures' ELF files, if there is one."""
    for tool in ("llvm-strip", "strip"):
        found = shutil.which(tool)
        if found is not None:
            return [found, "--strip-unneeded"]
    return None


def _strip_shared_objects(root: Path) -> int:
    """Drop symbol tables and debug info from extension modules (wheels often ship
    them unstripped, several times the code's size); returns the bytes saved.
    Best effort: a file the tool cannot handle is kept as it is."""
    tool = _strip_tool()
    if tool is None:
        return 0
    saved = 0
    for path in sorted(root.rglob("*.so")):
        before = path.stat().st_size
        done = subprocess.run([*tool, str(path)], capture_output=True, check=False)
        if done.returncode == 0:
            saved += before - path.stat().st_size
    return saved


def _walk(root: Path) -> Iterator[Path]:
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(dirnames)
        for filename in sorted(filenames):
            yield Path(directory, filename)


def _project_root() -> Path:
    import adapters

    return Path(adapters.__file__).resolve().parent.parent


def _add(archive: zipfile.ZipFile, path: Path, name: str) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    mode = 0o755 if os.access(path, os.X_OK) and path.suffix == ".so" else 0o644
    info.external_attr = (0o100000 | mode) << 16
    archive.writestr(info, path.read_bytes(), compresslevel=9)


def _streamer_version() -> str:
    try:
        return importlib.metadata.version("streamer")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def running_python_version() -> str:
    """The `X.Y` of the interpreter running this build."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def build_bundle(
    output_dir: Path,
    *,
    arch: str = "x86_64",
    python_version: str = "3.12",
    python_exe: str | None = None,
    compile_bytecode: bool = True,
) -> Path:
    """Build `streamer-lambda.zip` in `output_dir` and return its path.

    Args:
        output_dir: where the zip goes (created if missing).
        arch: the Lambda architecture, `x86_64` or `arm64`.
        python_version: the Lambda runtime's Python, e.g. `3.12`.
        python_exe: the interpreter of that version to compile bytecode with
            (default: found by `find_interpreter`).
        compile_bytecode: ship `.pyc` files (the default), so a cold start does
            not compile every module it imports; False only for tests that
            do not measure start-up.

    Raises:
        ValueError: an unknown architecture, a malformed version, or no
            interpreter to compile bytecode with (`InterpreterNotFound`).
        RuntimeError: pip could not fetch a wheel for the target.
    """
    _platforms(arch, python_version)
    compiler = find_interpreter(python_version, python_exe=python_exe) if compile_bytecode else None
    major, minor = _version_tuple(python_version)
    bytecode_tag = f"cpython-{major}{minor}" if compiler is not None else None
    manifest = BundleManifest(
        python_version=python_version,
        architecture=arch,
        streamer_version=_streamer_version(),
        bytecode=compiler is not None,
    )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    bundle = output_dir / BUNDLE_NAME
    project = _project_root()
    with tempfile.TemporaryDirectory(prefix="streamer-bundle-") as scratch:
        stage = Path(scratch, "stage")
        command = pip_install_command(stage, arch=arch, python_version=python_version)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise RuntimeError(
                "pip could not install the runtime's wheels: " + (detail[-1] if detail else "")
            )
        stripped = _strip_shared_objects(stage)
        _trim_endpoints(stage)
        for package in _PROJECT_PACKAGES:
            shutil.copytree(
                project / package,
                stage / package,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                dirs_exist_ok=True,
            )
        _drop_left_out(stage, LEFT_OUT_MODULES)
        compiled = 0
        if compiler is not None and bytecode_tag is not None:
            compiled = _compile_bytecode(stage, compiler, bytecode_tag)
        partial = bundle.with_suffix(".zip.partial")
        with zipfile.ZipFile(partial, "w") as archive:
            _add_text(archive, MANIFEST_NAME, manifest.to_json())
            for path in _walk(stage):
                relative = path.relative_to(stage)
                if _is_kept(relative, bytecode_tag=bytecode_tag):
                    _add(archive, path, relative.as_posix())
        shutil.move(partial, bundle)
    size = bundle.stat().st_size
    print(
        f"{bundle}: {size / (1024 * 1024):.1f} MB ({size:,} bytes), "
        f"python{python_version} {arch}, {stripped / (1024 * 1024):.1f} MB of symbols stripped, "
        + (f"bytecode of {compiled} modules by {compiler}" if compiled else "no bytecode"),
        file=sys.stderr,
    )
    return bundle


def _drop_left_out(stage: Path, modules: Sequence[str] | frozenset[str]) -> None:
    """Remove the modules the zip leaves out before compiling, so nothing of them ships."""
    for module in modules:
        (stage / module).unlink(missing_ok=True)


def _add_text(archive: zipfile.ZipFile, name: str, text: str) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o100000 | 0o644) << 16
    archive.writestr(info, text.encode(), compresslevel=9)
