"""SDP offer/answer (RFC 3264) for G.711 + telephone-event."""

from __future__ import annotations

import pytest

from bridge.media import sdp
from bridge.sip.message import parse_datagram

from .conftest import VECTORS


def offer(m_line: str, *attrs: str, c: str = "c=IN IP4 192.0.2.5") -> bytes:
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.5", "s=-", c, "t=0 0", m_line, *attrs]
    return ("\r\n".join(lines) + "\r\n").encode()


def test_twilio_offer_picks_pcmu_and_dtmf():
    body = parse_datagram((VECTORS / "invite_twilio.bin").read_bytes(), 16384).message.body
    params = sdp.negotiate(body)
    assert params == sdp.MediaParams(
        "PCMU", 0, 101, ("168.86.128.20", 17322), 20, "sendrecv", offered=(("audio", "RTP/AVP", "0 8 101"),)
    )


def test_caller_preference_wins():
    params = sdp.negotiate(offer("m=audio 4000 RTP/AVP 8 0", "a=rtpmap:8 PCMA/8000", "a=rtpmap:0 PCMU/8000"))
    assert (params.codec, params.payload_type) == ("PCMA", 8)
    assert params.dtmf_payload_type is None


def test_static_payload_types_without_rtpmap_and_dynamic_dtmf_pt():
    params = sdp.negotiate(
        offer("m=audio 4000 RTP/AVP 18 0 96", "a=rtpmap:18 G729/8000", "a=rtpmap:96 telephone-event/8000")
    )
    assert (params.codec, params.payload_type, params.dtmf_payload_type) == ("PCMU", 0, 96)


def test_media_level_connection_and_direction():
    params = sdp.negotiate(offer("m=audio 4000 RTP/AVP 0", "c=IN IP4 198.51.100.1", "a=sendonly", c=""))
    assert params.remote_addr == ("198.51.100.1", 4000)
    assert params.direction == "recvonly"


@pytest.mark.parametrize(
    "body,status",
    [
        (offer("m=audio 4000 RTP/AVP 18", "a=rtpmap:18 G729/8000"), 488),
        (offer("m=audio 4000 RTP/AVP 9", "a=rtpmap:9 G722/8000"), 488),
        (offer("m=video 4000 RTP/AVP 96", "a=rtpmap:96 VP8/90000"), 488),
        (offer("m=audio 0 RTP/AVP 0"), 488),  # rejected stream
        (offer("m=audio 4000 RTP/SAVP 0"), 488),  # SRTP: not in this build
        (offer("m=audio 4000 RTP/AVP 0", c=""), 400),  # no c= anywhere
        (b"\xff\xfe not sdp", 400),
        (offer("m=audio 4000 RTP/AVP 300"), 400),
        (b"", 488),
    ],
)
def test_unusable_offers(body, status):
    with pytest.raises(sdp.SdpError) as info:
        sdp.negotiate(body)
    assert info.value.status == status


def test_answer_bytes():
    params = sdp.MediaParams("PCMA", 8, 101, ("192.0.2.5", 4000))
    assert sdp.build_answer(params, "203.0.113.7", 10002, session_id=42) == (
        b"v=0\r\n"
        b"o=bridge 42 42 IN IP4 203.0.113.7\r\n"
        b"s=bridge\r\n"
        b"c=IN IP4 203.0.113.7\r\n"
        b"t=0 0\r\n"
        b"m=audio 10002 RTP/AVP 8 101\r\n"
        b"a=sendrecv\r\n"
        b"a=rtpmap:8 PCMA/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-16\r\n"
        b"a=ptime:20\r\n"
    )


def test_offer_roundtrips_through_negotiate():
    body = sdp.build_offer("192.0.2.9", 30000, session_id=7)
    params = sdp.negotiate(body)
    assert params == sdp.MediaParams("PCMU", 0, 101, ("192.0.2.9", 30000), offered=(("audio", "RTP/AVP", "0 8 101"),))


def test_answer_needs_ip_literal():
    with pytest.raises(ValueError):
        sdp.build_answer(sdp.MediaParams("PCMU", 0, None, ("192.0.2.5", 4000)), "bridge.example.com", 10000)


def m_lines(sdp_bytes: bytes) -> list[str]:
    return [line for line in sdp_bytes.decode().split("\r\n") if line.startswith("m=")]


def test_answer_has_as_many_m_lines_as_the_offer_refused_ones_with_port_0():
    """RFC 3264 section 6: one m= line per offered stream, in order; refused streams get port 0.
    A T.38 image line (which aiortc cannot parse), video and a second audio stream do not break the call."""
    body = offer(
        "m=video 5000 RTP/AVP 96",
        "a=rtpmap:96 H264/90000",
        "m=audio 6000 RTP/AVP 8 101",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "m=audio 7000 RTP/AVP 0",
        "m=image 8000 udptl t38",
    )
    params = sdp.negotiate(body)
    assert (params.codec, params.remote_addr, params.index) == ("PCMA", ("192.0.2.5", 6000), 1)
    answer = sdp.build_answer(params, "203.0.113.7", 10000, session_id=1)
    assert m_lines(answer) == [
        "m=video 0 RTP/AVP 96",
        "m=audio 10000 RTP/AVP 8 101",
        "m=audio 0 RTP/AVP 0",
        "m=image 0 udptl t38",
    ]
    assert answer.decode().count("a=ptime:20") == 1
    # The answer parses back to the same one stream.
    again = sdp.negotiate(answer)
    assert (again.codec, again.remote_addr) == ("PCMA", ("203.0.113.7", 10000))


def test_answer_codec_is_always_one_of_the_offer():
    """A re-offer that changes PCMU to PCMA is answered with PCMA (never a codec not in the offer)."""
    first = sdp.negotiate(offer("m=audio 4000 RTP/AVP 0 101", "a=rtpmap:101 telephone-event/8000"))
    second = sdp.negotiate(offer("m=audio 4000 RTP/AVP 8 101", "a=rtpmap:101 telephone-event/8000"))
    assert (first.codec, second.codec) == ("PCMU", "PCMA")
    answer = sdp.build_answer(second, "203.0.113.7", 10000, session_id=1)
    assert m_lines(answer) == ["m=audio 10000 RTP/AVP 8 101"] and b"PCMU" not in answer
