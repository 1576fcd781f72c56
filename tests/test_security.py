"""Digest (RFC 2617/3261/8760), admission policy, SDES-SRTP (RFC 4568/3711), stream framing."""

from __future__ import annotations

import pylibsrtp
import pytest
from aiortc.rtp import RtpPacket

from bridge.config import AccessSettings, DigestSettings
from bridge.media import sdp
from bridge.media.srtp import SrtpContext, new_crypto, parse_crypto
from bridge.sip.digest import DigestAuthenticator, authorization_for, digest_response
from bridge.sip.framing import PING, FramingError, StreamFramer
from bridge.sip.policy import AdmissionPolicy

from .conftest import ROOT, VECTORS


def test_digest_rfc2617_vector():
    # RFC 2617 section 3.5.
    assert (
        digest_response(
            "MD5",
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "auth",
            "00000001",
            "0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_digest_challenge_answer_verify(algorithm):
    auth = DigestAuthenticator({"alice": "pw"}, "bridge", [algorithm], nonce_ttl=300)
    (challenge,) = auth.challenges(1000.0)
    assert f"algorithm={algorithm}" in challenge and 'qop="auth"' in challenge
    header = authorization_for(challenge, "alice", "pw", "INVITE", "sip:agent@192.0.2.1")
    assert "qop=auth," in header  # a bare token in credentials (RFC 3261 25.1)
    assert auth.verify(header, "INVITE", 1001.0) == "alice"
    assert auth.verify(header, "BYE", 1001.0) is None  # the method is covered
    assert auth.verify(header, "INVITE", 1400.0) is None  # nonce expired
    assert auth.verify(authorization_for(challenge, "alice", "wrong", "INVITE", "sip:x@y"), "INVITE", 1001.0) is None
    assert auth.verify(header.replace("alice", "mallory"), "INVITE", 1001.0) is None
    other = DigestAuthenticator({"alice": "pw"}, "bridge", [algorithm])
    assert other.verify(header, "INVITE", 1001.0) is None  # a nonce another process did not issue
    for junk in (None, "", "Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Digest", 'Digest username="alice"', "\x00\xff"):
        assert auth.verify(junk, "INVITE", 1001.0) is None


def test_digest_is_bound_to_the_request_uri():
    """RFC 7616 3.4.6: credentials computed for another Request-URI do not authenticate this one."""
    auth = DigestAuthenticator({"alice": "pw"}, "bridge", ["SHA-256"])
    (challenge,) = auth.challenges(1000.0)
    header = authorization_for(challenge, "alice", "pw", "INVITE", "sip:+14155550100@bridge.example.com")
    verdict = auth.check(header, "INVITE", "sip:+19005550199@bridge.example.com", 1001.0)
    assert (verdict.user, verdict.reason) == (None, "uri_mismatch")
    assert auth.check(header, "INVITE", "sip:+14155550100@bridge.example.com", 1001.0).user == "alice"


def test_digest_nonce_count_stops_replay():
    """A captured Authorization header replayed (same nonce, same nc) is refused; a higher nc is fine."""
    auth = DigestAuthenticator({"alice": "pw"}, "bridge", ["MD5"])
    (challenge,) = auth.challenges(1000.0)
    uri = "sip:agent@192.0.2.1"
    header = authorization_for(challenge, "alice", "pw", "INVITE", uri)
    assert auth.check(header, "INVITE", uri, 1001.0).user == "alice"
    replay = auth.check(header, "INVITE", uri, 1002.0)
    assert (replay.user, replay.reason, replay.stale) == (None, "replay", False)
    # The same UA using the nonce again, as RFC 7616 allows, counts up.
    nonce = challenge.split('nonce="')[1].split('"')[0]
    response = digest_response("MD5", "alice", "bridge", "pw", "INVITE", uri, nonce, "auth", "00000002", "c0ffee")
    second = f'Digest username="alice", realm="bridge", nonce="{nonce}", uri="{uri}", algorithm=MD5, qop=auth, nc=00000002, cnonce="c0ffee", response="{response}"'
    assert auth.check(second, "INVITE", uri, 1003.0).user == "alice"
    assert auth.check(second, "INVITE", uri, 1004.0).reason == "replay"


def test_digest_expired_nonce_is_challenged_again_with_stale_true():
    access = AccessSettings(digest=DigestSettings(users={"pbx": "secret"}, algorithms=["MD5"]))
    p = AdmissionPolicy(access, base=ROOT)
    p.digest.nonce_ttl = 30
    source, uri = ("192.0.2.50", 5060), "sip:agent@bridge"
    first = p.check(source, {}, None, 100.0, uri)
    assert first.status == 401 and "stale" not in first.headers[0][1]
    header = authorization_for(first.headers[0][1], "pbx", "secret", "INVITE", uri)
    again = p.check(source, {}, header, 200.0, uri)  # the nonce is 100 s old
    assert again.status == 401 and again.reason == "unauthenticated_bad_nonce"
    assert "stale=true" in again.headers[0][1]
    wrong = authorization_for(first.headers[0][1], "pbx", "guess", "INVITE", uri)
    assert (
        "stale" not in p.check(source, {}, wrong, 200.0, uri).headers[0][1]
    )  # only right credentials learn it is stale
    fresh = authorization_for(again.headers[0][1], "pbx", "secret", "INVITE", uri)
    assert p.check(source, {}, fresh, 201.0, uri) is None


def policy(**kw) -> AdmissionPolicy:
    digest = kw.pop("digest", None)
    access = AccessSettings(**kw, digest=digest or DigestSettings())
    return AdmissionPolicy(access, base=ROOT)


def test_policy_allowlist_with_twilio_preset():
    p = policy(allowlist=["@config/twilio-signaling.yaml", "10.0.0.0/8"])
    assert p.check(("54.172.60.2", 5060), {}, None, 0) is None
    assert p.check(("10.1.2.3", 5060), {}, None, 0) is None
    refused = p.check(("198.51.100.7", 5060), {}, None, 0)
    assert (refused.status, refused.reason) == (403, "not_allowed")
    assert p.check(("54.172.60.2", 5060), {}, None, 0, shared="draining").status == 503
    assert p.check(("198.51.100.7", 5060), {}, None, 0, shared="draining").status == 403  # a stranger learns nothing


def test_policy_rate_limit_per_source():
    p = policy(invite_rate=2.0, invite_burst=3, retry_after=9)
    results = [p.check(("192.0.2.1", 5060), {}, None, 10.0) for _ in range(4)]
    assert [r is None for r in results] == [True, True, True, False]
    assert results[3].status == 503 and results[3].headers == [("Retry-After", "9")]
    assert p.check(("192.0.2.2", 5060), {}, None, 10.0) is None  # another source has its own bucket
    assert p.check(("192.0.2.1", 5060), {}, None, 10.5) is None  # one token back after 0.5 s


def test_policy_account_digest_and_caps():
    p = policy(
        twilio_accounts=["AC1"],
        max_calls=2,
        max_calls_per_caller=1,
        digest=DigestSettings(users={"pbx": "secret"}, exempt=["@config/twilio-signaling.yaml"]),
    )
    twilio = ("54.172.60.1", 5060)
    assert p.check(twilio, {"X-Twilio-AccountSid": "AC2"}, None, 0).status == 403
    assert p.check(twilio, {"X-Twilio-AccountSid": "AC1"}, None, 0) is None  # exempt from digest
    pbx = ("192.0.2.50", 5060)
    challenge = p.check(pbx, {"X-Twilio-AccountSid": "AC1"}, None, 0)
    assert challenge.status == 401 and [h for h, _ in challenge.headers] == ["WWW-Authenticate", "WWW-Authenticate"]
    sha = challenge.headers[0][1]
    assert "SHA-256" in sha  # RFC 8760: the stronger algorithm first
    header = authorization_for(sha, "pbx", "secret", "INVITE", "sip:agent@bridge")
    assert p.check(pbx, {"X-Twilio-AccountSid": "AC1"}, header, 1, "sip:agent@bridge") is None
    assert p.check(twilio, {"X-Twilio-AccountSid": "AC1"}, None, 2, shared="at_capacity").reason == "at_capacity"
    assert (
        p.check(twilio, {"X-Twilio-AccountSid": "AC2"}, None, 2, shared="at_capacity").reason == "wrong_account"
    )  # the account first
    assert p.check(twilio, {"X-Twilio-AccountSid": "AC1"}, None, 2, shared="caller_at_capacity").status == 503


TWILIO_SAVP = (
    b"v=0\r\no=root 1 1 IN IP4 54.172.60.12\r\ns=Twilio Media Gateway\r\nc=IN IP4 168.86.128.20\r\nt=0 0\r\n"
    b"m=audio 17322 RTP/SAVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\na=ptime:20\r\n"
)


def test_sdes_offer_negotiated_and_answered():
    params = sdp.negotiate(TWILIO_SAVP, "required")
    assert params.secure and params.remote_crypto.suite == "AES_CM_128_HMAC_SHA1_80" and params.remote_crypto.tag == 1
    local = sdp.answer_crypto(params)
    answer = sdp.build_answer(params, "203.0.113.7", 10000, session_id=5, local_crypto=local)
    assert b"m=audio 10000 RTP/SAVP 0 101\r\n" in answer
    assert f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{local.attribute().split('inline:')[1]}\r\n".encode() in answer
    assert local.key != params.remote_crypto.key
    # Secure trunking: a plain offer is refused with 488; with SRTP off a SAVP offer is.
    plain = TWILIO_SAVP.replace(b"RTP/SAVP", b"RTP/AVP")
    with pytest.raises(sdp.SdpError) as info:
        sdp.negotiate(plain, "required")
    assert info.value.status == 488
    with pytest.raises(sdp.SdpError):
        sdp.negotiate(TWILIO_SAVP, "off")
    with pytest.raises(sdp.SdpError) as info:
        sdp.negotiate(TWILIO_SAVP.replace(b"inline:WVNf", b"inline:!!!!"), "optional")
    assert info.value.status == 400


def test_parse_crypto_variants():
    assert (
        parse_crypto("1 AES_CM_128_HMAC_SHA1_32 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20").suite
        == "AES_CM_128_HMAC_SHA1_32"
    )
    assert parse_crypto("1 AES_256_CM_HMAC_SHA1_80 inline:xx") is None  # suite we do not offer
    assert (
        parse_crypto("1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4") is None
    )  # MKI
    with pytest.raises(ValueError):
        parse_crypto("1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=")  # 5 bytes, not 30


def test_srtp_roundtrip_and_tamper():
    a, b = new_crypto(1), new_crypto(1)
    alice, bob = SrtpContext(a, b), SrtpContext(b, a)
    rtp = RtpPacket(payload_type=0, sequence_number=7, timestamp=160, ssrc=0x1234, payload=b"\xff" * 160).serialize()
    srtp = alice.protect(rtp)
    assert len(srtp) == len(rtp) + 10 and srtp[12:172] != rtp[12:]  # encrypted, 80-bit tag
    assert bob.unprotect(srtp) == rtp
    tampered = bytearray(
        alice.protect(
            RtpPacket(payload_type=0, sequence_number=8, timestamp=320, ssrc=0x1234, payload=b"\x00" * 160).serialize()
        )
    )
    tampered[20] ^= 1
    with pytest.raises(pylibsrtp.Error):
        bob.unprotect(bytes(tampered))
    with pytest.raises(pylibsrtp.Error):
        bob.unprotect(srtp)  # replay


def test_framer_splits_a_stream():
    invite = (VECTORS / "invite_twilio.bin").read_bytes()
    options = (VECTORS / "options.bin").read_bytes()
    stream = b"\r\n\r\n" + invite + options + b"\r\n" + options
    framer = StreamFramer()
    out = []
    for i in range(0, len(stream), 37):  # arbitrary chunking
        out += framer.feed(stream[i : i + 37])
    assert out == [PING, invite, options, options]


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKa\r\n\r\n", "no_content_length"),
        (b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 99999999\r\n\r\n", "too_large"),
        (b"\x16\x03\x01\x02\x00garbage no crlf " * 5000, "too_large"),
        (b"OPTIONS sip:x SIP/2.0\r\nno colon here\r\n\r\n", "bad_header"),
    ],
)
def test_framer_errors(data, reason):
    with pytest.raises(FramingError) as info:
        StreamFramer(max_size=65536).feed(data)
    assert info.value.reason == reason
