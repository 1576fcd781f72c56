"""Twilio Media Streams (bidirectional ``<Connect><Stream>``) message codec, sans-IO.

Message shapes from Twilio's "Media Streams - WebSocket Messages" doc. :class:`StreamSession` consumes the text frames Twilio
sends and returns small typed events; it builds the ``media``, ``mark`` and
``clear`` messages we send. It owns no socket.

A protocol violation raises :class:`StreamProtocolError` with the WebSocket
close code to use (RFC 6455 section 7.4.1): 1003 for data we cannot accept
(wrong media format), 1008 for a policy violation (unknown event, out of
order, bad fields), 1009 for a message that is too big.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field

CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009


class StreamProtocolError(Exception):
    """The peer broke the protocol; close the WebSocket with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Connected:
    """``connected``: the first message (protocol ``Call``, version)."""

    protocol: str
    version: str


@dataclass(frozen=True)
class Start:
    """``start``: stream metadata.

    Attributes:
        stream_sid: ``MZ...``; call_sid: ``CA...``; account_sid: ``AC...``.
        tracks: e.g. ``["inbound"]``.
        custom_parameters: the TwiML ``<Parameter>`` values.
    """

    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: list[str]
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Media:
    """``media``: mu-law 8 kHz audio. ``payload`` is raw mu-law bytes (decoded from base64);
    ``timestamp`` in milliseconds since the stream started; ``chunk`` counts from 1."""

    payload: bytes
    timestamp: int
    chunk: int
    track: str


@dataclass(frozen=True)
class Dtmf:
    """``dtmf``: one digit from the caller."""

    digit: str


@dataclass(frozen=True)
class MarkEcho:
    """``mark``: the audio sent before our mark ``name`` finished playing (or was cleared)."""

    name: str


@dataclass(frozen=True)
class Stop:
    """``stop``: the stream ended (the call hung up, or the TwiML moved on)."""

    call_sid: str


Event = Connected | Start | Media | Dtmf | MarkEcho | Stop

_DIGITS = set("0123456789*#ABCD")


class StreamSession:
    """One Media Streams WebSocket session, sans-IO.

    Args:
        max_message_bytes: larger text frames are refused (1009).
        max_payload_bytes: larger decoded media payloads are refused (1009).
    """

    def __init__(self, max_message_bytes: int = 65536, max_payload_bytes: int = 16000) -> None:
        self.max_message_bytes = max_message_bytes
        self.max_payload_bytes = max_payload_bytes
        self.state = "new"  # new -> connected -> started -> stopped
        self.stream_sid: str | None = None
        self.call_sid: str | None = None

    def receive(self, text: str | bytes) -> Event:
        """Parse one frame from Twilio into an event.

        Raises:
            StreamProtocolError: malformed JSON, unknown event, wrong order,
                wrong media format, too large.
        """
        if isinstance(text, bytes):
            raise StreamProtocolError(CLOSE_UNSUPPORTED, "binary frames are not part of the protocol")
        if len(text) > self.max_message_bytes:
            raise StreamProtocolError(CLOSE_TOO_BIG, f"message of {len(text)} bytes")
        try:
            message = json.loads(text)
        except ValueError as exc:
            raise StreamProtocolError(CLOSE_POLICY, "not JSON") from exc
        if not isinstance(message, dict) or not isinstance(message.get("event"), str):
            raise StreamProtocolError(CLOSE_POLICY, "no event field")
        event = message["event"]
        handler = getattr(self, f"_on_{event}", None)
        if handler is None:
            raise StreamProtocolError(CLOSE_POLICY, f"unknown event {event[:40]!r}")
        if self.state == "stopped":
            raise StreamProtocolError(CLOSE_POLICY, f"{event} after stop")
        try:
            return handler(message)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StreamProtocolError(CLOSE_POLICY, f"bad {event} message: {exc!r}"[:120]) from exc

    def _need_started(self, event: str, message: dict) -> None:
        if self.state != "started":
            raise StreamProtocolError(CLOSE_POLICY, f"{event} before start")
        if message.get("streamSid") not in (None, self.stream_sid):
            raise StreamProtocolError(CLOSE_POLICY, f"{event} for another streamSid")

    def _on_connected(self, message: dict) -> Connected:
        if self.state != "new":
            raise StreamProtocolError(CLOSE_POLICY, "connected twice")
        self.state = "connected"
        return Connected(str(message.get("protocol", "")), str(message.get("version", "")))

    def _on_start(self, message: dict) -> Start:
        if self.state not in ("new", "connected"):
            raise StreamProtocolError(CLOSE_POLICY, "start twice")
        start = message["start"]
        fmt = start.get("mediaFormat") or {}
        if (
            fmt.get("encoding") != "audio/x-mulaw"
            or int(fmt.get("sampleRate", 0)) != 8000
            or int(fmt.get("channels", 1)) != 1
        ):
            raise StreamProtocolError(CLOSE_UNSUPPORTED, f"media format {fmt!r}: only audio/x-mulaw 8000 Hz mono")
        stream_sid = str(message.get("streamSid") or start["streamSid"])
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            raise ValueError("customParameters is not an object")
        self.state = "started"
        self.stream_sid = stream_sid
        self.call_sid = str(start["callSid"])
        return Start(
            stream_sid,
            self.call_sid,
            str(start.get("accountSid", "")),
            list(start.get("tracks") or []),
            {str(k): str(v) for k, v in params.items()},
        )

    def _on_media(self, message: dict) -> Media:
        self._need_started("media", message)
        media = message["media"]
        encoded = media["payload"]
        if len(encoded) > self.max_payload_bytes * 4 // 3 + 4:
            raise StreamProtocolError(CLOSE_TOO_BIG, "media payload too large")
        try:
            payload = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise StreamProtocolError(CLOSE_POLICY, "media payload is not base64") from exc
        return Media(
            payload, int(media.get("timestamp", 0)), int(media.get("chunk", 0)), str(media.get("track", "inbound"))
        )

    def _on_dtmf(self, message: dict) -> Dtmf:
        self._need_started("dtmf", message)
        digit = str(message["dtmf"]["digit"])
        if digit not in _DIGITS:
            raise ValueError(f"digit {digit!r}")
        return Dtmf(digit)

    def _on_mark(self, message: dict) -> MarkEcho:
        self._need_started("mark", message)
        return MarkEcho(str(message["mark"]["name"]))

    def _on_stop(self, message: dict) -> Stop:
        self._need_started("stop", message)
        self.state = "stopped"
        return Stop(str((message.get("stop") or {}).get("callSid", self.call_sid)))

    # outgoing ---------------------------------------------------------------

    def media(self, mulaw: bytes) -> str:
        """A ``media`` message carrying raw mu-law 8 kHz bytes (no header)."""
        return json.dumps(
            {"event": "media", "streamSid": self.stream_sid, "media": {"payload": base64.b64encode(mulaw).decode()}}
        )

    def mark(self, name: str) -> str:
        """A ``mark`` message: Twilio echoes it when the audio before it has played."""
        return json.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    def clear(self) -> str:
        """A ``clear`` message: Twilio drops its queued audio and returns pending marks."""
        return json.dumps({"event": "clear", "streamSid": self.stream_sid})
