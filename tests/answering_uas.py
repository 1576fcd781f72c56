"""A scripted trunk over UDP on 127.0.0.1 that answers many outbound calls, each as its
called number's script says: a person's "Hello?", a voicemail greeting and beep, a busy
signal (486), a trunk over its CPS limit (503), or ringing until the caller cancels.

For every call it keeps what a test asserts on: when the INVITE came (CPS is measured
here, on the trunk's side), how it was answered, the callee audio's timeline, every RTP
packet the bridge sent (arrival time and decoded PCM), who hung up. RTP goes both ways
in real time; the callee's audio is PCMU with 20 ms packets, as a trunk sends it.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from aiortc.rtp import RtpPacket

from bridge.media.codecs import G711

from .sip_uas import ScriptedUas


@dataclass
class Answer:
    """How the trunk answers one call.

    ``reject``: a final status instead of an answer (486, 503...); ``ring``: never answer
    (the caller's CANCEL ends it); else 200 OK and ``pcm`` (PCM16 8 kHz, the callee's
    side) played from the ACK, then silence; the trunk hangs up ``hold_s`` after the
    audio unless the bridge hung up first.
    """

    reject: int | None = None
    ring: bool = False
    pcm: np.ndarray | None = None
    hold_s: float = 3.0


@dataclass
class CallLog:
    number: str
    invited: float
    answer: Answer
    answered: float | None = None  # monotonic time of the ACK (the callee's audio starts)
    received: list[tuple[float, np.ndarray]] = field(default_factory=list)
    bye_from_bridge: bool = False
    cancelled: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    ended_at: float = float("inf")  # monotonic time the call ended (inf: not yet)

    def finish(self) -> None:
        if not self.ended.is_set():
            self.ended_at = time.monotonic()
            self.ended.set()

    def agent_audio_times(self, rms: float = 300.0) -> list[float]:
        """Seconds after the ACK of every packet from the bridge that carried sound."""
        return [t - self.answered for t, pcm in self.received if np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) >= rms]

    def agent_pcm(self) -> np.ndarray:
        return np.concatenate([pcm for _, pcm in self.received]) if self.received else np.zeros(0, np.int16)


class AnsweringUas(ScriptedUas):
    """See the module docstring. ``script(number) -> Answer`` decides each call."""

    def __init__(self, script: Callable[[str], Answer]) -> None:
        super().__init__("udp")
        self.script = script
        self.calls: dict[str, CallLog] = {}
        self._invites: dict[str, str] = {}

    def invites_for(self, number: str) -> list[CallLog]:
        return [c for c in self.calls.values() if c.number == number]

    def on_message(self, text: str, addr=None) -> None:
        if addr is not None:
            self._peer = addr
        first = text.split("\r\n", 1)[0]
        found = re.search(r"(?im)^(?:call-id|i):\s*(.*)$", text)
        call_id = found.group(1).strip() if found else ""
        call = self.calls.get(call_id)
        if first.startswith("INVITE"):
            if call is not None:
                return  # a retransmission: the answer is on its way
            number = re.match(r"INVITE sip:([^@;>]+)@", first).group(1)
            call = self.calls[call_id] = CallLog(number, time.monotonic(), self.script(number))
            self._invites[call_id] = text
            self._tasks.append(asyncio.ensure_future(self._serve(call_id, text, call)))
        elif (
            first.startswith("ACK")
            and call is not None
            and call.answered is None
            and call.answer.reject is None
            and not call.cancelled
        ):
            call.answered = time.monotonic()
        elif first.startswith("CANCEL") and call is not None:
            call.cancelled = True
            self.send(self._response(text, 200, "OK"))
            self.send(self._response(self._invites[call_id], 487, "Request Terminated"))
            call.finish()
        elif first.startswith("BYE") and call is not None:
            self.send(self._response(text, 200, "OK"))
            call.bye_from_bridge = True
            call.finish()
        elif (
            first.startswith("SIP/2.0 200")
            and "BYE" in text.split("CSeq:", 1)[-1].split("\r\n", 1)[0]
            and call is not None
        ):
            call.finish()

    async def _serve(self, call_id: str, invite: str, call: CallLog) -> None:
        answer = call.answer
        self.send(self._response(invite, 100, "Trying", to_tag=False))
        if answer.reject is not None:
            self.send(
                self._response(
                    invite,
                    answer.reject,
                    {486: "Busy Here", 503: "Trunk CPS limit exceeded"}.get(answer.reject, "Refused"),
                )
            )
            call.finish()
            return
        self.send(self._response(invite, 180, "Ringing"))
        if answer.ring:
            return  # until the CANCEL
        loop = asyncio.get_running_loop()
        rtp, _ = await loop.create_datagram_endpoint(lambda: _Media(call), local_addr=("127.0.0.1", 0))
        port = rtp.get_extra_info("sockname")[1]
        their_port = int(re.search(r"m=audio (\d+)", invite.split("\r\n\r\n", 1)[1]).group(1))
        sdp = (
            f"v=0\r\no=uas 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n"
        )
        self.send(self._response(invite, 200, "OK", sdp))
        try:
            for _ in range(500):
                if call.answered is not None:
                    break
                await asyncio.sleep(0.01)
            pcm = answer.pcm if answer.pcm is not None else np.zeros(0, np.int16)
            frames = int(np.ceil(len(pcm) / 160)) + int(answer.hold_s / 0.02)
            pcm = np.pad(pcm, (0, frames * 160 - len(pcm)))
            codec = G711("PCMU")
            ssrc, seq = secrets.randbits(32), secrets.randbits(15)
            start = time.monotonic()
            for i in range(frames):
                if call.ended.is_set():
                    break
                payload = codec.encode(pcm[i * 160 : (i + 1) * 160])
                rtp.sendto(
                    RtpPacket(
                        payload_type=0,
                        sequence_number=(seq + i) & 0xFFFF,
                        timestamp=160 * i,
                        ssrc=ssrc,
                        payload=payload,
                    ).serialize(),
                    ("127.0.0.1", their_port),
                )
                await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - time.monotonic()))
            if not call.ended.is_set():
                self.send(self._bye(invite))
                try:
                    await asyncio.wait_for(call.ended.wait(), 5)
                except TimeoutError:
                    call.finish()  # the bridge is gone (killed): the call is over all the same
        finally:
            rtp.close()


class _Media(asyncio.DatagramProtocol):
    def __init__(self, call: CallLog) -> None:
        self.call = call
        self.codec = G711("PCMU")

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            return
        if packet.payload_type == 0:
            self.call.received.append((time.monotonic(), self.codec.decode(packet.payload)))
