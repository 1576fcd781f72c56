"""Answering an INVITE on a running server, as the bytes on the wire show it: provisional
responses (RFC 3261 section 13.3.1.1) are sent only when they tell the caller something."""

from __future__ import annotations

import asyncio
import re
import socket

import pytest

from .test_reoffer import ack, echo_server, invite, udp_socket

pytestmark = pytest.mark.e2e

OFFER = (
    "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n"
)


async def responses_until_final(sock: socket.socket) -> list[str]:
    loop = asyncio.get_running_loop()
    out = []
    while True:
        data = (await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)).decode()
        out.append(data)
        if re.match(r"SIP/2.0 [2-6]\d\d", data):
            return out


@pytest.mark.parametrize("answer_delay, statuses", [(0.0, ["100", "200"]), (0.3, ["100", "180", "200"])])
async def test_a_180_only_when_the_answer_waits(answer_delay, statuses):
    """``answer_delay: 0``: 100 then 200 and no 180, which would tell the caller nothing
    and which a multi-worker proxy may forward after the 200; with a ringing delay, the
    180 comes first."""
    server, sip_port = await echo_server(sip={"answer_delay": answer_delay}, rtp_pairs=2)
    sip = udp_socket()
    port = sip.getsockname()[1]
    try:
        sip.sendto(invite(port, sip_port, 40000, 1, OFFER.format(port=40000)), ("127.0.0.1", sip_port))
        got = await responses_until_final(sip)
        assert [r.split()[1] for r in got] == statuses, got
        to_tag = re.search(r"^To: .*;tag=([^;\r\n]+)", got[-1], re.M).group(1)
        sip.sendto(ack(port, sip_port, 1, to_tag), ("127.0.0.1", sip_port))
    finally:
        sip.close()
        await server.stop()
