"""Mid-dialog SIP on the sans-IO core: re-INVITE/UPDATE, session timers, REFER/NOTIFY,
UAC digest, reliable transports. Fake clock, no sockets."""

from __future__ import annotations

import pytest
from sipmessage import Request

from bridge.sip import events as ev
from bridge.sip.core import SipCore, SipUsageError, Timers
from bridge.sip.digest import DigestAuthenticator

from .test_sip_core import BRIDGE, T1, TWILIO, ack_for, events, sent, statuses, uac_response, vector


def established(core: SipCore, invite: bytes | None = None, now: float = 0.0):
    """An answered and ACKed call; returns (call_id, the 200 OK)."""
    core.receive_datagram(invite or vector("invite_twilio.bin"), TWILIO, now)
    sent(core)
    (incoming,) = events(core)
    core.answer(incoming.call_id, b"v=0\r\n", now)
    ok = [m for m, _ in sent(core) if m.code == 200][0]
    core.receive_datagram(ack_for(ok), TWILIO, now + 0.05)
    assert [type(e) for e in events(core)] == [ev.CallConfirmed]
    return incoming.call_id, ok


def request(method: str, ok, cseq: int, branch: str, body: bytes = b"", extra: str = "") -> bytes:
    head = (
        f"{method} sip:bridge@203.0.113.7:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 54.172.60.1:5060;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {ok.headers['From']}\r\n"
        f"To: {ok.headers['To']}\r\n"
        f"Call-ID: {ok.headers['Call-ID']}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:+14155550123@54.172.60.1:5060>\r\n"
        + extra
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


HOLD = b"v=0\r\no=- 1 2 IN IP4 168.86.128.20\r\ns=-\r\nc=IN IP4 168.86.128.20\r\nt=0 0\r\nm=audio 17322 RTP/AVP 0\r\na=sendonly\r\n"


def with_session_timer(value: str) -> bytes:
    return vector("invite_twilio.bin").replace(
        b"User-Agent: Twilio Gateway\r\n",
        f"User-Agent: Twilio Gateway\r\nSupported: timer\r\nSession-Expires: {value}\r\nMin-SE: 90\r\n".encode(),
    )


def core_() -> SipCore:
    return SipCore(BRIDGE, timers=Timers(t1=T1), session_expires=1800, min_se=90)


def test_reinvite_hold_answered_and_acked():
    core = core_()
    call_id, ok = established(core)
    core.receive_datagram(request("INVITE", ok, 2, "z9hG4bKre1", HOLD), TWILIO, 5.0)
    assert sent(core) == []
    assert events(core) == [ev.SessionUpdate(call_id, HOLD, "INVITE")]
    # A second offer while this one is pending: 491 (RFC 3261 14.2).
    core.receive_datagram(request("UPDATE", ok, 3, "z9hG4bKup1", HOLD), TWILIO, 5.1)
    assert statuses(sent(core)) == [491]
    core.answer_update(call_id, b"v=0\r\na=recvonly\r\n", 5.2)
    ((reply, _),) = sent(core)
    assert reply.code == 200 and reply.cseq.sequence == 2 and reply.body.endswith(b"a=recvonly\r\n")
    assert reply.headers["Contact"] == "<sip:bridge@203.0.113.7:5060>"
    core.handle_timer(5.2 + T1)
    assert statuses(sent(core)) == [200]  # retransmitted until the ACK (13.3.1.4)
    core.receive_datagram(ack_for(reply, branch="z9hG4bKack2"), TWILIO, 5.9)
    assert events(core) == []  # not a new CallConfirmed
    core.handle_timer(10.0)
    assert sent(core) == []
    with pytest.raises(SipUsageError):
        core.answer_update(call_id, b"v=0\r\n", 10.0)


def test_update_answered_in_its_transaction():
    core = core_()
    call_id, ok = established(core)
    core.receive_datagram(request("UPDATE", ok, 2, "z9hG4bKup2", HOLD), TWILIO, 3.0)
    assert events(core) == [ev.SessionUpdate(call_id, HOLD, "UPDATE")]
    core.reject_update(call_id, 488, 3.1)
    assert statuses(sent(core)) == [488]
    core.receive_datagram(request("UPDATE", ok, 3, "z9hG4bKup3", HOLD), TWILIO, 4.0)
    events(core)
    core.answer_update(call_id, b"v=0\r\n", 4.0)
    assert statuses(sent(core)) == [200]
    core.receive_datagram(request("UPDATE", ok, 3, "z9hG4bKup3", HOLD), TWILIO, 4.2)  # retransmission
    assert statuses(sent(core)) == [200] and events(core) == []


def test_out_of_order_cseq_gets_500():
    core = core_()
    call_id, ok = established(core)
    core.receive_datagram(request("OPTIONS", ok, 5, "z9hG4bKo5"), TWILIO, 1.0)
    assert statuses(sent(core)) == [200]
    core.receive_datagram(request("OPTIONS", ok, 4, "z9hG4bKo4"), TWILIO, 1.1)
    assert statuses(sent(core)) == [500]


def test_session_timer_peer_refreshes_or_we_hang_up():
    """RFC 4028: refresher=uac (Twilio) -> we expect refreshes; none -> BYE before expiry."""
    core = core_()
    call_id, ok = established(core, with_session_timer("120;refresher=uac"))
    assert ok.headers["Session-Expires"] == "120;refresher=uac"
    assert ok.headers["Require"] == "timer"
    # A refresh re-INVITE at 60 s restarts the timer.
    core.receive_datagram(
        request(
            "INVITE", ok, 2, "z9hG4bKrf1", b"v=0\r\n", "Session-Expires: 120;refresher=uac\r\nSupported: timer\r\n"
        ),
        TWILIO,
        60.0,
    )
    assert [type(e) for e in events(core)] == [ev.SessionUpdate]
    core.answer_update(call_id, b"v=0\r\n", 60.0)
    ((reply, _),) = sent(core)
    assert reply.headers["Session-Expires"] == "120;refresher=uac"
    core.receive_datagram(ack_for(reply, branch="z9hG4bKackrf"), TWILIO, 60.1)
    core.handle_timer(100.0)  # the old deadline (88 s) no longer applies
    assert [m.method for m, _ in sent(core) if isinstance(m, Request)] == []
    core.handle_timer(60.0 + 120 - 32)
    byes = [m for m, _ in sent(core) if isinstance(m, Request) and m.method == "BYE"]
    assert len(byes) == 1
    assert events(core) == [ev.CallEnded(call_id, "session_expired", 408)]


def test_session_timer_too_small_gets_422():
    core = core_()
    core.receive_datagram(with_session_timer("30"), TWILIO, 0.0)
    out = sent(core)
    assert statuses(out) == [100, 422]
    assert out[1][0].headers["Min-SE"] == "90"
    assert events(core) == []
    assert core.active_calls == 0


def test_session_timer_we_refresh_with_reinvite():
    core = core_()
    call_id, ok = established(core, with_session_timer("200;refresher=uas"))
    assert ok.headers["Session-Expires"] == "200;refresher=uas"
    core.handle_timer(100.0)  # half the interval
    ((reinvite, dest),) = sent(core)
    assert reinvite.method == "INVITE" and reinvite.cseq.sequence == 2 and dest == ("54.172.60.1", 5060)
    assert reinvite.headers["Session-Expires"] == "200;refresher=uas"
    assert reinvite.body == b"v=0\r\n"
    core.receive_datagram(uac_response(reinvite, 200, "OK", to_tag=None, body=b"v=0\r\n"), TWILIO, 100.1)
    ((ack, _),) = sent(core)
    assert ack.method == "ACK" and ack.cseq.sequence == 2
    core.handle_timer(200.0)
    assert sent(core) == []
    core.handle_timer(200.2)
    assert [m.method for m, _ in sent(core)] == ["INVITE"]  # the next refresh, 100 s after the last


def test_refresh_answered_481_ends_the_call():
    core = core_()
    call_id, ok = established(core, with_session_timer("200;refresher=uas"))
    core.handle_timer(100.0)
    ((reinvite, _),) = sent(core)
    core.receive_datagram(uac_response(reinvite, 481, "Call/Transaction Does Not Exist", to_tag=None), TWILIO, 100.1)
    assert [m.method for m, _ in sent(core)] == ["ACK", "BYE"]
    assert events(core) == [ev.CallEnded(call_id, "failed", 481)]


def test_refer_and_notify_progress():
    core = core_()
    call_id, ok = established(core)
    core.refer(call_id, "tel:+14155550100", 1.0)
    ((refer, dest),) = sent(core)
    assert refer.method == "REFER" and refer.headers["Refer-To"] == "<tel:+14155550100>"
    assert refer.headers["Referred-By"] == "<sip:+14158675309@203.0.113.7:5060>"
    core.receive_datagram(uac_response(refer, 202, "Accepted", to_tag=None), TWILIO, 1.1)
    assert events(core) == [ev.TransferProgress(call_id, 202, False)]
    notify = request(
        "NOTIFY", ok, 2, "z9hG4bKn1", b"SIP/2.0 100 Trying\r\n", "Event: refer\r\nSubscription-State: active\r\n"
    )
    notify = notify.replace(b"Content-Type: application/sdp", b"Content-Type: message/sipfrag")
    core.receive_datagram(notify, TWILIO, 1.5)
    assert statuses(sent(core)) == [200]
    assert events(core) == [ev.TransferProgress(call_id, 100, False)]
    final = request(
        "NOTIFY", ok, 3, "z9hG4bKn2", b"SIP/2.0 200 OK\r\n", "Event: refer;id=2\r\nSubscription-State: terminated\r\n"
    )
    core.receive_datagram(final, TWILIO, 3.0)
    assert statuses(sent(core)) == [200]
    assert events(core) == [ev.TransferProgress(call_id, 200, True)]
    other = request("NOTIFY", ok, 4, "z9hG4bKn3", b"", "Event: presence\r\n")
    core.receive_datagram(other, TWILIO, 3.1)
    assert statuses(sent(core)) == [489]


def test_refer_rejected_or_timed_out_is_final():
    core = core_()
    call_id, ok = established(core)
    core.refer(call_id, "sip:+14155550100@example.pstn.twilio.com", 1.0)
    ((refer, _),) = sent(core)
    core.receive_datagram(uac_response(refer, 603, "Decline", to_tag=None), TWILIO, 1.1)
    assert events(core) == [ev.TransferProgress(call_id, 603, True)]
    core.refer(call_id, "sip:+14155550100@example.pstn.twilio.com", 2.0)
    sent(core)
    core.handle_timer(2.0 + 64 * T1)
    assert ev.TransferProgress(call_id, 408, True) in events(core)
    with pytest.raises(ValueError):
        core.refer(call_id, "not a uri", 50.0)


def test_uac_answers_407_with_proxy_authorization():
    core = SipCore(("192.0.2.20", 5062), timers=Timers(t1=T1))
    trunk = ("192.0.2.10", 5060)
    call_id = core.invite(
        "sip:+14155550100@example.pstn.twilio.com", trunk, b"v=0\r\n", 0.0, credentials=("bridgeuser", "s3cret")
    )
    ((invite, _),) = sent(core)
    auth = DigestAuthenticator({"bridgeuser": "s3cret"}, "sip.twilio.com", ["SHA-256"])
    challenge = auth.challenges(0.0)[0]
    response = uac_response(invite, 407, "Proxy Authentication Required", contact=None).replace(
        b"Content-Length: 0", f"Proxy-Authenticate: {challenge}\r\nContent-Length: 0".encode()
    )
    core.receive_datagram(response, trunk, 0.1)
    out = sent(core)
    assert [m.method for m, _ in out] == ["ACK", "INVITE"]
    second = out[1][0]
    assert second.cseq.sequence == 2 and second.headers["Call-ID"] == call_id
    assert second.via[0].parameters["branch"] != invite.via[0].parameters["branch"]
    assert second.headers["From"] == invite.headers["From"]
    assert auth.verify(second.headers["Proxy-Authorization"], "INVITE", 0.2) == "bridgeuser"
    assert events(core) == []
    # A second challenge is not answered again: the call fails.
    core.receive_datagram(uac_response(second, 407, "Proxy Authentication Required", contact=None), trunk, 0.3)
    assert events(core) == [ev.CallEnded(call_id, "rejected", 407)]


def test_reliable_transport_never_retransmits():
    """Over TCP/TLS: no Timer A/E/G retransmissions, Timers I/J/K are zero (RFC 3261 17)."""
    core = SipCore(("203.0.113.7", 5061), timers=Timers(t1=T1), transport="TLS")
    data = vector("invite_twilio.bin").replace(b"SIP/2.0/UDP", b"SIP/2.0/TLS")
    core.receive_datagram(data, ("54.172.60.1", 40123), 0.0)
    ((trying, dest),) = sent(core)
    assert dest == ("54.172.60.1", 40123)  # back on the connection it came from
    (incoming,) = events(core)
    core.reject(incoming.call_id, 486, 0.0)
    sent(core)
    core.handle_timer(1.0)
    assert sent(core) == []  # no Timer G over a reliable transport
    opt = vector("options.bin").replace(b"SIP/2.0/UDP", b"SIP/2.0/TLS")
    core.receive_datagram(opt, ("127.0.0.1", 40000), 2.0)
    ((reply, _),) = sent(core)
    core.handle_timer(2.0)  # Timer J = 0
    call_id = core.invite("sip:agent@192.0.2.10:5061;transport=tls", ("192.0.2.10", 5061), b"v=0\r\n", 3.0)
    ((invite, _),) = sent(core)
    assert invite.via[0].transport == "TLS"
    assert invite.headers["Contact"] == "<sip:bridge@203.0.113.7:5061;transport=tls>"
    core.handle_timer(3.0 + T1)
    assert sent(core) == []  # no Timer A
    assert core.has_call(call_id)
