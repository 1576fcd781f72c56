"""STUN and DTLS on an RTP port (RFC 7983): counted by kind, never as malformed RTP; the
peer's Binding request is answered with its address; and a peer whose c= address this
socket cannot reach (Linphone's guess, fd00::2, on an IPv4 call) still gets its audio
once its own RTP arrives (symmetric RTP)."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
from aioice import stun
from aiortc.rtp import RtpPacket

from bridge.media.demux import classify
from bridge.media.sdp import MediaParams
from bridge.media.stream import RtpStream


class Tone:
    def pull_frame(self, now):
        return (np.sin(np.arange(160) / 3) * 3000).astype(np.int16)


async def _stream(remote: tuple[str, int]) -> RtpStream:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    stream = RtpStream(
        sock, MediaParams("PCMU", 0, 101, remote), Tone(), lambda f, t: None, lambda e: None, lambda: None, latch=True
    )
    await stream.start()
    return stream


def test_first_byte_ranges():
    assert [classify(bytes([b])) for b in (0, 3, 20, 63, 128, 191, 200, 4)] == [
        "stun",
        "stun",
        "dtls",
        "dtls",
        "rtp",
        "rtp",
        "other",
        "other",
    ]


async def test_stun_from_the_peer_is_answered_and_never_counted_as_malformed_rtp():
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(2)
    stream = await _stream(peer.getsockname())
    try:
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        peer.sendto(bytes(request), ("127.0.0.1", stream.local_port))
        while True:  # RTP packets of the tone come too; the STUN answer is among them
            data = await asyncio.get_running_loop().run_in_executor(None, peer.recv, 2048)
            if classify(data) == "stun":
                break
        answer = stun.parse_message(data)
        assert answer.transaction_id == request.transaction_id and answer.message_class == stun.Class.RESPONSE
        assert answer.attributes["XOR-MAPPED-ADDRESS"] == peer.getsockname()
        peer.sendto(b"\x16\xfe\xfd" + b"\x00" * 20, ("127.0.0.1", stream.local_port))  # a DTLS record
        await asyncio.sleep(0.05)
        counters = stream.receiver.counters
        assert (
            counters.get("stun") == 1
            and counters.get("stun_answered") == 1
            and counters.get("dtls") == 1
            and "malformed" not in counters
        )
    finally:
        await stream.close()
        peer.close()


def test_an_unreachable_sdp_address_is_latched_past():
    """On uvloop, as bridge serve runs: its sendto raises for the other family."""
    import uvloop

    uvloop.run(_unreachable())


async def _unreachable():
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(2)
    stream = await _stream(("fd00::2", 7078))  # an IPv6 guess on an IPv4 socket: nothing can be sent there
    try:
        await asyncio.sleep(0.1)
        assert (
            stream.receiver.counters.get("unsendable", 0) > 0 and stream._pacer is not None
        )  # counted, and the sender goes on
        rtp = RtpPacket(payload_type=0, sequence_number=1, timestamp=160, ssrc=7, payload=b"\xff" * 160)
        peer.sendto(rtp.serialize(), ("127.0.0.1", stream.local_port))
        data = await asyncio.get_running_loop().run_in_executor(None, peer.recv, 2048)
        assert RtpPacket.parse(data).payload_type == 0  # the tone, sent where the peer's RTP came from
    finally:
        await stream.close()
        peer.close()
