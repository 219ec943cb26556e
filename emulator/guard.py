"""Who the emulator's HTTP side answers, and for how long: `Host` and `Origin`
against the addresses it serves (no DNS rebinding), the console's API for trusted
callers only, SigV4 on the management API, and a cap on open sockets.

The decisions are plain functions of what arrived; `emulator/http.py` applies them.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_TRUSTED_NETWORKS",
    "LOOPBACK_NAMES",
    "AccessPolicy",
    "ConnectionCap",
    "parse_networks",
]

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
"""Host names that always mean this machine."""
DEFAULT_TRUSTED_NETWORKS = ("127.0.0.0/8", "::1/128")
"""Callers of the console's API (dev tokens, the connection list) by default."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str | Iterable[str]) -> tuple[Network, ...]:
    """Networks from a comma list (or strings) of CIDRs or addresses.

    Raises:
        ValueError: one is not a network.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in items if item.strip())


def _host_name(host_header: str) -> str:
    """The name part of a `Host` value (`[::1]:3002` → `::1`, `a.b:80` → `a.b`)."""
    value = host_header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else ""
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """What the HTTP side accepts.

    Args:
        allowed_hosts: host names served besides loopback names and IP literals
            (`EMULATOR_ALLOWED_HOSTS`; e.g. a compose service name).
        trusted_networks: source addresses allowed to use the console's API.
        verify_signatures: False serves the management API unsigned.
    """

    allowed_hosts: frozenset[str] = frozenset()
    trusted_networks: tuple[Network, ...] = parse_networks(DEFAULT_TRUSTED_NETWORKS)
    verify_signatures: bool = True

    def is_served_host(self, host_header: str | None) -> bool:
        """True for a `Host` naming this server: an IP literal (a page can only be
        served from that very address, so it is no rebinding), a loopback name,
        or a configured name. A missing `Host` (HTTP/1.0 tools) is served too."""
        if host_header is None:
            return True
        name = _host_name(host_header)
        if not name:
            return False
        return (
            _is_ip_literal(name)
            or name in LOOPBACK_NAMES
            or name.endswith(".localhost")
            or name in self.allowed_hosts
        )

    def is_own_origin(self, origin: str | None, port: int) -> bool:
        """True when there is no `Origin` (not a browser's cross-site call) or it is
        one of this server's own: `http://<served host>:<port>`."""
        if origin is None:
            return True
        parts = urlsplit(origin.strip())
        try:
            origin_port = parts.port
        except ValueError:
            return False
        return (
            parts.scheme == "http"
            and origin_port == port
            and parts.hostname is not None
            and self.is_served_host(parts.hostname)
        )

    def is_trusted_caller(self, address: str | None) -> bool:
        """True when the peer address is in a trusted network (loopback by default)."""
        if not address:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.trusted_networks)


class ConnectionCap:
    """Caps the sockets one server holds: a connection over `limit` is dropped as
    soon as it is accepted, so idle sockets never use up the process's files.

    Wraps a protocol factory (aiohttp's server): `loop.create_server(cap.wrap(factory))`.

    Args:
        limit: sockets held at most.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        """Sockets held now."""
        self.peak = 0
        """The most held at once."""
        self.refused = 0
        """Connections dropped because the cap was reached."""
        self.accepted = 0
        """Connections accepted in all (held or dropped)."""
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def wait_accepted(self, count: int) -> None:
        """Return once `count` connections have been accepted in all."""
        if self.accepted >= count:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((count, waiter))
        await waiter

    def _counted(self) -> None:
        self.accepted += 1
        for count, waiter in [w for w in self._waiters if w[0] <= self.accepted]:
            self._waiters.remove((count, waiter))
            if not waiter.done():
                waiter.set_result(None)

    def wrap(self, factory: Callable[[], asyncio.BaseProtocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory that counts, and drops what is over the cap."""

        def make() -> asyncio.Protocol:
            self._counted()
            if self.open >= self.limit:
                self.refused += 1
                return _Dropped()
            self.open += 1
            self.peak = max(self.peak, self.open)
            return _Counted(factory(), self)

        return make


class _Dropped(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()  # type: ignore[attr-defined]


class _Counted(asyncio.Protocol):
    """Forwards every callback to the wrapped protocol; gives its slot back once."""

    def __init__(self, inner: asyncio.BaseProtocol, cap: ConnectionCap) -> None:
        self._inner: Any = inner
        self._cap: ConnectionCap | None = cap

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._cap is not None:
            self._cap.open -= 1
            self._cap = None
        self._inner.connection_lost(exc)
