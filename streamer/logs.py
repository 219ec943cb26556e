"""Structured logs: one JSON object per line, with a whitelist of context fields.

Only the fields in `CONTEXT_FIELDS` pass from `extra=` into a line, so a
payload or a token handed to a logger by mistake never reaches the logs.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

__all__ = ["CONTEXT_FIELDS", "JsonFormatter", "configure_logging"]

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
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        encoded = json.dumps(line, default=str, ensure_ascii=False, separators=(",", ":"))
        return encoded + self._line_end


def _timestamp(created: float) -> str:
    at = datetime.fromtimestamp(created, UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def configure_logging(level: str = "INFO", *, stream: IO[str] | None = None) -> None:
    """Send the root logger's records out as JSON lines at `level`. Idempotent.

    In AWS Lambda the runtime's own handler gets the JSON formatter (so lines
    are not written twice), ending each record with a newline as Lambda's own
    format does: without a telemetry fd (Lambda RIE, `sam local`) the runtime
    writes records to stdout as given. Elsewhere one stream handler is added, once.
    """
    root = logging.getLogger()
    root.setLevel(level.upper())
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
            handler.setFormatter(JsonFormatter(line_end="\n"))
            setattr(handler, _MARK, True)
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    setattr(handler, _MARK, True)
    root.addHandler(handler)


_MARK = "_streamer_json"
