"""moto's server finds the service a request is for once per host, not on every request.

For each request, moto's `DomainDispatcherApplication.get_backend_for_host`
checks whether the host it inferred (`dynamodb`, `dynamodbstreams`, ...) names a
moto module by listing moto's package directory and calling `isdir` on each
entry until it finds it (`moto.backends.list_of_moto_modules`), then falls back
to matching some 200 URL patterns. The answer depends only on the host and on
moto's installed files, so `install` keeps it per host. A host it finds no
backend for is asked again every time (moto prints a hint for those).

Then, to find the method for an action, `BaseResponse.call_action` lists the
handler class's functions with `inspect.getmembers` on every call (~7% of the
server's CPU); they are kept per class.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

__all__ = ["install", "uninstall"]

_MARK = "_streamer_cached"
_HOSTS = 256
"""Distinct hosts kept: a client's region and service make a handful."""


def install() -> None:
    """Wrap moto's `DomainDispatcherApplication.get_backend_for_host` (idempotent)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original = DomainDispatcherApplication.get_backend_for_host
    if getattr(original, _MARK, False):
        return
    found: dict[str, tuple[Any, Any]] = {}
    """host → (the URL patterns it was matched against, its backend)."""

    @functools.wraps(original)
    def get_backend_for_host(self: Any, host: str | None) -> Any:
        if type(host) is not str:
            return original(self, host)
        patterns, backend = found.get(host, (None, None))
        if patterns is not self.backend_url_patterns:
            backend = original(self, host)
            if backend is not None and len(found) < _HOSTS:
                found[host] = (self.backend_url_patterns, backend)
        return backend

    setattr(get_backend_for_host, _MARK, True)
    DomainDispatcherApplication.get_backend_for_host = get_backend_for_host  # type: ignore[method-assign]

    responses = _responses()
    listed = responses.method_names_from_class
    if not getattr(listed, _MARK, False):
        cached = functools.cache(listed)
        setattr(cached, _MARK, True)
        responses.method_names_from_class = cached


def uninstall() -> None:
    """Put moto's own `get_backend_for_host` back (tests compare the two)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    method = DomainDispatcherApplication.get_backend_for_host
    if getattr(method, _MARK, False):
        DomainDispatcherApplication.get_backend_for_host = method.__wrapped__  # type: ignore[attr-defined,method-assign]
    responses = _responses()
    listed = responses.method_names_from_class
    if getattr(listed, _MARK, False):
        responses.method_names_from_class = listed.__wrapped__


def _responses() -> Any:
    """moto's `moto.core.responses` (its names are not exported to type checkers)."""
    return importlib.import_module("moto.core.responses")
