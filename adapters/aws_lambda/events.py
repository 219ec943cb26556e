"""Typed views of the Lambda events Streamer receives, parsed once at the edge.

API Gateway WebSocket proxy events (`$connect`, `$disconnect`, `$default`) become
a `WebSocketEvent`; a DynamoDB Streams batch becomes a `StreamBatch` of raw
records (each parsed by the one shared parser, `adapters.streams.records`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from adapters.streams.records import sequence_number_of
from streamer.models import ConnectionId

__all__ = [
    "EventType",
    "MalformedEvent",
    "StreamBatch",
    "StreamRecord",
    "WebSocketEvent",
]


class MalformedEvent(ValueError):
    """An event lacks what its route needs (not an API Gateway / Streams event)."""


class EventType(StrEnum):
    """`requestContext.eventType` of a WebSocket proxy event."""

    CONNECT = "CONNECT"
    MESSAGE = "MESSAGE"
    DISCONNECT = "DISCONNECT"


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items() if v is not None}


@dataclass(frozen=True, slots=True)
class WebSocketEvent:
    """One API Gateway WebSocket proxy event (AWS's `$connect`/message/`$disconnect` samples).

    Args:
        route_key: `$connect`, `$disconnect`, `$default` or a custom route.
        event_type: CONNECT, MESSAGE or DISCONNECT.
        connection_id: API Gateway's id of the connection.
        domain_name, stage: where the management API reaches the connection.
        request_id: API Gateway's id of this request (for the logs).
        source_ip: `identity.sourceIp`.
        request_time_epoch_ms: `requestTimeEpoch`.
        headers: request headers, names lower-cased (CONNECT and DISCONNECT only).
        query: `queryStringParameters` (CONNECT only).
        header_values, query_values: every value of each name
            (`multiValueHeaders`, `multiValueQueryStringParameters`; the
            single-value maps when those are absent), for the core to refuse
            two `Authorization`s: the single-value maps keep only the last.
        body: the message (MESSAGE only): text, or bytes for a binary one
            (`isBase64Encoded`), which the frame policy closes with 1003.
        message_id: `messageId` (MESSAGE only).
        disconnect_status_code, disconnect_reason: DISCONNECT only.
    """

    route_key: str
    event_type: EventType
    connection_id: ConnectionId
    domain_name: str
    stage: str
    request_id: str = ""
    source_ip: str = ""
    request_time_epoch_ms: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    header_values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    query_values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    body: str | bytes | None = None
    message_id: str | None = None
    disconnect_status_code: int | None = None
    disconnect_reason: str = ""

    @classmethod
    def parse(cls, event: Mapping[str, Any]) -> WebSocketEvent:
        """Read a proxy event.

        Raises:
            MalformedEvent: no `requestContext`, or no connection id / event type.
        """
        context = event.get("requestContext")
        if not isinstance(context, Mapping):
            raise MalformedEvent("not an API Gateway WebSocket event: no requestContext")
        connection_id = context.get("connectionId")
        if not isinstance(connection_id, str) or not connection_id:
            raise MalformedEvent("WebSocket event without requestContext.connectionId")
        try:
            event_type = EventType(str(context.get("eventType", "")))
        except ValueError:
            raise MalformedEvent(
                f"unknown requestContext.eventType {context.get('eventType')!r}"
            ) from None
        identity = context.get("identity")
        source_ip = str(identity.get("sourceIp", "")) if isinstance(identity, Mapping) else ""
        status = context.get("disconnectStatusCode")
        headers = {k.lower(): v for k, v in _str_map(event.get("headers")).items()}
        query = _str_map(event.get("queryStringParameters"))
        return cls(
            route_key=str(context.get("routeKey", "")),
            event_type=event_type,
            connection_id=ConnectionId(connection_id),
            domain_name=str(context.get("domainName", "")),
            stage=str(context.get("stage", "")),
            request_id=str(context.get("requestId", "")),
            source_ip=source_ip,
            request_time_epoch_ms=int(context.get("requestTimeEpoch", 0) or 0),
            headers=headers,
            query=query,
            header_values={
                k.lower(): v
                for k, v in _values_map(event.get("multiValueHeaders"), headers).items()
            },
            query_values=_values_map(event.get("multiValueQueryStringParameters"), query),
            body=_body_of(event),
            message_id=context.get("messageId"),
            disconnect_status_code=int(status) if isinstance(status, int | str) else None,
            disconnect_reason=str(context.get("disconnectReason", "") or ""),
        )

    @property
    def endpoint(self) -> str:
        """The management API of this connection: `https://{domainName}/{stage}`."""
        return f"https://{self.domain_name}/{self.stage}"

    @property
    def user_agent(self) -> str:
        """The client's `User-Agent` header, or ""."""
        return self.headers.get("user-agent", "")


def _values_map(value: Any, single: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, Mapping):
        return {k: (v,) for k, v in single.items()}
    values: dict[str, tuple[str, ...]] = {}
    for k, v in value.items():
        items = v if isinstance(v, list | tuple) else [v]
        values[str(k)] = tuple(str(item) for item in items if item is not None)
    return values


def _body_of(event: Mapping[str, Any]) -> str | bytes | None:
    body = event.get("body")
    if body is None:
        return None
    if not isinstance(body, str):
        return str(body)
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            # Marked binary but not base64: still a binary message.
            return body.encode("utf-8", "surrogatepass")
    return body


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One record of a DynamoDB Streams batch, still raw for the shared parser.

    Args:
        sequence_number: `dynamodb.SequenceNumber`, the batch-failure identifier.
        raw: the record as Lambda delivered it.
    """

    sequence_number: str
    raw: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class StreamBatch:
    """A DynamoDB Streams event: its records in delivery order."""

    records: tuple[StreamRecord, ...]

    @classmethod
    def parse(cls, event: Mapping[str, Any]) -> StreamBatch:
        """Read a Streams event.

        Raises:
            MalformedEvent: no `Records` list, or a record without a sequence number
                (it could not be reported as a batch item failure).
        """
        records = event.get("Records")
        if not isinstance(records, list):
            raise MalformedEvent("not a DynamoDB Streams event: no Records list")
        parsed: list[StreamRecord] = []
        for raw in records:
            sequence = sequence_number_of(raw)
            if sequence is None:
                raise MalformedEvent("stream record without dynamodb.SequenceNumber")
            parsed.append(StreamRecord(sequence_number=sequence, raw=raw))
        return cls(records=tuple(parsed))
