"""moto finishes each answer (its request id and the XML id in the body) for less CPU.

Every answer goes through `BaseResponse._enrich_response`, which draws a
52-character request id and then runs `re.sub` with a lookbehind for
`<RequestId>` over the whole body: for a JSON body, a scan of every position
that can find nothing (0.75 ms for a 60 KB `GetRecords` page). A match needs
the text `<RequestId>` before it, so a text body without it is returned as it
is, as `re.sub` would return it; any other body takes moto's `re.sub`.

The id comes from `MotoRandom.get_random_string`: `random.choice` per character,
each through `_randbelow`, which draws `getrandbits(k)` until the number is below
the pool's size. The same draws are made here in one loop, so the same seed gives
the same ids and leaves the generator in the same state; a generator whose
`choice` or `_randbelow` is not `random.Random`'s takes moto's method.

Used by `LocalMotoServer`.
"""

from __future__ import annotations

import contextlib
import importlib
import random
import string
from typing import Any

__all__ = ["install", "uninstall"]

_MARK = "_streamer_cached"
_REQUEST_ID = r"(?<=<RequestId>).*(?=<\/RequestId>)"
"""moto's pattern for the request id in an XML body (`BaseResponse._enrich_response`)."""


def install() -> None:
    """Replace `BaseResponse._enrich_response` and `MotoRandom.get_random_string` (idempotent)."""
    responses = importlib.import_module("moto.core.responses")
    base = responses.BaseResponse
    stock = base.__dict__["_enrich_response"].__func__
    if not getattr(stock, _MARK, False):

        def _enrich_response(headers: dict[str, str], body: Any) -> tuple[dict[str, str], Any]:
            if "status" in headers:
                headers["status"] = str(headers["status"])
            request_id = responses.gen_amzn_requestid_long(headers)
            if type(body) is str and "<RequestId>" not in body:
                return headers, body  # the lookbehind can match nowhere
            with contextlib.suppress(Exception):  # as moto: a body it cannot search stays
                body = responses.re.sub(_REQUEST_ID, request_id, body)
            return headers, body

        _enrich_response.__wrapped__ = stock  # type: ignore[attr-defined]
        setattr(_enrich_response, _MARK, True)
        base._enrich_response = staticmethod(_enrich_response)
    _install_random_strings()


def uninstall() -> None:
    """Put moto's own methods back (tests compare the two)."""
    base = importlib.import_module("moto.core.responses").BaseResponse
    method = base.__dict__["_enrich_response"].__func__
    if getattr(method, _MARK, False):
        base._enrich_response = staticmethod(method.__wrapped__)
    motorandom = _motorandom()
    method = motorandom.get_random_string
    if getattr(method, _MARK, False):
        motorandom.get_random_string = method.__wrapped__


def _motorandom() -> Any:
    return importlib.import_module("moto.moto_api._internal.moto_random").MotoRandom


_BELOW: Any = getattr(random.Random, "_randbelow_with_getrandbits", None)
"""`random.Random`'s draw below a bound (`choice` calls it as `_randbelow`)."""


def _install_random_strings() -> None:
    motorandom = _motorandom()
    stock = motorandom.get_random_string
    if getattr(stock, _MARK, False):
        return
    letters, digits = string.ascii_letters, string.digits

    def get_random_string(
        self: Any, length: int = 20, include_digits: bool = True, lower_case: bool = False
    ) -> str:
        kind = type(self)
        if kind.choice is not random.Random.choice or kind._randbelow is not _BELOW:
            return str(stock(self, length, include_digits, lower_case))
        pool = letters + digits if include_digits else letters
        size = len(pool)
        bits = size.bit_length()
        draw = self.getrandbits
        chosen = []
        for _ in range(length):
            drawn = draw(bits)  # `Random._randbelow_with_getrandbits(size)`
            while drawn >= size:
                drawn = draw(bits)
            chosen.append(pool[drawn])
        text = "".join(chosen)
        return text.lower() if lower_case else text

    get_random_string.__wrapped__ = stock  # type: ignore[attr-defined]
    setattr(get_random_string, _MARK, True)
    motorandom.get_random_string = get_random_string
