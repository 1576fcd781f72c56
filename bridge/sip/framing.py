"""Splitting a SIP byte stream (TCP, TLS) into messages, sans-IO.

RFC 3261 section 18.3: on stream transports every message carries
Content-Length, and the body is exactly that many bytes after the blank line.
RFC 5626 section 3.5.1: a double CRLF between messages is a keepalive "ping"
that the receiver answers with a single CRLF "pong".
"""

from __future__ import annotations

from sipmessage import Message


class FramingError(Exception):
    """The stream cannot be framed any more (the connection must be closed).

    ``reason`` is a short label for counters: ``too_large``, ``no_content_length``,
    ``bad_header``.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


PING = object()
"""Returned by :meth:`StreamFramer.feed` for each CRLFCRLF keepalive."""


class StreamFramer:
    """Accumulates stream bytes and yields whole SIP messages.

    Args:
        max_size: the largest message (headers + body) accepted, bytes; a
            longer one raises :class:`FramingError` (``too_large``).
    """

    def __init__(self, max_size: int = 65536) -> None:
        self.max_size = max_size
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes | object]:
        """Add ``data``; return the complete items: message ``bytes`` or :data:`PING`.

        Raises:
            FramingError: the stream is not SIP or breaks the limits.
        """
        self._buffer += data
        out: list[bytes | object] = []
        while True:
            # Keepalives and stray CRLFs between messages.
            while self._buffer.startswith(b"\r\n"):
                if self._buffer.startswith(b"\r\n\r\n"):
                    del self._buffer[:4]
                    out.append(PING)
                elif len(self._buffer) >= 3 and self._buffer[2:3] != b"\r":
                    del self._buffer[:2]  # a lone CRLF before a message
                else:
                    break
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self.max_size:
                    raise FramingError("too_large")
                return out
            head = bytes(self._buffer[: end + 4])
            try:
                length = Message.parse(head).content_length
            except (ValueError, UnicodeDecodeError, IndexError) as exc:
                raise FramingError("bad_header") from exc
            if length is None:
                raise FramingError("no_content_length")
            total = end + 4 + length
            if length < 0 or total > self.max_size:
                raise FramingError("too_large")
            if len(self._buffer) < total:
                return out
            out.append(bytes(self._buffer[:total]))
            del self._buffer[:total]
