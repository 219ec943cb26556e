"""Values DynamoDB cannot keep are refused the same way by both backends, and nothing is written."""

from __future__ import annotations

from typing import Any

import pytest
from test_contract_stores import EXPIRES, Stores, a_request, at, claimed, stores

from streamer import transitions
from streamer.errors import UnstorableValue
from streamer.models import RequestStatus

__all__ = ["stores"]  # the parametrised fixture: the fakes, then DynamoDB on moto

UNSTORABLE: list[Any] = [
    float("nan"),
    float("inf"),
    10**40,  # 41 significant digits; DynamoDB keeps 38
    1e300,  # beyond DynamoDB's exponent range
]


@pytest.mark.parametrize("value", UNSTORABLE, ids=["nan", "inf", "41-digits", "1e300"])
async def test_an_unstorable_result_is_refused_and_the_request_stays_processing(
    stores: Stores, value: Any
) -> None:
    request = await claimed(stores)
    with pytest.raises(UnstorableValue):
        await stores.requests.apply(
            request.key,
            transitions.complete(
                attempt=request.attempt, result={"x": value}, now=at(2), expires_at=EXPIRES
            ),
        )
    stored = await stores.requests.get(request.key)
    assert stored is not None
    assert (stored.status, stored.result) == (RequestStatus.PROCESSING, None)


@pytest.mark.parametrize("value", UNSTORABLE, ids=["nan", "inf", "41-digits", "1e300"])
async def test_an_unstorable_payload_is_refused_and_nothing_is_stored(
    stores: Stores, value: Any
) -> None:
    request = a_request(payload={"x": value})
    with pytest.raises(UnstorableValue):
        await stores.requests.enqueue(request)
    assert await stores.requests.get(request.key) is None


async def test_large_but_storable_numbers_round_trip(stores: Stores) -> None:
    payload = {"big": 10**37, "small": 1e-100, "float": 0.1}
    request = a_request(payload=payload)
    await stores.requests.enqueue(request)
    stored = await stores.requests.get(request.key)
    assert stored is not None
    assert stored.payload == payload
