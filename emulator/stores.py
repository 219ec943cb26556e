"""Store decorators the emulator puts between the core services and DynamoDB.

The emulator runs the router, the processor and the gateway in one process, so
it knows things a Lambda deployment has to ask the database for:

- `WakingRequestStore` tells the stream poller that a claimable (PENDING) image
  was just written, so a new request is read at once instead of at the next
  idle poll.
- `LiveConnectionStore` counts a user's connections from the sockets the
  gateway holds, instead of a `UserIndex` query (moto answers one by scanning
  the whole table, which makes holding thousands of connections impossible).
  When the table's connection counter says every connection is one of this
  process's sockets, a push's pages of a user or a tenant come from those
  sockets too, rather than from reading thousands of index items back out of moto.

Everything else is passed through to the wrapped store unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import datetime

from emulator.gateway import SocketRegistry
from streamer.models import (
    AsyncRequest,
    Connection,
    ConnectionId,
    RequestKey,
    RequestStatus,
    TenantId,
    UserId,
)
from streamer.ports import DEFAULT_PAGE_SIZE, ConnectionStore, EnqueueResult, RequestStore
from streamer.transitions import Transition

__all__ = ["LiveConnectionStore", "WakingRequestStore"]

log = logging.getLogger("emulator.stores")


class WakingRequestStore:
    """A `RequestStore` that calls `on_pending` after each write that leaves a
    PENDING image in the stream (a new request, a hand-back, a requeued lease,
    a kick), and `on_change` after every write.

    Args:
        inner: the store that does the work.
        on_pending: called (synchronously, without arguments) after such a write
            succeeded; the emulator passes the stream poller's `wake`.
        on_change: called after any write succeeded; the emulator passes the
            table saver's `mark_changed`, so an idle emulator scans nothing.
    """

    def __init__(
        self,
        inner: RequestStore,
        on_pending: Callable[[], None],
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._inner = inner
        self._on_pending = on_pending
        self._on_change = on_change

    async def enqueue(self, request: AsyncRequest) -> EnqueueResult:
        """Insert a PENDING request unless its key exists; wakes the poller if it did."""
        result = await self._inner.enqueue(request)
        if result.created:
            self._changed()
            self._on_pending()
        return result

    async def apply(self, key: RequestKey, transition: Transition) -> AsyncRequest | None:
        """Make the change; wakes the poller when it left the request PENDING."""
        changed = await self._inner.apply(key, transition)
        if changed is not None:
            self._changed()
            if changed.status is RequestStatus.PENDING:
                self._on_pending()
        return changed

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    # -- passed through ------------------------------------------------------------

    async def get(self, key: RequestKey) -> AsyncRequest | None:
        return await self._inner.get(key)

    async def list_expired_leases(self, *, now: datetime, limit: int) -> list[AsyncRequest]:
        return await self._inner.list_expired_leases(now=now, limit=limit)

    async def list_stale_pending(self, *, older_than: datetime, limit: int) -> list[AsyncRequest]:
        return await self._inner.list_stale_pending(older_than=older_than, limit=limit)

    async def list_by_connection(self, connection_id: ConnectionId) -> list[AsyncRequest]:
        return await self._inner.list_by_connection(connection_id)


class LiveConnectionStore:
    """A `ConnectionStore` whose `list_by_user` answers from this process's live
    sockets rather than the `UserIndex`.

    A user's connections are the sockets the gateway holds for them, plus the
    ones admitted by `put` whose upgrade has not finished yet. A reservation is
    taken synchronously when `put` starts, and `ConnectionService.connect` does
    not yield between its count and its `put`, so concurrent handshakes of one
    user cannot overshoot the per-user limit here. A slot is freed when the
    socket closes (it leaves the registry) or its record is deleted.

    Records that other processes wrote into a shared table (another emulator, a
    Lambda parity test) are not counted.

    A push's pages (`pages_by_user`, `pages_by_tenant`) come from the open sockets
    when `recorded()` (the table's connection counter) equals the connections this
    process holds or is admitting: then no other process holds one. Otherwise
    (another emulator shares the table, records outlived a crash, the counter
    cannot be read) they come from the index, as in Lambda. Either way a push
    reaches every open socket of the target; from the sockets it does not try
    records whose socket is gone, so its summary counts no `gone` for them (the
    sweeper and the TTL remove those records).

    Args:
        inner: the store every other call goes to (and which `put` still writes).
        registry: the gateway's open sockets.
        recorded: the number of connection records the table counts; None
            always pages through the index.
    """

    def __init__(
        self,
        inner: ConnectionStore,
        registry: SocketRegistry,
        *,
        recorded: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self._inner = inner
        self._registry = registry
        self._recorded = recorded
        self._admitting: dict[ConnectionId, Connection] = {}

    async def list_by_user(self, user_id: UserId) -> list[Connection]:
        """The user's live connections in this process (no database call)."""
        live = {
            socket.connection_id: socket.connection for socket in self._registry.of_user(user_id)
        }
        for cid, connection in list(self._admitting.items()):
            if cid in live or self._registry.get(cid) is not None:
                del self._admitting[cid]  # its socket is open: the registry counts it
            elif connection.user_id == user_id:
                live[cid] = connection
        return list(live.values())

    async def put(self, connection: Connection) -> None:
        """Reserve the user's slot, then store the record (the reservation is
        dropped when the write fails)."""
        self._admitting[connection.connection_id] = connection
        try:
            await self._inner.put(connection)
        except BaseException:
            self._admitting.pop(connection.connection_id, None)
            raise

    async def delete(self, connection_id: ConnectionId) -> Connection | None:
        """Free the slot, then delete the record."""
        self._admitting.pop(connection_id, None)
        return await self._inner.delete(connection_id)

    # -- passed through ------------------------------------------------------------

    async def get(self, connection_id: ConnectionId) -> Connection | None:
        return await self._inner.get(connection_id)

    async def touch(self, connection_id: ConnectionId, at: datetime) -> bool:
        return await self._inner.touch(connection_id, at)

    async def list_by_tenant(self, tenant_id: TenantId) -> list[Connection]:
        return await self._inner.list_by_tenant(tenant_id)

    async def pages_by_user(
        self, user_id: UserId, *, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncIterator[Sequence[Connection]]:
        """The user's connections: from the open sockets when they are every
        connection there is, else from the `UserIndex`."""
        if await self._holds_every_connection():
            live = [s.connection for s in self._registry.of_user(user_id)]
            for page in _pages(live, page_size):
                yield page
            return
        async for page in self._inner.pages_by_user(user_id, page_size=page_size):
            yield page

    async def pages_by_tenant(
        self, tenant_id: TenantId, *, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncIterator[Sequence[Connection]]:
        """The tenant's connections: from the open sockets when they are every
        connection there is, else from the `TenantIndex`."""
        if await self._holds_every_connection():
            live = [s.connection for s in self._registry if s.connection.tenant_id == tenant_id]
            for page in _pages(live, page_size):
                yield page
            return
        async for page in self._inner.pages_by_tenant(tenant_id, page_size=page_size):
            yield page

    async def _holds_every_connection(self) -> bool:
        if self._recorded is None:
            return False
        try:
            recorded = await self._recorded()
        except Exception:  # the index is the answer that needs no counter
            log.warning("could not read the connection counter; pushing from the index")
            return False
        here = {s.connection_id for s in self._registry}
        here.update(self._admitting)
        return recorded == len(here)


def _pages(connections: list[Connection], size: int) -> Iterator[Sequence[Connection]]:
    for start in range(0, len(connections), size):
        yield connections[start : start + size]
