"""A scripted SIP UAS over UDP, TCP or TLS on 127.0.0.1: the far end of ``bridge dial``
(a termination trunk), written from the RFC 3261 message shapes, for what sipp cannot do
here (sipp has no TLS in Debian's build, and no SRTP keys of its own).

It answers the first INVITE either with a final error (``reject=486``) or with ``200 OK``
and an SDP answer (plain RTP or SDES-SRTP with its own key), takes the ACK, exchanges
RTP for ``hold`` seconds (decrypting the caller's SRTP with the key from the INVITE), then
sends BYE. What it saw is kept for the test to assert on. With ``late_180`` it also sends
180 Ringing right behind its 200 and again after the ACK, as a proxy whose workers forward
responses out of order does (RFC 3261 17.1.1.2: a provisional response after the final one
changes nothing for the caller).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import ssl

import numpy as np
from aiortc.rtp import RtpPacket

from bridge.media.codecs import G711
from bridge.media.srtp import SrtpContext, new_crypto, parse_crypto


class ScriptedUas:
    def __init__(
        self,
        transport: str = "udp",
        reject: int | None = None,
        srtp: bool = False,
        hold: float = 2.0,
        cert: str | None = None,
        key: str | None = None,
        late_180: bool = False,
    ) -> None:
        self.transport = transport
        self.late_180 = late_180
        self.reject = reject
        self.srtp = srtp
        self.hold = hold
        self.cert, self.key = cert, key
        self.port = 0
        self.invite = ""
        self.ack_seen = asyncio.Event()
        self.bye_answered = asyncio.Event()
        self.rtp_in = 0  # packets from the caller that decoded (SRTP: authenticated with the INVITE's key)
        self.rtp_bad = 0
        self.done = asyncio.Event()
        self._writer = None
        self._udp = None
        self._peer = None
        self._server = None
        self._tag = secrets.token_hex(4)
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        if self.transport == "udp":
            self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=("127.0.0.1", 0))
            self.port = self._udp.get_extra_info("sockname")[1]
        else:
            context = None
            if self.transport == "tls":
                context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                context.load_cert_chain(self.cert, self.key)
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=context)
            self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        buffer = b""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                buffer += data
                while b"\r\n\r\n" in buffer:
                    head, rest = buffer.split(b"\r\n\r\n", 1)
                    length = int(m.group(1)) if (m := re.search(rb"(?im)^(?:content-length|l):\s*(\d+)", head)) else 0
                    if len(rest) < length:
                        break
                    buffer = rest[length:]
                    self.on_message((head + b"\r\n\r\n" + rest[:length]).decode())
        except (ConnectionError, ssl.SSLError):
            return

    def send(self, text: str) -> None:
        data = text.encode()
        if self.transport == "udp":
            self._udp.sendto(data, self._peer)
        else:
            self._writer.write(data)

    def on_message(self, text: str, addr=None) -> None:
        if addr is not None:
            self._peer = addr
        first = text.split("\r\n", 1)[0]
        if first.startswith("INVITE") and not self.invite:
            self.invite = text
            self._tasks.append(asyncio.ensure_future(self._answer(text)))
        elif first.startswith("ACK"):
            if self.late_180 and not self.ack_seen.is_set():
                self.send(self._response(self.invite, 180, "Ringing"))
            self.ack_seen.set()
        elif first.startswith("SIP/2.0 200") and "CSeq: 1 BYE" in text:
            self.bye_answered.set()
        elif first.startswith("BYE"):
            self.send(self._response(text, 200, "OK"))
            self.bye_answered.set()

    def _response(self, request: str, code: int, reason: str, body: str = "", to_tag: bool = True) -> str:
        headers = {}
        vias = []
        for line in request.split("\r\n")[1:]:
            if not line:
                break
            name, _, value = line.partition(":")
            if name.strip().lower() in ("via", "v"):
                vias.append(value.strip())
            headers.setdefault(name.strip().lower(), value.strip())
        to = headers.get("to", headers.get("t", ""))
        if to_tag and "tag=" not in to:
            to += f";tag={self._tag}"
        lines = (
            [f"SIP/2.0 {code} {reason}"]
            + [f"Via: {v}" for v in vias]
            + [
                f"From: {headers.get('from', headers.get('f'))}",
                f"To: {to}",
                f"Call-ID: {headers.get('call-id', headers.get('i'))}",
                f"CSeq: {headers.get('cseq')}",
                f"Contact: <sip:uas@127.0.0.1:{self.port};transport={self.transport}>",
            ]
        )
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    async def _answer(self, invite: str) -> None:
        if self.reject is not None:
            self.send(self._response(invite, self.reject, "Busy Here" if self.reject == 486 else "Refused"))
            self.done.set()
            return
        loop = asyncio.get_running_loop()
        rtp = await loop.create_datagram_endpoint(lambda: _Rtp(self), local_addr=("127.0.0.1", 0))
        rtp_transport = rtp[0]
        rtp_port = rtp_transport.get_extra_info("sockname")[1]
        body = invite.split("\r\n\r\n", 1)[1]
        their_port = int(re.search(r"m=audio (\d+)", body).group(1))
        self.ctx = None
        profile = "RTP/AVP"
        crypto_line = ""
        if self.srtp:
            theirs = parse_crypto(re.search(r"a=crypto:(.*)", body).group(1).strip())
            ours = new_crypto(theirs.tag, theirs.suite)
            self.ctx = SrtpContext(ours, theirs)
            profile = "RTP/SAVP"
            crypto_line = f"a=crypto:{ours.attribute()}\r\n"
        sdp = (
            f"v=0\r\no=uas 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {rtp_port} {profile} 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n{crypto_line}a=ptime:20\r\n"
        )
        self.send(self._response(invite, 100, "Trying", to_tag=False))
        self.send(self._response(invite, 200, "OK", sdp))
        if self.late_180:
            self.send(self._response(invite, 180, "Ringing"))
        await asyncio.wait_for(self.ack_seen.wait(), 10)
        codec = G711("PCMU")
        tone = codec.encode((4000 * np.sin(2 * np.pi * 300 * np.arange(160) / 8000)).astype(np.int16))
        ssrc, seq = secrets.randbits(32), secrets.randbits(15)
        for i in range(int(self.hold / 0.02)):
            packet = RtpPacket(
                payload_type=0, sequence_number=(seq + i) & 0xFFFF, timestamp=160 * i, ssrc=ssrc, payload=tone
            ).serialize()
            rtp_transport.sendto(self.ctx.protect(packet) if self.ctx else packet, ("127.0.0.1", their_port))
            await asyncio.sleep(0.02)
        self.send(self._bye(invite))
        try:
            await asyncio.wait_for(self.bye_answered.wait(), 5)
        finally:
            rtp_transport.close()
            self.done.set()

    def _bye(self, invite: str) -> str:
        """A BYE for the dialog ``invite`` set up (we are its UAS: From and To swap)."""
        contact = re.search(r"(?im)^(?:contact|m):\s*<?(sip:[^>;\r\n]+)", invite).group(1)
        from_ = re.search(r"(?im)^(?:from|f):\s*(.*)$", invite).group(1).strip()
        to = re.search(r"(?im)^(?:to|t):\s*(.*)$", invite).group(1).strip()
        call_id = re.search(r"(?im)^(?:call-id|i):\s*(.*)$", invite).group(1).strip()
        proto = {"udp": "UDP", "tcp": "TCP", "tls": "TLS"}[self.transport]
        return (
            f"BYE {contact} SIP/2.0\r\nVia: SIP/2.0/{proto} 127.0.0.1:{self.port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            f"From: {to};tag={self._tag}\r\nTo: {from_}\r\nCall-ID: {call_id}\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            self._server.close()
        if self._writer is not None:
            self._writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, uas: ScriptedUas) -> None:
        self.uas = uas

    def datagram_received(self, data: bytes, addr) -> None:
        self.uas.on_message(data.decode("utf-8", "replace"), addr)


class _Rtp(asyncio.DatagramProtocol):
    def __init__(self, uas: ScriptedUas) -> None:
        self.uas = uas

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            RtpPacket.parse(self.uas.ctx.unprotect(data) if self.uas.ctx else data)
            self.uas.rtp_in += 1
        except Exception:  # noqa: BLE001 - counted: wrong key, or not RTP
            self.uas.rtp_bad += 1
