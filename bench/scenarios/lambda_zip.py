"""Lambda bundle size: the zip `streamer lambda build` makes, packed and unpacked.

The built zip is kept under `bench/.cache/lambda/`; a quick run reuses it when
it is there (building downloads wheels), a full run builds afresh and falls back
to the kept zip, saying so, only when the build fails (no network).
"""

from __future__ import annotations

import inspect
import shutil
import zipfile
from pathlib import Path
from typing import Any

from bench.config import Bench
from bench.procs import CACHE_DIR

BUNDLE_DIR = CACHE_DIR / "lambda"
MB = 1024 * 1024


def bundle_options() -> dict[str, Any]:
    """The options `streamer lambda build` uses by default (the signature's defaults)."""
    from adapters.aws_lambda.bundle import build_bundle

    options: dict[str, Any] = {}
    for name in ("arch", "python_version"):
        parameter = inspect.signature(build_bundle).parameters.get(name)
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            options[name] = parameter.default
    options.setdefault("arch", "x86_64")
    options.setdefault("python_version", "3.11")
    return options


def build() -> Path:
    """Build the zip with the default options into `BUNDLE_DIR`; its path."""
    from adapters.aws_lambda.bundle import build_bundle

    fresh = CACHE_DIR / "lambda-new"
    if fresh.exists():
        shutil.rmtree(fresh)
    built = Path(build_bundle(fresh, **bundle_options()))
    if BUNDLE_DIR.exists():
        shutil.rmtree(BUNDLE_DIR)
    fresh.rename(BUNDLE_DIR)
    return BUNDLE_DIR / built.name


def cached_bundle() -> Path | None:
    """The kept zip, if there is one."""
    zips = sorted(BUNDLE_DIR.glob("*.zip")) if BUNDLE_DIR.exists() else []
    return zips[0] if zips else None


def run(bench: Bench) -> None:
    """Record `lambda_zip_mb` and `lambda_unzipped_mb`."""
    bundle = cached_bundle() if bench.sizes.zip_from_cache else None
    if bundle is None:
        try:
            bundle = build()
        except RuntimeError as exc:
            bundle = cached_bundle()
            if bundle is None:
                raise
            print(f"    build failed ({exc}); measuring the kept zip instead", flush=True)
    else:
        print(f"    reusing {bundle.relative_to(CACHE_DIR.parent.parent)}", flush=True)
    with zipfile.ZipFile(bundle) as archive:
        unzipped = sum(info.file_size for info in archive.infolist())
    bench.results.record("lambda_zip_mb", bundle.stat().st_size / MB)
    bench.results.record("lambda_unzipped_mb", unzipped / MB)
