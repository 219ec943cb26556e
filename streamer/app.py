"""The user's side: a `Streamer` app, its `@app.action` registry, and `load_app`."""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel

from streamer.models import ConnectionId, RequestId, TenantId, UserId
from streamer.push import UNWIRED_PUSHER, Pusher

__all__ = [
    "RESERVED_ACTIONS",
    "ActionMode",
    "ActionSpec",
    "Request",
    "Streamer",
    "load_app",
]

P = TypeVar("P")
ActionMode = Literal["sync", "async"]
RESERVED_ACTIONS = frozenset({"ping", "status", "subscribe", "cancel"})
DEFAULT_SYNC_TIMEOUT_S = 25.0
"""Under API Gateway's 29 s integration limit."""
DEFAULT_ASYNC_TIMEOUT_S = 840.0
"""Under Lambda's 900 s maximum, leaving time to persist and hand back."""

Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Request(Generic[P]):
    """What an action receives: the validated payload and who asked.

    `payload` is an instance of the action's pydantic model when the handler
    is annotated `Request[Model]`, else the raw `dict`. `push` reaches any
    connection, user or tenant with a `notification` (`await
    req.push.to_user(req.tenant_id, "bob", {...}, topic="shared")`), sync and
    async actions alike.
    """

    request_id: RequestId
    action: str
    payload: P
    connection_id: ConnectionId
    user_id: UserId
    tenant_id: TenantId
    received_at: datetime
    metadata: Mapping[str, Any] = field(default_factory=dict)
    permissions: tuple[str, ...] = ()
    attempt: int = 1
    """1 for the first run, then 2, 3… on retries and re-claims."""
    push: Pusher = field(default=UNWIRED_PUSHER, repr=False, compare=False)
    """Server push (DESIGN §11), the same service the CLI and backends use."""


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """One registered action.

    Args:
        name: the wire `action`.
        handler: `async def f(req)` (sync) or `async def f(req, progress)` (async);
            a plain `def` is run in a worker thread.
        mode: "sync" or "async"; None resolves by `estimated_duration_s`.
        payload_model: the pydantic model the payload is validated against, or None.
        timeout_s: how long one run may take before TIMEOUT.
        max_retries: retries of transient failures (async only).
        estimated_duration_s: compared with the async threshold when `mode` is None.
        description: shown in the console's action list.
        takes_progress: whether the handler takes `(req, progress)` rather than
            `(req)`; decided once at registration, not per call.
    """

    name: str
    handler: Handler
    mode: ActionMode | None
    payload_model: type[BaseModel] | None
    timeout_s: float | None
    max_retries: int
    estimated_duration_s: float | None
    description: str
    takes_progress: bool

    def resolved_mode(self, async_threshold_s: float) -> ActionMode:
        """Sync or async: the explicit mode, else the estimate against the threshold."""
        if self.mode is not None:
            return self.mode
        if self.estimated_duration_s is not None and self.estimated_duration_s > async_threshold_s:
            return "async"
        return "sync"

    def effective_timeout_s(self, async_threshold_s: float) -> float:
        """The timeout, defaulting by mode."""
        if self.timeout_s is not None:
            return self.timeout_s
        if self.resolved_mode(async_threshold_s) == "async":
            return DEFAULT_ASYNC_TIMEOUT_S
        return DEFAULT_SYNC_TIMEOUT_S

    def payload_schema(self) -> dict[str, Any]:
        """JSON Schema of the payload (empty object schema when untyped)."""
        if self.payload_model is None:
            return {"type": "object"}
        return self.payload_model.model_json_schema()


class Streamer:
    """A registry of actions: the application object users build.

    Args:
        name: a label for logs and the console.
    """

    def __init__(self, name: str = "streamer") -> None:
        self.name = name
        self._actions: dict[str, ActionSpec] = {}

    def action(
        self,
        name: str,
        *,
        mode: ActionMode | None = None,
        estimated_duration: float | None = None,
        timeout: float | None = None,
        max_retries: int = 3,
        payload_model: type[BaseModel] | None = None,
        description: str | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register an action under `name`.

        The payload model is taken from the handler's `Request[Model]` annotation
        unless `payload_model` is given.

        Raises:
            ValueError: a reserved or duplicate name, a bad mode, or a handler whose
                arity does not fit its mode.
        """
        if name in RESERVED_ACTIONS:
            raise ValueError(f"{name!r} is a built-in action and cannot be registered")
        if name in self._actions:
            raise ValueError(f"action {name!r} is already registered")
        if mode not in (None, "sync", "async"):
            raise ValueError(f"mode must be 'sync' or 'async', not {mode!r}")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            arity = len(inspect.signature(func).parameters)
            if mode == "async" and arity != 2:
                raise ValueError(f"async action {name!r} must take (req, progress)")
            if mode == "sync" and arity != 1:
                raise ValueError(f"sync action {name!r} must take (req)")
            if mode is None and arity not in (1, 2):
                raise ValueError(f"action {name!r} must take (req) or (req, progress)")
            self._actions[name] = ActionSpec(
                name=name,
                handler=_as_coroutine_function(func),
                mode=mode,
                payload_model=payload_model or _payload_model_of(func),
                timeout_s=timeout,
                max_retries=max_retries,
                estimated_duration_s=estimated_duration,
                description=description or inspect.getdoc(func) or "",
                takes_progress=arity == 2,
            )
            return func

        return register

    def get(self, name: str) -> ActionSpec | None:
        """The action registered under `name`, or None."""
        return self._actions.get(name)

    @property
    def actions(self) -> Mapping[str, ActionSpec]:
        """Every registered action, by name."""
        return dict(self._actions)


def _payload_model_of(func: Callable[..., Any]) -> type[BaseModel] | None:
    try:
        hints = typing.get_type_hints(func)
    except (NameError, TypeError):
        return None
    params = list(inspect.signature(func).parameters)
    if not params:
        return None
    hint = hints.get(params[0])
    if typing.get_origin(hint) is not Request:
        return None
    (arg,) = typing.get_args(hint)
    if isinstance(arg, type) and issubclass(arg, BaseModel):
        return arg
    return None


def _as_coroutine_function(func: Callable[..., Any]) -> Handler:
    if inspect.iscoroutinefunction(func):
        return func

    @functools.wraps(func)
    async def in_thread(*args: Any) -> Any:
        return await asyncio.to_thread(func, *args)

    return in_thread


def load_app(target: str) -> Streamer:
    """Import a `Streamer` from `"package.module:attribute"` (uvicorn style).

    Raises:
        ValueError: the string is malformed, the module or attribute is missing,
            or the attribute is not a `Streamer`. The message names the problem.
    """
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"app must look like 'module:attribute', got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import app module {module_name!r}: {exc}") from exc
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(obj, Streamer):
        raise ValueError(f"{target!r} is a {type(obj).__name__}, not a Streamer app")
    return obj
