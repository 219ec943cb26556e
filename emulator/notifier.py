"""The emulator's `Notifier`: pushes server messages to the sockets the gateway holds."""

from __future__ import annotations

from websockets.exceptions import ConnectionClosed

from emulator.gateway import SocketRegistry
from streamer.errors import ConnectionGone
from streamer.models import ConnectionId
from streamer.protocol import ServerMessage, encode

__all__ = ["LocalNotifier"]


class LocalNotifier:
    """`Notifier` over the emulator's own open sockets.

    Args:
        registry: the gateway's open sockets.
    """

    def __init__(self, registry: SocketRegistry) -> None:
        self._registry = registry

    async def send(self, connection_id: ConnectionId, message: ServerMessage) -> None:
        """Send one message as a JSON text frame.

        Raises:
            ConnectionGone: no open socket has this id (never connected, closed,
                or closing), like API Gateway's 410 GoneException.
        """
        await self.send_raw(connection_id, encode(message))

    async def send_raw(self, connection_id: str, data: str | bytes) -> None:
        """Send one frame as-is (the management API's POST).

        Raises:
            ConnectionGone: no open socket has this id.
        """
        socket = self._registry.get(connection_id)
        if socket is None:
            raise ConnectionGone(connection_id)
        try:
            await socket.send(data)
        except ConnectionClosed as exc:
            raise ConnectionGone(connection_id) from exc
