"""The asyncio side of RTP: one UDP socket per call, paced sending, receiving.

Thin by design: the arithmetic is in :mod:`bridge.media.rtp`, the codec in
:mod:`bridge.media.codecs`. This module reads the socket, feeds the
receiver, and on each 20 ms deadline asks the frame source for audio. The
deadlines of every stream on the loop share one timer
(:class:`bridge.media.clock.SendClock`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Protocol

import numpy as np
import pylibsrtp

from ..audio.wire import FRAME_SAMPLES, PTIME, Framer
from . import demux
from .clock import SendClock
from .codecs import G711
from .rtp import DtmfEvent, DtmfSchedule, Pacer, RtpReceiver, RtpSender
from .sdp import MediaParams
from .srtp import SrtpContext

log = logging.getLogger("bridge.rtp")


class FrameSource(Protocol):
    """Gives the audio to send, one 20 ms frame at a time."""

    def pull_frame(self, now: float) -> np.ndarray | None:
        """PCM16 mono 8000 Hz, 160 samples, or ``None`` for silence (nothing to say).

        Called once per 20 ms slot at the slot's deadline (``now``, monotonic s),
        so the frame returned is the one that goes on the wire now.
        """


class PortAllocator:
    """Hands out even UDP ports from ``[low, high]`` for RTP (RFC 3550 section 11).

    Raises:
        ValueError: an empty or inverted range.
    """

    def __init__(self, low: int, high: int) -> None:
        if low > high:
            raise ValueError(f"bad RTP port range {low}-{high}")
        first = low + (low % 2)
        self._free = list(range(first, high + 1, 2))
        self._used: set[int] = set()

    @property
    def in_use(self) -> int:
        """Ports currently allocated."""
        return len(self._used)

    def bind(self, host: str) -> socket.socket:
        """Bind a non-blocking UDP socket on the first free port that binds.

        Raises:
            OSError: no port in the range could be bound.
        """
        for _ in range(len(self._free)):
            port = self._free.pop(0)
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                self._free.append(port)
                continue
            sock.setblocking(False)
            self._used.add(port)
            return sock
        raise OSError("no free RTP port in range")

    def release(self, port: int) -> None:
        """Return ``port`` to the pool."""
        if port in self._used:
            self._used.discard(port)
            self._free.append(port)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, stream: RtpStream) -> None:
        self.stream = stream

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.stream.receive_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("rtp socket error: %r", exc)


def _ignore(*_args: object) -> None:
    """A closed stream's callbacks."""


class RtpStream:
    """One call's RTP session: symmetric (sends from the port it receives on, RFC 4961).

    Args:
        sock: a bound UDP socket (from :class:`PortAllocator`).
        params: the negotiated media (:class:`bridge.media.sdp.MediaParams`).
        source: where outgoing frames come from.
        on_audio: called with each received frame (PCM16 8 kHz int16 array) and
            the monotonic arrival time.
        on_dtmf: called with each new RFC 4733 digit.
        on_timeout: called once when the stream is dead: no RTP arrived for
            ``rtp_timeout`` seconds.
        on_source_error: called once when ``source`` raised (logged); the stream
            sends nothing more. Default: ``on_timeout``.
        rtp_timeout: seconds without inbound RTP before ``on_timeout``.
        latch: send to the source address of the first valid packet received
            (NAT), and drop packets from any other address afterwards.
        send_silence: send silence packets when the source has nothing (a
            continuous stream); when ``False``, suppress them (RFC 3551 4.1).
        srtp: protect/unprotect every packet (RFC 3711) when given.

    Attribute ``on_hold``: while ``True`` nothing is sent and the RTP timeout
    does not run (the peer put the call on hold).
    """

    def __init__(
        self,
        sock: socket.socket,
        params: MediaParams,
        source: FrameSource,
        on_audio: Callable[[np.ndarray, float], None],
        on_dtmf: Callable[[DtmfEvent], None],
        on_timeout: Callable[[], None],
        *,
        on_source_error: Callable[[], None] | None = None,
        rtp_timeout: float = 30.0,
        latch: bool = True,
        send_silence: bool = True,
        srtp: SrtpContext | None = None,
    ) -> None:
        self.sock = sock
        self.local_port = sock.getsockname()[1]
        self.params = params
        self.codec = G711(params.codec)
        self.sender = RtpSender(params.payload_type)
        self.receiver = RtpReceiver(params.payload_type, params.dtmf_payload_type)
        self.source: FrameSource | None = source
        self.on_audio = on_audio
        self._framer = Framer()  # a peer's 10/30/60 ms packets -> 20 ms frames
        self.on_dtmf = on_dtmf
        self.on_timeout = on_timeout
        self.on_source_error = on_source_error or on_timeout
        self.rtp_timeout = rtp_timeout
        self.latch = latch
        self.send_silence = send_silence
        self.remote = params.remote_addr
        self._latched = False
        self._transport: asyncio.DatagramTransport | None = None
        self._pacer: Pacer | None = None
        self._clock: SendClock | None = None
        self._timed_out = False
        self._last_rx = 0.0
        self._was_talking = False
        self._silence = self.codec.encode(np.zeros(FRAME_SAMPLES, dtype=np.int16))
        self.dropped_foreign = 0
        #: RTP packets handed to the socket (audio, silence and RFC 4733 events), and of
        #: those the ones that carried the source's audio (not silence).
        self.sent_packets = 0
        self.sent_audio = 0
        self.srtp = srtp
        self.on_hold = False
        self.closed = False
        self.dtmf = DtmfSchedule()
        self._logged_drops: set[str] = set()

    def send_dtmf(self, digits: str) -> None:
        """Send ``digits`` as RFC 4733 telephone-events in the next slots.

        Raises:
            ValueError: the peer did not negotiate telephone-event, or a bad digit.
        """
        if self.params.dtmf_payload_type is None:
            raise ValueError("the peer did not offer telephone-event/8000")
        self.dtmf.add(digits)

    async def start(self) -> None:
        """Start receiving and the paced sender."""
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=self.sock)
        self._last_rx = loop.time()
        self._pacer = Pacer(loop.time(), PTIME)
        self._clock = SendClock.for_loop(loop)
        self._clock.add(self, self._pacer.deadline())

    def update_remote(self, params: MediaParams, srtp: SrtpContext | None = None) -> None:
        """Follow a new offer/answer (re-INVITE/UPDATE, RFC 3264 section 8): remote
        address, hold state, codec and payload types, and the SRTP context
        (``srtp``: the context for the new keys, the same object when they did not
        change, ``None`` for plain RTP). SSRC, sequence number and timestamp go on.
        """
        if (params.codec, params.payload_type) != (self.params.codec, self.params.payload_type):
            self.codec = G711(params.codec)
            self._silence = self.codec.encode(np.zeros(FRAME_SAMPLES, dtype=np.int16))
            self.sender.payload_type = params.payload_type
        self.receiver.audio_pt = params.payload_type
        self.receiver.dtmf_pt = params.dtmf_payload_type
        self.srtp = srtp
        self.on_hold = params.hold
        if params.hold:
            self._was_talking = False
        if params.remote_addr[0] not in ("0.0.0.0", "::") and params.remote_addr != self.params.remote_addr:
            self.remote = params.remote_addr
            self._latched = False
        self.params = params

    def receive_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        """One datagram on the RTP port from ``addr`` (see the module docstring: demux,
        SRTP, latching, payload type, decode)."""
        if self.closed:
            return
        addr = (addr[0], addr[1])
        kind = demux.classify(data)
        if kind in ("stun", "dtls"):
            self._not_media(kind, data, addr)
            return
        if self._latched and addr != self.remote:
            self.dropped_foreign += 1
            self._log_drop("foreign_source", addr)
            return
        if self.srtp is not None:
            if 192 <= (data[1] if len(data) > 1 else 0) <= 223:
                return  # SRTCP (RFC 5761 packet types 200-207 with the marker bit): not used
            try:
                data = self.srtp.unprotect(data)
            except pylibsrtp.Error:
                self.receiver.counters["srtp_unprotect_failed"] = (
                    self.receiver.counters.get("srtp_unprotect_failed", 0) + 1
                )
                self._log_drop("srtp_unprotect_failed", addr)
                return
        valid_before = self.receiver.valid_packets
        result = self.receiver.receive(data)
        if self.receiver.last_drop is not None:
            self._log_drop(self.receiver.last_drop, addr)
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.receiver.valid_packets != valid_before:
            self._last_rx = now  # any RTP keeps the call alive, even a dropped duplicate
        if result is None:
            return
        if self.latch and not self._latched:
            self._latched = True
            if addr != self.remote:
                log.info("rtp: latched to %s:%s (SDP said %s:%s)", addr[0], addr[1], *self.remote)
                self.remote = addr
        kind, value = result
        if kind == "audio":
            for frame in self._framer.frames(self.codec.decode(value.payload)):  # type: ignore[attr-defined]
                self.on_audio(frame, now)
        else:
            self.on_dtmf(value)  # type: ignore[arg-type]

    def tick(self, now: float) -> float | None:
        """Send the packets due by ``now`` and return the next deadline (loop
        monotonic seconds), or ``None`` once the stream is closed or dead.

        Called by the loop's :class:`bridge.media.clock.SendClock`, one timer
        for every stream, at or just after each 20 ms deadline.
        Never raises: a broken frame source ends this call (``on_source_error``),
        not the clock or the other calls.
        """
        pacer = self._pacer
        if self.closed or pacer is None:
            return None
        try:
            if self.on_hold:
                pacer.due_slots(now)  # keep the schedule (timestamps) running, send nothing
                self._last_rx = now
                return pacer.deadline()
            for slot in pacer.due_slots(now):
                event = self.dtmf.next(slot) if self.dtmf.active else None
                dtmf_pt = self.params.dtmf_payload_type
                if event is not None and dtmf_pt is not None:
                    start, code, end, duration, first = event
                    data = self.sender.dtmf_packet(
                        start, code, end=end, duration=duration, first=first, payload_type=dtmf_pt
                    )
                    self._send(data)
                    continue
                frame = self.source.pull_frame(now) if self.source is not None else None
                talking = frame is not None
                if frame is None:
                    if not self.send_silence:
                        self._was_talking = False
                        continue
                    payload = self._silence
                else:
                    payload = self.codec.encode(frame)
                    self.sent_audio += 1
                data = self.sender.packet(slot, payload, talkspurt_start=talking and not self._was_talking)
                self._was_talking = talking
                self._send(data)
            if not self._timed_out and now - self._last_rx > self.rtp_timeout:
                self._timed_out = True
                log.info("rtp: no packet for %.0f s on port %s", self.rtp_timeout, self.local_port)
                self.on_timeout()
        except Exception:  # noqa: BLE001 - a broken source ends this call, not the process
            log.exception("rtp: sender on port %s failed", self.local_port)
            self._pacer = None
            self.on_source_error()
            return None
        return None if self.closed else pacer.deadline()

    def _not_media(self, kind: str, data: bytes, addr: tuple[str, int]) -> None:
        """STUN or DTLS on the RTP port (RFC 7983): counted by kind, never as malformed
        RTP; a Binding request from the peer gets its answer (:mod:`bridge.media.demux`)."""
        self.receiver.counters[kind] = self.receiver.counters.get(kind, 0) + 1
        self._log_drop(kind, addr)
        if kind == "stun" and addr in (self.remote, self.params.remote_addr) and self._transport is not None:
            reply = demux.binding_response(data, addr)
            if reply is not None:
                self._transport.sendto(reply, addr)
                self.receiver.counters["stun_answered"] = self.receiver.counters.get("stun_answered", 0) + 1

    def _log_drop(self, reason: str, addr: tuple[str, int]) -> None:
        """Log the first drop of each reason on this stream (the rest are only counted)."""
        if reason not in self._logged_drops:
            self._logged_drops.add(reason)
            log.info(
                "rtp: port %s dropping packets from %s:%s: %s (logged once per reason; counted in bridge_rtp_dropped_total)",
                self.local_port,
                addr[0],
                addr[1],
                reason,
            )

    def _send(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            if self.srtp is not None:
                data = self.srtp.protect(data)
            try:
                self._transport.sendto(data, self.remote)
                self.sent_packets += 1
            except (ValueError, OSError) as exc:
                # An address this socket cannot send to: another family (a softphone's
                # guessed c= of fd00::2 on an IPv4 call), or no route. Nothing is sent
                # until the peer's own packets show where it is (latching, RFC 3550
                # section 8.2's symmetric use of the port); the call goes on.
                self.receiver.counters["unsendable"] = self.receiver.counters.get("unsendable", 0) + 1
                if "unsendable" not in self._logged_drops:
                    self._logged_drops.add("unsendable")
                    log.info(
                        "rtp: port %s cannot send to %s:%s (%s); sending once the peer's own RTP shows where it is",
                        self.local_port,
                        *self.remote[:2],
                        exc,
                    )

    async def close(self) -> None:
        """Stop sending and close the socket (idempotent)."""
        if self.closed:
            return
        self.closed = True
        if self._clock is not None:
            self._clock.remove(self)
            self._clock = None
        self._pacer = None
        if self._transport is not None:
            self._transport.close()
        else:
            self.sock.close()
        # Break the stream <-> leg and stream <-> transport cycles, so that a finished
        # call is freed by reference counting at once, not at the next cyclic GC pass
        # (a ~3 MB-per-call saw-tooth in test_leaks otherwise).
        self._transport = None
        self.source = None
        self.on_audio = self.on_dtmf = self.on_timeout = self.on_source_error = _ignore
