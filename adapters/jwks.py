"""`JwksFetcher` over HTTPS with the standard library, in a worker thread."""

from __future__ import annotations

import asyncio

from streamer.keys import MAX_JWKS_BYTES, JwksUnavailable

__all__ = ["UrllibJwksFetcher"]

DEFAULT_TIMEOUT_S = 5.0


class UrllibJwksFetcher:
    """Fetches a JWKS with `urllib` in a thread, so the event loop never blocks.

    Args:
        timeout_s: connect and read timeout of one fetch (default 5 s).
    """

    def __init__(self, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._timeout_s = timeout_s

    async def fetch(self, url: str) -> bytes:
        """The body of `url` (2xx only, at most `MAX_JWKS_BYTES`).

        Raises:
            JwksUnavailable: network error, timeout, non-2xx status, or too big.
        """
        return await asyncio.to_thread(self._fetch_blocking, url)

    def _fetch_blocking(self, url: str) -> bytes:
        # Imported at the first fetch: urllib pulls in ssl and http.client,
        # which a Lambda cold start verifying static keys never needs.
        import http.client
        import urllib.error
        import urllib.request

        request = urllib.request.Request(
            url, headers={"Accept": "application/json", "User-Agent": "streamer-jwks"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                body: bytes = response.read(MAX_JWKS_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise JwksUnavailable(f"JWKS answered HTTP {exc.code}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            raise JwksUnavailable(f"JWKS unreachable ({type(exc).__name__})") from None
        if len(body) > MAX_JWKS_BYTES:
            raise JwksUnavailable(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
        return body
