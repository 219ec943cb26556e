"""The emulator's `Notifier`: pushes server messages to the sockets the gateway holds."""

from __future__ import annotations

import asyncio

from websockets.exceptions import ConnectionClosed

from emulator.gateway import SocketRegistry
from streamer.errors import ConnectionGone, ErrorCode, StreamerError
from streamer.frames import FramePolicy
from streamer.models import ConnectionId
from streamer.protocol import ServerMessage

__all__ = ["LocalNotifier"]


class LocalNotifier:
    """`Notifier` over the emulator's own open sockets.

    Args:
        registry: the gateway's open sockets.
        send_timeout_s: how long one send may wait for a client that does not
            read (its socket buffer is full) before it counts as failed, so a
            stalled client never stalls the actions that report to it.
        frame_policy: the message limit (API Gateway's by default).
    """

    def __init__(
        self,
        registry: SocketRegistry,
        *,
        send_timeout_s: float = 10.0,
        frame_policy: FramePolicy | None = None,
    ) -> None:
        self._registry = registry
        self._send_timeout_s = send_timeout_s
        self._frame_policy = frame_policy or FramePolicy()

    async def send(self, connection_id: ConnectionId, message: ServerMessage) -> None:
        """Send one message as a JSON text frame.

        Raises:
            ConnectionGone: no open socket has this id (never connected, closed,
                or closing), like API Gateway's 410 GoneException.
            StreamerError: PAYLOAD_TOO_LARGE over the message limit.
        """
        await self.send_raw(connection_id, self._frame_policy.outbound(message))

    async def send_raw(self, connection_id: str, data: str | bytes) -> None:
        """Send one frame as-is (the management API's POST).

        Raises:
            ConnectionGone: no open socket has this id.
            StreamerError: PAYLOAD_TOO_LARGE over API Gateway's 128 KB message
                limit; INTERNAL_ERROR when the client did not take the frame
                within the send timeout.
        """
        # API Gateway refuses these (413); refusing them here too keeps the
        # emulator from hiding a result that could never reach a real client.
        self._frame_policy.check_outbound(data)
        socket = self._registry.get(connection_id)
        if socket is None:
            raise ConnectionGone(connection_id)
        try:
            async with asyncio.timeout(self._send_timeout_s):
                await socket.send(data)
        except ConnectionClosed as exc:
            raise ConnectionGone(connection_id) from exc
        except TimeoutError:
            raise StreamerError(
                ErrorCode.INTERNAL_ERROR, "the client is not reading its socket"
            ) from None
