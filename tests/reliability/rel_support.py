"""Shared pieces of the reliability suite: fault-injecting wrappers around the ports,
hypothesis strategies for hostile frames, and scale knobs (the core on fakes is
`core_harness.Core`, shared with the unit suite).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

from streamer.errors import ErrorCode, StoreUnavailable, StreamerError
from streamer.models import (
    ConnectionId,
)
from streamer.protocol import ServerMessage
from streamer.testing import (
    InMemoryRequestStore,
    RecordingNotifier,
)

SOAK = os.environ.get("STREAMER_SOAK") == "1"
"""`make soak`: full-size load and more hypothesis examples."""

CORE_EXAMPLES = 200
"""Hypothesis examples for core-level properties (CI-friendly)."""
SOCKET_EXAMPLES = 60
"""Hypothesis examples over a real socket (each one is a network round trip)."""

KNOWN_CODES = frozenset(code.value for code in ErrorCode)
REPLY_TYPES = frozenset({"response", "acknowledgment", "error"})


# -- fault injection ---------------------------------------------------------------


class ThrottledRequestStore:
    """A `RequestStore` wrapper that throttles writes like DynamoDB under load.

    Args:
        inner: the real (fake) store.
        progress_failure_rate: fraction of `record_progress` calls that raise
            `StoreUnavailable` (seeded, so a run is repeatable).
        complete_failures: how many first `complete` calls raise.
        seed: the random seed.
    """

    def __init__(
        self,
        inner: InMemoryRequestStore,
        *,
        progress_failure_rate: float = 0.0,
        complete_failures: int = 0,
        seed: int = 11,
    ) -> None:
        self._inner = inner
        self._rate = progress_failure_rate
        self._complete_failures_left = complete_failures
        self._rng = random.Random(seed)
        self.calls: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not callable(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            # A status change is counted under its transition's name (`complete`, …).
            operation = args[1].name if name == "apply" else name
            self.calls[operation] += 1
            if self._should_throttle(operation):
                self.throttled[operation] += 1
                raise StoreUnavailable("ProvisionedThroughputExceededException")
            return await attribute(*args, **kwargs)

        return call

    def _should_throttle(self, name: str) -> bool:
        if name == "record_progress":
            return self._rng.random() < self._rate
        if name == "complete" and self._complete_failures_left > 0:
            self._complete_failures_left -= 1
            return True
        return False


class FlakyNotifier(RecordingNotifier):
    """A `RecordingNotifier` whose sends to chosen connections fail `times` times
    with a given error, then go through; every attempt is counted."""

    def __init__(self) -> None:
        super().__init__()
        self._flaky: dict[ConnectionId, tuple[BaseException, int]] = {}
        self.failed: Counter[ConnectionId] = Counter()

    def fail_next(self, connection_id: str, error: BaseException, *, times: int) -> None:
        self._flaky[ConnectionId(connection_id)] = (error, times)

    async def send(self, connection_id: ConnectionId, message: ServerMessage) -> None:
        flaky = self._flaky.get(connection_id)
        if flaky is not None and flaky[1] > 0:
            error, left = flaky
            self._flaky[connection_id] = (error, left - 1)
            self.attempts.append(connection_id)
            self.failed[connection_id] += 1
            raise error
        await super().send(connection_id, message)


def throttling_error() -> StreamerError:
    """What the management-API adapter raises for a 429 after its retries."""
    return StreamerError(ErrorCode.RATE_LIMITED, "LimitExceededException")


def server_error() -> StreamerError:
    """What the management-API adapter raises for a 5xx after its retries."""
    return StreamerError(ErrorCode.INTERNAL_ERROR, "InternalServerErrorException")


# -- hostile frames ------------------------------------------------------------------

ACTIONS = [
    "ping",
    "status",
    "subscribe",
    "cancel",
    "echo",
    "echo_async",
    "validate_example",
    "delay",
    "generate_report",
    "process_data",
    "bulk_operation",
    "no_such_action",
    "",
    " ",
    "Echo",
    "echo\x00",
]

# Text that includes lone surrogates and every plane.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
big_text = st.builds(lambda ch, n: ch * n, st.characters(codec=None), st.integers(120, 140_000))
huge_int = st.integers(min_value=-(10**40), max_value=10**40) | st.sampled_from(
    [2**63, -(2**63) - 1, 10**300, 2**1024]
)
scalar = (
    st.none()
    | st.booleans()
    | huge_int
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text
)
json_value = st.recursive(
    scalar,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=20,
)
wrong_typed = json_value | big_text


@st.composite
def message_objects(draw: st.DrawFn) -> dict[str, Any]:
    """A JSON object shaped like a client message, with any field wrong."""
    body: dict[str, Any] = {}
    if draw(st.booleans()):
        body["id"] = draw(any_text | wrong_typed | st.sampled_from(["r-1", "x" * 129, "x" * 128]))
    if draw(st.integers(0, 9)) > 0:
        body["action"] = draw(st.sampled_from(ACTIONS) | wrong_typed)
    if draw(st.booleans()):
        body["payload"] = draw(
            st.dictionaries(
                st.sampled_from(
                    ["request_id", "seconds", "name", "email", "items", "start_date", "x"]
                )
                | any_text,
                json_value | big_text,
                max_size=5,
            )
            | wrong_typed
        )
    if draw(st.booleans()):
        body["metadata"] = draw(wrong_typed)
    return body


def _render(body: Any, how: str) -> str:
    if how == "compact":
        return json.dumps(body, separators=(",", ":"))
    return json.dumps(body, ensure_ascii=False)


json_objects_text = st.builds(_render, message_objects(), st.sampled_from(["compact", "unicode"]))

special_frames = st.sampled_from(
    [
        "",
        "null",
        "[]",
        "1",
        '"action"',
        "{",
        '{"action": NaN}',
        '{"action": "echo", "payload": {"x": NaN}}',
        '{"action": "echo", "payload": {"x": Infinity}}',
        '{"action": "echo", "payload": {"x": -Infinity}}',
        '{"action": "echo", "payload": {"x": 1e999}}',
        '{"action": "echo", "payload": {"x": ' + "9" * 5000 + "}}",
        '{"action": "echo", "payload": {"x": "\\ud800"}}',
        '{"action": "echo", "id": "\\udfff", "payload": {}}',
        '{"action": "echo_async", "id": "ok", "payload": {"\\ud83d": "\\ude00x"}}',
        '{"action": "echo", "action": 5}',
        '{"action": "echo", "payload": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "[" * 200_000,
        '{"a":' * 50_000 + "1" + "}" * 50_000,
        '{"action": "echo", "payload": {"x": "' + "y" * (130 * 1024) + '"}}',
        '{"action": "' + "a" * 5000 + '"}',
        '{"id": "' + "i" * 129 + '", "action": "ping"}',
        '{"action": "status", "payload": {"request_id": "' + "r" * 100_000 + '"}}',
        "\ufeff{}",
        '{"action": "ping"}\x00',
    ]
)

text_frames = json_objects_text | special_frames | any_text
byte_frames = st.binary(max_size=300) | json_objects_text.map(
    lambda t: t.encode("utf-8", "surrogatepass")
)
frames = text_frames | byte_frames


# -- a client that keeps every message ----------------------------------------------------


class Inbox:
    """Keeps every message a socket receives, so a test can wait for a reply by id
    while pushes (progress, outcomes) of other requests keep arriving.

    Args:
        ws: an open client connection.
    """

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self._taken: set[int] = set()

    async def send(self, body: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(body))

    async def ask(self, body: dict[str, Any], timeout_s: float = 30.0) -> dict[str, Any]:
        """Send a frame with an `id`; its reply (`response`, `acknowledgment` or `error`)."""
        await self.send(body)
        return await self.take(
            lambda m: (
                m.get("request_id") == body["id"]
                and m["type"] in ("response", "acknowledgment", "error")
            ),
            timeout_s,
        )

    async def final(self, request_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """The `complete` or `error` push of one request."""
        return await self.take(
            lambda m: m.get("request_id") == request_id and m["type"] in ("complete", "error"),
            timeout_s,
        )

    async def take(self, predicate: Any, timeout_s: float = 30.0) -> dict[str, Any]:
        """The first message not taken yet that matches, waiting for more if needed."""
        async with asyncio.timeout(timeout_s):
            index = 0
            while True:
                while index < len(self.messages):
                    if index not in self._taken and predicate(self.messages[index]):
                        self._taken.add(index)
                        return self.messages[index]
                    index += 1
                self.messages.append(json.loads(await self.ws.recv()))

    def of(self, request_id: str, *types: str) -> list[dict[str, Any]]:
        """Every message received so far about one request (of some types)."""
        return [
            m
            for m in self.messages
            if m.get("request_id") == request_id and (not types or m["type"] in types)
        ]


# -- waiting on log records ------------------------------------------------------------


class LogEvents(logging.Handler):
    """Sets an asyncio event when a record whose message starts with a prefix is logged."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: dict[str, asyncio.Event] = {}
        self.counts: Counter[tuple[str, str]] = Counter()
        self._thresholds: list[tuple[tuple[str, str], int, asyncio.Event]] = []

    def on(self, prefix: str) -> asyncio.Event:
        """Set at the next record starting with `prefix` (clear it to wait again)."""
        return self.events.setdefault(prefix, asyncio.Event())

    def until(self, logger: str, prefix: str, count: int) -> asyncio.Event:
        """Set once `logger` has logged `count` records starting with `prefix`,
        counted from the first `until` call about them."""
        key = (logger, prefix)
        self.counts.setdefault(key, 0)
        event = asyncio.Event()
        if self.counts[key] >= count:
            event.set()
        self._thresholds.append((key, count, event))
        return event

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for prefix, event in self.events.items():
            if message.startswith(prefix):
                event.set()
        for key in self.counts:
            if record.name == key[0] and message.startswith(key[1]):
                self.counts[key] += 1
        for key, count, event in self._thresholds:
            if self.counts[key] >= count:
                event.set()


@contextlib.contextmanager
def log_events() -> Iterator[LogEvents]:
    handler = LogEvents()
    watched = [logging.getLogger(name) for name in ("streamer", "emulator")]
    saved = [logger.level for logger in watched]
    for logger in watched:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        for logger, level in zip(watched, saved, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


# -- moto in its own process ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MotoProcess:
    """`moto_server` in a child process, killed and restarted on one port."""

    def __init__(self) -> None:
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.1):
                    return
            except OSError:
                if self._process.poll() is not None:
                    raise RuntimeError("moto_server exited at start") from None
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(timeout=0.05)
        raise RuntimeError("moto_server did not start")

    def kill(self) -> None:
        assert self._process is not None
        self._process.kill()
        self._process.wait(timeout=10)
        self._process = None
