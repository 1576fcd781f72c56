"""RTP for G.711 audio (RFC 3550, RFC 3551) and RFC 4733 DTMF, sans-IO.

Packets are ``aiortc.rtp.RtpPacket``. This module holds the arithmetic:
sequence numbers, timestamps, marker bits, the pacing schedule, receive
validation, and the telephone-event decoder. Sockets live in
:mod:`bridge.media.stream`.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass

from aiortc.rtp import RtpPacket

from ..audio.wire import FRAME_SAMPLES, PTIME

#: RFC 3550 appendix A.1 sequence validation limits.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
#: RFC 4733 section 3.2: event codes 0-15 are the DTMF digits.
DTMF_EVENTS = "0123456789*#ABCD"


class RtpSender:
    """Builds the outgoing RTP stream of one call (RFC 3550 section 5.1).

    Sequence number and timestamp start at random values (section 5.1). The
    timestamp is tied to the pacing slot, not to the packet count: slot ``n``
    (the packet due at ``start + n * 20 ms``) carries ``ts0 + 160 * n``, so the
    timestamp keeps advancing over silence that is not sent (RFC 3551
    section 4.1) and the sequence number does not.

    Args:
        payload_type: the negotiated payload type (0 PCMU, 8 PCMA).
        ssrc: SSRC to use; random when ``None``.
    """

    def __init__(self, payload_type: int, ssrc: int | None = None) -> None:
        self.payload_type = payload_type
        self.ssrc = ssrc if ssrc is not None else secrets.randbits(32)
        self.sequence = secrets.randbits(16)
        self.timestamp0 = secrets.randbits(32)
        self.packets_sent = 0
        self.octets_sent = 0

    def packet(self, slot: int, payload: bytes, *, talkspurt_start: bool) -> bytes:
        """Serialize one audio packet for pacing slot ``slot`` (0-based).

        Args:
            slot: the 20 ms slot index since the stream's start.
            payload: 160 G.711 bytes.
            talkspurt_start: set the marker bit (RFC 3551 section 4.1: first
                packet after a silence period).
        """
        packet = RtpPacket(
            payload_type=self.payload_type,
            marker=1 if talkspurt_start else 0,
            sequence_number=self.sequence,
            timestamp=(self.timestamp0 + FRAME_SAMPLES * slot) & 0xFFFFFFFF,
            ssrc=self.ssrc,
            payload=payload,
        )
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return packet.serialize()

    def dtmf_packet(
        self, start_slot: int, event: int, *, end: bool, duration: int, first: bool, payload_type: int
    ) -> bytes:
        """Serialize an RFC 4733 telephone-event packet, sent in place of an audio packet.

        Every packet of one event carries the timestamp of the event's first
        slot (``start_slot``) and the duration so far in timestamp units
        (RFC 4733 section 2.5.1.2); the first has the marker bit (2.5.1.3).
        """
        packet = RtpPacket(
            payload_type=payload_type,
            marker=1 if first else 0,
            sequence_number=self.sequence,
            timestamp=(self.timestamp0 + FRAME_SAMPLES * start_slot) & 0xFFFFFFFF,
            ssrc=self.ssrc,
            payload=telephone_event_payload(event, end, 10, duration),
        )
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.packets_sent += 1
        return packet.serialize()


class DtmfSchedule:
    """Which packets to send for queued digits, slot by slot (RFC 4733 section 2.5.1).

    Each digit lasts ``tone_slots`` packets of growing duration, then its final
    packet is sent 3 times with the E bit (2.5.1.4), then ``gap_slots`` of
    audio before the next digit.
    """

    def __init__(self, tone_slots: int = 5, gap_slots: int = 3) -> None:
        self.tone_slots = tone_slots
        self.gap_slots = gap_slots
        self._queue: list[int] = []
        self._current: int | None = None
        self._start = 0
        self._step = 0

    def add(self, digits: str) -> None:
        """Queue ``digits`` (``0-9*#A-D``).

        Raises:
            ValueError: a character that is not a DTMF digit.
        """
        for d in digits:
            if d not in DTMF_EVENTS:
                raise ValueError(f"not a DTMF digit: {d!r}")
            self._queue.append(DTMF_EVENTS.index(d))

    @property
    def active(self) -> bool:
        return self._current is not None or bool(self._queue)

    def next(self, slot: int) -> tuple[int, int, bool, int, bool] | None:
        """For send slot ``slot``: ``(start_slot, event, end, duration, first)`` or ``None`` (send audio)."""
        if self._current is None:
            if not self._queue:
                return None
            self._current, self._start, self._step = self._queue.pop(0), slot, 0
        step = self._step
        self._step += 1
        event, start = self._current, self._start
        if step < self.tone_slots:
            return (start, event, False, FRAME_SAMPLES * (step + 1), step == 0)
        if step < self.tone_slots + 3:
            return (start, event, True, FRAME_SAMPLES * self.tone_slots, False)
        if step == self.tone_slots + 3 + self.gap_slots - 1:
            self._current = None  # the gap's last slot: the next digit may start after it
        return None


class Pacer:
    """The send schedule: packet ``n`` is due at ``start + n * ptime`` (monotonic seconds).

    Deadlines come from the stream start, never from the previous send, so
    scheduling error does not accumulate (RFC 3550 section 5.1).

    Args:
        start: monotonic time of slot 0, seconds.
        ptime: packet duration, seconds (0.020).
        max_behind: when the loop stalls and more than this many slots are
            overdue, the overdue slots are skipped instead of sent in a burst.
    """

    def __init__(self, start: float, ptime: float = PTIME, max_behind: int = 5) -> None:
        self.start = start
        self.ptime = ptime
        self.max_behind = max_behind
        self.next_slot = 0

    def deadline(self, slot: int | None = None) -> float:
        """Monotonic time at which ``slot`` (default: the next one) is due."""
        return self.start + (self.next_slot if slot is None else slot) * self.ptime

    def due_slots(self, now: float) -> list[int]:
        """Slots due by ``now``, in order; advances the schedule past them.

        At most ``max_behind`` slots are returned; older overdue slots are skipped.
        """
        last_due = int((now - self.start) / self.ptime + 1e-9)
        if last_due < self.next_slot:
            return []
        first = max(self.next_slot, last_due - self.max_behind + 1)
        slots = list(range(first, last_due + 1))
        self.next_slot = last_due + 1
        return slots


@dataclass(frozen=True)
class DtmfEvent:
    """One RFC 4733 telephone-event (a DTMF digit) from the peer.

    Attributes:
        digit: ``0-9``, ``*``, ``#``, ``A-D``.
        timestamp: the event's RTP timestamp (identifies the event).
        ended: whether this packet had the E bit set.
        duration: duration so far, in timestamp units (1/8000 s).
    """

    digit: str
    timestamp: int
    ended: bool
    duration: int


def parse_telephone_event(payload: bytes) -> tuple[int, bool, int, int]:
    """Decode an RFC 4733 section 2.3 payload: ``(event, end, volume, duration)``.

    Raises:
        ValueError: payload shorter than 4 bytes.
    """
    if len(payload) < 4:
        raise ValueError("telephone-event payload shorter than 4 bytes")
    event, flags, duration = struct.unpack("!BBH", payload[:4])
    return event, bool(flags & 0x80), flags & 0x3F, duration


def telephone_event_payload(event: int, end: bool, volume: int, duration: int) -> bytes:
    """Encode an RFC 4733 payload (used by the test client to send digits)."""
    return struct.pack("!BBH", event, (0x80 if end else 0) | (volume & 0x3F), duration & 0xFFFF)


class RtpReceiver:
    """Validates and classifies incoming RTP for one call (RFC 3550 section A.1, RFC 4733).

    :meth:`receive` returns ``("audio", packet)``, ``("dtmf", DtmfEvent)`` for
    the first packet of each new telephone-event (later packets and the three
    end retransmissions of the same event are suppressed), or ``None`` for a
    packet to drop, counting why in :attr:`counters`.

    Args:
        audio_pt: the negotiated audio payload type.
        dtmf_pt: the negotiated telephone-event payload type, or ``None``.
    """

    def __init__(self, audio_pt: int, dtmf_pt: int | None) -> None:
        self.audio_pt = audio_pt
        self.dtmf_pt = dtmf_pt
        self.counters: dict[str, int] = {}
        self.ssrc: int | None = None
        self._max_seq: int | None = None
        self._bad_seq: int | None = None
        self._dtmf_seen: set[int] = set()
        #: Packets that parsed as RTP, dropped or not (liveness for the RTP timeout).
        self.valid_packets = 0
        #: Why the last packet was dropped, or ``None``.
        self.last_drop: str | None = None

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _drop(self, reason: str) -> None:
        """Count a dropped packet; :attr:`last_drop` tells the caller why."""
        self._count(reason)
        self.last_drop = reason

    def receive(self, data: bytes) -> tuple[str, object] | None:
        """Classify one datagram; see the class docstring."""
        self.last_drop = None
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            self._drop("malformed")
            return None
        self.valid_packets += 1
        if 72 <= packet.payload_type <= 76:
            self._drop("rtcp")  # RTCP on the RTP port (RFC 5761 ranges): ignore
            return None
        if self.ssrc is not None and packet.ssrc != self.ssrc:
            # A new SSRC (the peer restarted its stream): follow it.
            self._count("ssrc_change")
            self._max_seq = None
        self.ssrc = packet.ssrc
        seq = packet.sequence_number
        if self._max_seq is None:
            self._max_seq = seq
        else:
            # RFC 3550 appendix A.1: accept small gaps, drop duplicates and late
            # packets, and resynchronize after a big jump confirmed by the next packet.
            delta = (seq - self._max_seq) & 0xFFFF
            if 0 < delta < MAX_DROPOUT:
                self._max_seq = seq
            elif delta == 0 or delta >= 0x10000 - MAX_MISORDER:
                if packet.payload_type != self.dtmf_pt:
                    self._drop("duplicate_or_late")
                    return None
                self._count("duplicate_or_late")
            elif seq == self._bad_seq:
                self._count("resync")
                self._max_seq = seq
            else:
                self._bad_seq = (seq + 1) & 0xFFFF
                self._drop("sequence_jump")
                return None
        if packet.payload_type == self.audio_pt:
            self._count("audio")
            return ("audio", packet)
        if self.dtmf_pt is not None and packet.payload_type == self.dtmf_pt:
            try:
                event, end, _volume, duration = parse_telephone_event(packet.payload)
            except ValueError:
                self._drop("malformed")
                return None
            if event >= len(DTMF_EVENTS):
                self._drop("unknown_event")
                return None
            if packet.timestamp in self._dtmf_seen:
                return None
            self._dtmf_seen.add(packet.timestamp)
            if len(self._dtmf_seen) > 64:
                self._dtmf_seen = {packet.timestamp}
            self._count("dtmf")
            return ("dtmf", DtmfEvent(DTMF_EVENTS[event], packet.timestamp, end, duration))
        self._drop("unknown_payload_type")
        return None
