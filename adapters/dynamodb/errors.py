"""botocore exceptions → the core's typed errors, in one helper (`map_client_errors`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from botocore.exceptions import BotoCoreError, ClientError

from streamer.errors import ItemTooLarge, StoreUnavailable, StreamerError

__all__ = ["ERROR_CODES", "ConditionFailed", "error_code", "map_client_errors"]

ERROR_CODES: dict[str, type[StreamerError]] = {
    # Throttling and server faults that outlived the client's retries.
    "ProvisionedThroughputExceededException": StoreUnavailable,
    "ThrottlingException": StoreUnavailable,
    "RequestLimitExceeded": StoreUnavailable,
    "LimitExceededException": StoreUnavailable,
    "InternalServerError": StoreUnavailable,
    "InternalFailure": StoreUnavailable,
    "ServiceUnavailable": StoreUnavailable,
    "TransactionConflictException": StoreUnavailable,
    # The store refuses the call: misconfiguration, surfaced as the same typed error.
    "ResourceNotFoundException": StoreUnavailable,
    "AccessDeniedException": StoreUnavailable,
    "UnrecognizedClientException": StoreUnavailable,
    "MissingAuthenticationToken": StoreUnavailable,
    "ExpiredTokenException": StoreUnavailable,
    "IncompleteSignature": StoreUnavailable,
    "ItemCollectionSizeLimitExceededException": ItemTooLarge,
}
"""Every AWS error code `map_client_errors` knows → the typed error it becomes.

`ValidationException` about an item's size also becomes `ItemTooLarge`; any other
code becomes `StoreUnavailable`. `ConditionalCheckFailedException` becomes the
private `ConditionFailed`, which the stores turn into their False/None result.
"""


class ConditionFailed(Exception):
    """A conditional write's condition did not hold: a lost race, not an error."""


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_size_error(exc: ClientError) -> bool:
    message = str(exc.response.get("Error", {}).get("Message", "")).lower()
    return (
        error_code(exc) == "ValidationException"
        and "size" in message
        and ("exceed" in message or "maximum" in message)
    )


@contextlib.contextmanager
def map_client_errors() -> Iterator[None]:
    """Translate botocore exceptions into `StreamerError`s at the adapter's edge.

    Raises:
        ItemTooLarge: the item would exceed 400 KB.
        StoreUnavailable: throttling, 5xx, connection errors (after the client's
            retries) and every other refusal; the message names the AWS code only.
        ConditionFailed: a conditional write lost (the stores' own business).
    """
    try:
        yield
    except ClientError as exc:
        code = error_code(exc)
        if code == "ConditionalCheckFailedException":
            raise ConditionFailed() from exc
        if _is_size_error(exc):
            raise ItemTooLarge() from exc
        error_type = ERROR_CODES.get(code, StoreUnavailable)
        if error_type is ItemTooLarge:
            raise ItemTooLarge() from exc
        raise StoreUnavailable(f"state store refused the call ({code or 'unknown error'})") from exc
    except BotoCoreError as exc:
        # Endpoint/connection errors, read/connect timeouts, closed connections.
        raise StoreUnavailable(f"state store unreachable ({type(exc).__name__})") from exc
