"""Real endpoints' offers (tests/vectors/sdp/, sources.yaml names each one's source):
each is answered with PCMU/PCMA and the offer's telephone-event, every other stream
refused with port 0, or refused with 488 and the right Warning; and a fuzz pass built
from their shapes, in which only 400 or 488 ever comes out."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from aiortc.sdp import SessionDescription
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.media import sdp
from bridge.sip.message import parse_datagram

CORPUS = Path(__file__).parent / "vectors" / "sdp"
SOURCES = yaml.safe_load((CORPUS / "sources.yaml").read_text())


def offer_of(name: str) -> bytes:
    data = (CORPUS / name).read_bytes()
    if name.endswith(".invite"):
        return parse_datagram(data, 65536).message.body
    return data


def test_every_vector_is_listed_with_its_source():
    files = {p.name for p in CORPUS.iterdir() if p.suffix in (".sdp", ".invite")}
    assert files == set(SOURCES)
    assert all(entry["source"] for entry in SOURCES.values())
    assert len(files) >= 15


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_each_real_offer_is_answered_or_refused_as_it_should_be(name):
    offer, expect = offer_of(name), SOURCES[name]["expect"]
    if "status" in expect:
        with pytest.raises(sdp.SdpError) as info:
            sdp.negotiate(offer)
        assert (info.value.status, info.value.warning) == (expect["status"], expect["warning"]), str(info.value)
        assert info.value.warning_header()[1].startswith(f"{expect['warning']} bridge ")
        return
    params = sdp.negotiate(offer)
    assert params.codec == expect["codec"] and params.dtmf_payload_type == expect["dtmf"]
    assert params.secure == expect.get("srtp", False)
    local_crypto = sdp.answer_crypto(params)
    answer = sdp.build_answer(params, "203.0.113.7", 20000, session_id=1, local_crypto=local_crypto).decode()
    offered = [line.split() for line in offer.decode().splitlines() if line.startswith("m=")]
    answered = [line.split() for line in answer.splitlines() if line.startswith("m=")]
    assert len(answered) == len(offered)  # one m= line per offered stream, in order (RFC 3264 section 6)
    assert [m[0] for m in answered] == [m[0] for m in offered]
    refused = [m for i, m in enumerate(answered) if i != params.index]
    assert all(m[1] == "0" for m in refused) and len(refused) == expect.get("refused", len(offered) - 1)
    ours = SessionDescription.parse(answer.split("m=")[0] + "m=" + answer.split("m=")[params.index + 1]).media[
        0
    ]  # our audio section, as aiortc reads it
    assert ours.kind == "audio" and ours.port == 20000
    assert ours.fmt == [params.payload_type] + (
        [params.dtmf_payload_type] if params.dtmf_payload_type is not None else []
    )
    assert ("a=crypto:" in answer) == params.secure


def test_broken_bodies_get_400_with_the_reason():
    good = offer_of("cisco-7965.sdp")
    cases = {
        b"Hello, this is not SDP\r\n": "v=",
        good.replace(b"m=audio 20096 RTP/AVP", b"m=audio RTP/AVP"): "media line",
        good.replace(b"a=rtpmap:0 PCMU/8000", b"a=rtpmap:zero PCMU/8000"): "unparseable",
        good.replace(b"c=IN IP4 10.10.10.10", b"c=IN IPX 10.10.10.10"): "unparseable",
    }
    for body, reason in cases.items():
        with pytest.raises(sdp.SdpError) as info:
            sdp.negotiate(body)
        assert info.value.status == 400 and info.value.warning is None and reason in str(info.value), (
            body,
            str(info.value),
        )


_LINES = sorted({line for name in SOURCES for line in offer_of(name).decode().splitlines() if line})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(sorted(SOURCES)),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["drop", "dup", "insert", "swap", "mangle"]),
            st.integers(0, 60),
            st.sampled_from(_LINES),
            st.binary(max_size=8),
        ),
        max_size=6,
    ),
)
def test_fuzz_only_400_or_488_ever_comes_out(base, edits):
    """Offers built from the corpus's shapes: lines dropped, repeated, moved, borrowed
    from another endpoint, or with bytes spliced in. Whatever happens, the answer is an
    answer, 400 or 488; never another exception."""
    lines = offer_of(base).split(b"\r\n")
    for op, at, line, junk in edits:
        i = at % max(1, len(lines))
        if op == "drop" and lines:
            del lines[i]
        elif op == "dup" and lines:
            lines.insert(i, lines[i])
        elif op == "insert":
            lines.insert(i, line.encode())
        elif op == "swap" and len(lines) > 1:
            j = (i + 1) % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "mangle" and lines:
            k = len(junk) % (len(lines[i]) + 1)
            lines[i] = lines[i][:k] + junk + lines[i][k:]
    body = b"\r\n".join(lines)
    try:
        params = sdp.negotiate(body)
    except sdp.SdpError as exc:
        assert exc.status in (400, 488)
        return
    sdp.build_answer(params, "203.0.113.7", 20000, session_id=1, local_crypto=sdp.answer_crypto(params))
