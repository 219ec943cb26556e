"""Frame policy: API Gateway's frame rules and the one encoding of every reply,
decided here for both runtimes (DESIGN §4).

Like websockets' sans-I/O `protocol.py`, nothing here does I/O: the edges (the
emulator's gateway, the Lambda router, the notifiers) hand in what they received
and get back a verdict, `Send(text)` or `Close(code)`, which they obey.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from streamer.errors import ErrorCode, StreamerError
from streamer.protocol import ServerMessage, encode, encoded_size, error_message

__all__ = [
    "FRAME_LIMIT_BYTES",
    "MESSAGE_LIMIT_BYTES",
    "Close",
    "CloseCode",
    "FrameKind",
    "FrameMeter",
    "FramePolicy",
    "Send",
    "Verdict",
    "split_into_frames",
]

FRAME_LIMIT_BYTES = 32 * 1024
"""API Gateway's WebSocket frame limit: one frame's payload."""
MESSAGE_LIMIT_BYTES = 128 * 1024
"""API Gateway's WebSocket message limit: a whole (possibly fragmented) message,
either way: client frames in, management-API posts out."""


class FrameKind(StrEnum):
    """The opcode of a data frame (or of a fragmented message's first frame)."""

    TEXT = "text"
    BINARY = "binary"


class CloseCode(IntEnum):
    """The close codes the frame rules give (RFC 6455 §7.4.1)."""

    UNSUPPORTED_DATA = 1003
    MESSAGE_TOO_BIG = 1009


@dataclass(frozen=True, slots=True)
class Send:
    """Send `text` as one text message; it is within the message limit.

    Args:
        text: the encoded reply (JSON), encoded once, here.
        message: what it encodes (for the edge's log line and metrics).
    """

    text: str
    message: ServerMessage


@dataclass(frozen=True, slots=True)
class Close:
    """Close the socket with `code` and `reason`; nothing is sent before."""

    code: CloseCode
    reason: str


Verdict = Send | Close
"""What the core says to do with a client message."""


@dataclass(frozen=True, slots=True)
class FramePolicy:
    """The size and type rules for frames in and messages out.

    Args:
        frame_bytes: a single frame over it closes the socket with 1009 (API Gateway: 32 KB).
        message_bytes: a message over it closes with 1009; a reply over it is
            replaced by PAYLOAD_TOO_LARGE (API Gateway: 128 KB).
    """

    frame_bytes: int = FRAME_LIMIT_BYTES
    message_bytes: int = MESSAGE_LIMIT_BYTES

    def check(
        self, kind: FrameKind, size_bytes: int, *, is_fragmented: bool = False
    ) -> Close | None:
        """The verdict on a frame, or on a fragmented message's total: None to
        go on, or how to close.

        Args:
            kind: TEXT or BINARY (a continuation frame has its message's kind).
            size_bytes: the payload's size.
            is_fragmented: `size_bytes` is a fragmented message's total (so far),
                which only the message limit applies to.
        """
        # Size over the message limit first: a server cannot know a frame's type
        # before it has buffered it, and it will not buffer that much.
        if size_bytes > self.message_bytes:
            return Close(CloseCode.MESSAGE_TOO_BIG, "message too big")
        if kind is FrameKind.BINARY:
            return Close(CloseCode.UNSUPPORTED_DATA, "binary frames are not supported")
        if not is_fragmented and size_bytes > self.frame_bytes:
            return Close(CloseCode.MESSAGE_TOO_BIG, "frame too big")
        return None

    def reply(self, message: ServerMessage) -> Send:
        """`message` encoded for the client, or, when that is over the message
        limit, a PAYLOAD_TOO_LARGE error for the same `request_id` in its place."""
        text = encode(message)
        size = encoded_size(text)
        if size <= self.message_bytes:
            return Send(text, message)
        too_large = error_message(
            self._too_large(size, "the reply"),
            at=message.timestamp,
            request_id=getattr(message, "request_id", None),
        )
        return Send(encode(too_large), too_large)

    def outbound(self, message: ServerMessage) -> str:
        """`message` encoded for a push (progress, completion, a management-API post).

        Raises:
            StreamerError: PAYLOAD_TOO_LARGE when it is over the message limit
                (API Gateway would refuse the post with 413).
        """
        text = encode(message)
        self.check_outbound(text)
        return text

    def check_outbound(self, data: str | bytes) -> None:
        """Refuse a frame to send that is over the message limit.

        Raises:
            StreamerError: PAYLOAD_TOO_LARGE, with the size and the limit.
        """
        size = encoded_size(data)
        if size > self.message_bytes:
            raise self._too_large(size, "message")

    def _too_large(self, size: int, what: str) -> StreamerError:
        return StreamerError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"{what} is {size} bytes; the limit is {self.message_bytes}",
            {"size": size, "limit": self.message_bytes},
        )


@dataclass(slots=True)
class FrameMeter:
    """Follows one connection's incoming data frames for the edge that sees them
    one by one (the emulator; API Gateway does this before Lambda is invoked).

    Args:
        policy: the rules each frame and each fragmented message is checked by.
    """

    policy: FramePolicy
    _kind: FrameKind = FrameKind.TEXT
    _size_bytes: int = 0
    _frames: int = 0
    _completed: deque[bool] = field(default_factory=deque)

    def receive(self, kind: FrameKind | None, size_bytes: int, *, is_final: bool) -> Close | None:
        """One data frame arrived: None to go on, or how to close.

        Args:
            kind: TEXT or BINARY for a message's first frame, None for a continuation.
            size_bytes: this frame's payload.
            is_final: the FIN bit.
        """
        policy = self.policy
        if (
            kind is FrameKind.TEXT
            and is_final
            and size_bytes <= policy.frame_bytes
            and size_bytes <= policy.message_bytes
        ):
            # A whole text message in one frame within both limits: most frames,
            # judged without the general path.
            self._kind, self._size_bytes, self._frames = kind, size_bytes, 1
            self._completed.append(False)
            return None
        if kind is not None:
            self._kind, self._size_bytes, self._frames = kind, 0, 0
        self._size_bytes += size_bytes
        self._frames += 1
        verdict = self.policy.check(self._kind, size_bytes) or (
            self.policy.check(self._kind, self._size_bytes, is_fragmented=True)
            if self._frames > 1 or not is_final
            else None
        )
        if verdict is None and is_final:
            self._completed.append(self._frames > 1)
        return verdict

    def next_is_fragmented(self) -> bool:
        """Whether the oldest completed message not yet asked about came in several frames."""
        return self._completed.popleft() if self._completed else False


def split_into_frames(text: str, frame_bytes: int = FRAME_LIMIT_BYTES) -> list[str]:
    """`text` cut into pieces of at most `frame_bytes` UTF-8 bytes each, on
    character boundaries: the fragments of one message a client may send."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= frame_bytes:
        return [text]
    pieces: list[str] = []
    start = 0
    while start < len(data):
        end = min(start + frame_bytes, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # inside a character
            end -= 1
        pieces.append(data[start:end].decode("utf-8", "surrogatepass"))
        start = end
    return pieces
