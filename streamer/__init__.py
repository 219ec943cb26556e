"""Streamer: long-running operations behind a WebSocket API on AWS serverless."""

from streamer.app import Request, Streamer, load_app
from streamer.errors import ErrorCode, RequestCancelled, Retryable, StreamerError
from streamer.progress import Progress

__all__ = [
    "ErrorCode",
    "Progress",
    "Request",
    "RequestCancelled",
    "Retryable",
    "Streamer",
    "StreamerError",
    "load_app",
]
