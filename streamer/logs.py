"""Structured logs: one JSON object per line, with a whitelist of context fields.

Only the fields in `CONTEXT_FIELDS` pass from `extra=` into a line, so a
payload or a token handed to a logger by mistake never reaches the logs. The
wire-level libraries (`WIRE_LOGGERS`) are held at INFO unless asked for, and
every handler carries a `SecretRedactor`, so even their DEBUG trace shows no
credential, token or body.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any

from streamer.clock import MILLISECONDS_Z, utc_second

__all__ = [
    "CONTEXT_FIELDS",
    "WIRE_LOGGERS",
    "JsonFormatter",
    "SecretRedactor",
    "configure_logging",
    "redact",
]

CONTEXT_FIELDS = (
    "connection_id",
    "request_id",
    "action",
    "duration_ms",
    "status",
    "code",
    "user_id",
    "tenant_id",
    "aws_request_id",
    "outcome",
    "attempt",
    "reason",
    "count",
)
"""The `extra=` keys that appear in log lines; any other key is dropped."""


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: `ts, level, logger, msg`, context fields,
    and `exception` (the formatted traceback) when there is one.

    Args:
        line_end: appended to every record: `""` for a `StreamHandler` (which ends
            the line itself), `"\\n"` for a handler that writes records as given.
    """

    def __init__(self, *, line_end: str = "") -> None:
        super().__init__()
        self._line_end = line_end

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_text:  # already formatted (and redacted) by `SecretRedactor`
            line["exception"] = record.exc_text
        elif record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        encoded = json.dumps(line, default=str, ensure_ascii=False, separators=(",", ":"))
        return encoded + self._line_end


def _timestamp(created: float) -> str:
    # strftime took a third of a record's formatting: the second is formatted once,
    # the milliseconds truncated, as before.
    at = datetime.fromtimestamp(created, UTC)
    return utc_second(at) + MILLISECONDS_Z[at.microsecond // 1000]


WIRE_LOGGERS = (
    "botocore",
    "aiobotocore",
    "boto3",
    "urllib3",
    "aiohttp",
    "websockets",
    "emulator.websockets",
    "moto",
)
"""Loggers of the libraries that move bytes: their DEBUG trace holds request and
response bodies, signed headers and session tokens."""

_REDACTED = "[redacted]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # A JWT anywhere (header.payload.signature, base64url).
    (re.compile(r"eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*"), _REDACTED),
    # An HTTP request line's query (`GET /?Authorization=... HTTP/1.0`).
    (
        re.compile(r"\b((?:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS|CONNECT) [^\s?]*)\?\S+"),
        r"\1?" + _REDACTED,
    ),
    # Secret headers, query parameters and fields, however quoted:
    # `authorization: ...`, `'X-Amz-Security-Token': b'...'`, `Signature=...`.
    (
        re.compile(
            r"(?i)((?:authorization|x-amz-security-token|x-amz-signature|x-amz-credential"
            r"|signature|credential|cookie|set-cookie|aws_secret_access_key|aws_session_token"
            r"|secretaccesskey|sessiontoken|secret_key|session_token|token)"
            r"['\"]?\s*[:=]\s*b?['\"]?)[^'\"\s,&;}]+(?:[ ][^'\"\s,&;}]+)*"
        ),
        r"\1" + _REDACTED,
    ),
)

_BODY_TEMPLATE = re.compile(
    r"(?i)body|param|request|response|canonical|stringtosign|signature|header|payload"
    r"|data|event|frame|kwargs|args|sending|received"
)
"""A wire logger's message template that interpolates what it sends or gets."""


def redact(text: str) -> str:
    """`text` with tokens, signatures, session tokens and request-line queries removed."""
    if "eyJ" not in text and "?" not in text and ":" not in text and "=" not in text:
        return text  # every pattern needs one of these: most messages have none
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class SecretRedactor(logging.Filter):
    """Rewrites each record before any handler formats it: the message and the
    traceback lose tokens and credentials (`redact`), and a wire logger's values
    are dropped from templates that carry bodies, requests or headers (only
    numbers stay). Put on handlers, so it sees the records of every logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if args and _is_wire(record.name) and _BODY_TEMPLATE.search(str(record.msg)):
            record.args = _blank_args(args)
        try:
            message = record.getMessage()
        except Exception:  # a template that does not fit its args: keep the template
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _is_wire(name: str) -> bool:
    return any(name == wire or name.startswith(wire + ".") for wire in WIRE_LOGGERS)


def _blank_args(args: tuple[object, ...] | Any) -> tuple[object, ...] | Any:
    if isinstance(args, tuple):
        return tuple(
            a if isinstance(a, (int, float)) and not isinstance(a, bool) else _REDACTED
            for a in args
        )
    if isinstance(args, dict):
        return dict.fromkeys(args, _REDACTED)
    return (_REDACTED,)


def configure_logging(
    level: str = "INFO", *, wire_level: str | None = None, stream: IO[str] | None = None
) -> None:
    """Send the root logger's records out as JSON lines at `level`. Idempotent.

    In AWS Lambda the runtime's own handler gets the JSON formatter (so lines
    are not written twice), ending each record with a newline as Lambda's own
    format does: without a telemetry fd (Lambda RIE, `sam local`) the runtime
    writes records to stdout as given. Elsewhere one stream handler is added,
    once. Every such handler gets a `SecretRedactor`.

    Args:
        level: the root level (`LOG_LEVEL`).
        wire_level: the level of `WIRE_LOGGERS` (`STREAMER_WIRE_LOG_LEVEL`); None
            holds them at INFO or `level`, whichever is higher.
        stream: where lines go outside Lambda (stderr by default).
    """
    root = logging.getLogger()
    root.setLevel(level.upper())
    root_level = logging.getLevelName(level.upper())
    held = wire_level.upper() if wire_level else logging.getLevelName(max(logging.INFO, root_level))
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(held)
    ours = [h for h in root.handlers if getattr(h, _MARK, False)]
    if ours:
        for handler in ours:
            if stream is not None and isinstance(handler, logging.StreamHandler):
                handler.setStream(stream)
        return
    lambda_handlers = [
        h for h in root.handlers if type(h).__name__.startswith("LambdaLoggerHandler")
    ]
    if lambda_handlers:
        for handler in lambda_handlers:
            _adopt(handler, line_end="\n")
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    _adopt(handler)
    root.addHandler(handler)


def _adopt(handler: logging.Handler, *, line_end: str = "") -> None:
    handler.setFormatter(JsonFormatter(line_end=line_end))
    if not any(isinstance(f, SecretRedactor) for f in handler.filters):
        handler.addFilter(SecretRedactor())
    setattr(handler, _MARK, True)


_MARK = "_streamer_json"
