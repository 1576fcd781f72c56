"""Mid-call offer/answer (RFC 3264 section 8, RFC 4568 section 7.1.4) through a running
server: a re-INVITE with new SDES keys and another codec, then SRTP with the new keys.

The caller is a raw UDP socket speaking SIP from text (what the bytes are matters
here), with libsrtp (pylibsrtp) for the media; the server is the real one with the
echo agent, so what comes back proves both directions.
"""

from __future__ import annotations

import asyncio
import re
import socket

import numpy as np
import pytest
from aiortc.rtp import RtpPacket

from bridge.config import load_settings
from bridge.media.codecs import G711
from bridge.media.srtp import SrtpContext, new_crypto, parse_crypto
from bridge.server import BridgeServer

from .conftest import ROOT, free_port, rtp_range

pytestmark = pytest.mark.e2e


def invite(port: int, sip_port: int, rtp_port: int, cseq: int, body: str, to_tag: str = "") -> bytes:
    to = f"<sip:agent@127.0.0.1:{sip_port}>" + (f";tag={to_tag}" if to_tag else "")
    head = (
        f"INVITE sip:agent@127.0.0.1:{sip_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-reoffer-{cseq};rport\r\n"
        f"From: <sip:caller@127.0.0.1:{port}>;tag=caller1\r\nTo: {to}\r\n"
        f"Call-ID: reoffer-test\r\nCSeq: {cseq} INVITE\r\nContact: <sip:caller@127.0.0.1:{port}>\r\n"
        f"Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return (head + body).encode()


def ack(port: int, sip_port: int, cseq: int, to_tag: str) -> bytes:
    return (
        f"ACK sip:bridge@127.0.0.1:{sip_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-ack-{cseq};rport\r\n"
        f"From: <sip:caller@127.0.0.1:{port}>;tag=caller1\r\nTo: <sip:agent@127.0.0.1:{sip_port}>;tag={to_tag}\r\n"
        f"Call-ID: reoffer-test\r\nCSeq: {cseq} ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def savp_offer(rtp_port: int, key, pt: int, version: int) -> str:
    name = {0: "PCMU", 8: "PCMA"}[pt]
    return (
        f"v=0\r\no=caller 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/SAVP {pt} 101\r\na=rtpmap:{pt} {name}/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        f"a=crypto:{key.attribute()}\r\na=ptime:20\r\n"
    )


async def echo_server(
    sip: dict | None = None, media: dict | None = None, rtp_pairs: int = 4
) -> tuple[BridgeServer, int]:
    """A started in-process server with the echo agent on 127.0.0.1, and its SIP port."""
    sip_port = free_port()
    settings = load_settings(
        overrides={
            "sip": {"listen": f"127.0.0.1:{sip_port}", **(sip or {})},
            "media": {"rtp_ports": rtp_range(rtp_pairs), **(media or {})},
            "models": {"cache_dir": str(ROOT / "models")},
            "agent": {"kind": "echo"},
        }
    )
    server = BridgeServer(settings, None)
    await server.start()
    return server, sip_port


def udp_socket() -> socket.socket:
    """A non-blocking UDP socket on 127.0.0.1, on a port of the kernel's choosing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def final_response(sock: socket.socket, cseq: int) -> str:
    loop = asyncio.get_running_loop()
    while True:
        data = (await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)).decode()
        if f"CSeq: {cseq} INVITE" in data and re.match(r"SIP/2.0 [2-6]\d\d", data):
            return data


async def exchange(
    sip: socket.socket, rtp: socket.socket, ctx: SrtpContext, pt: int, dest: tuple[str, int], seq0: int, count: int = 40
) -> list[RtpPacket]:
    """Send ``count`` SRTP packets (a tone) and return the RTP packets the server sent back, unprotected."""
    codec = G711({0: "PCMU", 8: "PCMA"}[pt])
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(160) / 8000)).astype(np.int16)
    received: list[RtpPacket] = []
    for i in range(count):
        packet = RtpPacket(
            payload_type=pt,
            sequence_number=(seq0 + i) & 0xFFFF,
            timestamp=160 * (seq0 + i),
            ssrc=0x1234,
            payload=codec.encode(tone),
        )
        rtp.sendto(ctx.protect(packet.serialize()), dest)
        await asyncio.sleep(0.02)
        while True:
            try:
                data = rtp.recv(2048)
            except BlockingIOError:
                break
            try:
                received.append(RtpPacket.parse(ctx.unprotect(data)))
            except Exception:  # noqa: BLE001 - packets under the old keys while switching
                continue
    return received


async def test_reinvite_with_new_keys_and_codec_rekeys_srtp_and_switches_codec():
    server, sip_port = await echo_server(media={"srtp": "required"})
    sip, rtp = udp_socket(), udp_socket()
    port, rtp_port = sip.getsockname()[1], rtp.getsockname()[1]
    try:
        key_a = new_crypto(1)
        sip.sendto(invite(port, sip_port, rtp_port, 1, savp_offer(rtp_port, key_a, 0, 1)), ("127.0.0.1", sip_port))
        ok = await final_response(sip, 1)
        assert ok.startswith("SIP/2.0 200")
        to_tag = re.search(r"^To: .*;tag=([^;\r\n]+)", ok, re.M).group(1)
        their_key = parse_crypto(re.search(r"a=crypto:(.*)\r\n", ok).group(1))
        server_rtp = ("127.0.0.1", int(re.search(r"m=audio (\d+) RTP/SAVP 0 101", ok).group(1)))
        sip.sendto(ack(port, sip_port, 1, to_tag), ("127.0.0.1", sip_port))
        first = await exchange(sip, rtp, SrtpContext(key_a, their_key), 0, server_rtp, 1000)
        assert first and {p.payload_type for p in first} == {0}
        leg = server.calls["reoffer-test"]
        before = dict(leg.stream.receiver.counters)

        # re-INVITE: new master key (tag 1 kept) and PCMA instead of PCMU.
        key_b = new_crypto(1)
        sip.sendto(
            invite(port, sip_port, rtp_port, 2, savp_offer(rtp_port, key_b, 8, 2), to_tag), ("127.0.0.1", sip_port)
        )
        ok2 = await final_response(sip, 2)
        assert ok2.startswith("SIP/2.0 200"), ok2
        assert re.search(r"^m=audio \d+ RTP/SAVP 8 101\r$", ok2, re.M), ok2  # the offer's codec, never PCMU
        their_key_2 = parse_crypto(re.search(r"a=crypto:(.*)\r\n", ok2).group(1))
        sip.sendto(ack(port, sip_port, 2, to_tag), ("127.0.0.1", sip_port))
        second = await exchange(sip, rtp, SrtpContext(key_b, their_key_2), 8, server_rtp, 1040)
        after = leg.stream.receiver.counters
        assert after.get("audio", 0) - before.get("audio", 0) >= 30, after  # the new keys authenticate
        assert [p for p in second if p.payload_type == 8], "the echo comes back as PCMA under the new keys"
        assert leg.stream.codec.name == "PCMA"
    finally:
        sip.close()
        rtp.close()
        await server.stop()
