"""The sans-IO SIP core driven with bytes and a fake clock (no sockets, no sleeping)."""

from __future__ import annotations

import re

import pytest
from sipmessage import Message, Request, Response

from bridge.sip import events as ev
from bridge.sip.core import SipCore, SipUsageError, Timers
from bridge.sip.message import SipParseError, parse_datagram

from .conftest import VECTORS

BRIDGE = ("203.0.113.7", 5060)
TWILIO = ("54.172.60.1", 5060)
T1 = 0.5


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def make_core() -> SipCore:
    return SipCore(BRIDGE, timers=Timers(t1=T1, t2=4.0, t4=5.0), user_agent="bridge-test")


def sent(core: SipCore) -> list[tuple[Response | Request, tuple[str, int]]]:
    return [(Message.parse(data), addr) for data, addr in core.datagrams_to_send()]


def events(core: SipCore) -> list:
    out = []
    while (e := core.next_event()) is not None:
        out.append(e)
    return out


def statuses(messages) -> list[int]:
    return [m.code for m, _ in messages if isinstance(m, Response)]


def ack_for(response: Response, request_uri: str = "sip:bridge@203.0.113.7:5060", branch: str = "z9hG4bKack1") -> bytes:
    """The caller's ACK for a 2xx: a new transaction, To tag from the response (13.2.2.4)."""
    return (
        f"ACK {request_uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 54.172.60.1:5060;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {response.headers['From']}\r\n"
        f"To: {response.headers['To']}\r\n"
        f"Call-ID: {response.headers['Call-ID']}\r\n"
        f"CSeq: {response.cseq.sequence} ACK\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def in_dialog(method: str, response: Response, cseq: int, branch: str) -> bytes:
    return (
        f"{method} sip:bridge@203.0.113.7:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 54.172.60.1:5060;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {response.headers['From']}\r\n"
        f"To: {response.headers['To']}\r\n"
        f"Call-ID: {response.headers['Call-ID']}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def incoming(core: SipCore, now: float = 0.0) -> ev.IncomingCall:
    core.receive_datagram(vector("invite_twilio.bin"), TWILIO, now)
    out = sent(core)
    assert statuses(out) == [100]
    (event,) = events(core)
    assert isinstance(event, ev.IncomingCall)
    return event


# --------------------------------------------------------------- vectors


@pytest.mark.parametrize("name", ["invite_twilio.bin", "options.bin", "cancel_twilio.bin"])
def test_vectors_roundtrip_byte_exact(name):
    """Parsing a captured message and serializing it gives the same bytes back."""
    data = vector(name)
    assert bytes(Message.parse(data)) == data


def test_invite_vector_fields():
    parsed = parse_datagram(vector("invite_twilio.bin"), 16384)
    assert parsed.message.method == "INVITE"
    assert parsed.branch == "z9hG4bK1c9a.3d9a6b1b8a2f3e4a0d52c6d3a6e8d7b0.0"
    assert parsed.cseq.sequence == 1 and parsed.cseq.method == "INVITE"
    assert parsed.from_tag.startswith("77521812_")
    assert parsed.to_tag is None
    assert parsed.message.body.startswith(b"v=0\r\n") and parsed.message.body.endswith(b"a=sendrecv\r\n")


# ------------------------------------------------------------------- UAS


def test_invite_gets_100_at_once_and_event_with_metadata():
    core = make_core()
    core.receive_datagram(vector("invite_twilio.bin"), TWILIO, 0.0)
    ((trying, dest),) = sent(core)
    assert trying.code == 100 and dest == TWILIO
    # 100 Trying carries no To tag (RFC 3261 8.2.6.2); Via gets received/rport (18.2.1, RFC 3581).
    assert "tag=" not in trying.headers["To"]
    via = trying.via[0]
    assert via.parameters["rport"] == "5060"
    (event,) = events(core)
    assert event.call_id == "2d62e6a45ab7a5a4b5c1c8e1e3f3a1b0@0.0.0.0"
    assert event.request_uri == "sip:+14158675309@203.0.113.7:5060"
    assert event.from_uri == "sip:+14155550123@54.172.60.1"
    assert event.headers["X-Twilio-CallSid"] == "CA0123456789abcdef0123456789abcdef"
    assert event.headers["User-Agent"] == "Twilio Gateway"
    assert event.offer.startswith(b"v=0")


def test_answer_retransmits_2xx_until_ack():
    """RFC 3261 13.3.1.4: 2xx at T1, 2T1, 4T1 ... capped at T2, stopped by the ACK."""
    core = make_core()
    event = incoming(core)
    core.ringing(event.call_id, 0.0)
    core.answer(event.call_id, b"v=0\r\n", 0.0)
    out = sent(core)
    assert statuses(out) == [180, 200]
    ringing, ok = out[0][0], out[1][0]
    tag = re.search(r";tag=(\w+)", ok.headers["To"]).group(1)
    assert tag in ringing.headers["To"]
    assert ok.headers["Contact"] == "<sip:bridge@203.0.113.7:5060>"
    assert ok.headers["Content-Type"] == "application/sdp" and ok.body == b"v=0\r\n"
    assert ok.headers["CSeq"] == "1 INVITE"

    times = []
    now = 0.0
    while len(times) < 5:
        now = core.get_timer()
        core.handle_timer(now)
        if statuses(sent(core)) == [200]:
            times.append(now)
    assert times == pytest.approx([0.5, 1.5, 3.5, 7.5, 11.5])  # 0.5, 1, 2, 4, 4 apart

    core.receive_datagram(ack_for(ok), TWILIO, now + 0.1)
    assert [type(e) for e in events(core)] == [ev.CallConfirmed]
    assert core.get_timer() == pytest.approx(64 * T1)  # only Timer L of the Accepted IST is left
    core.handle_timer(64 * T1)
    assert sent(core) == []
    assert core.get_timer() is None and core.transaction_count == 0


def test_lost_ack_ends_call_with_bye():
    """No ACK within 64*T1: the UAS sends BYE and the call ends (13.3.1.4)."""
    core = make_core()
    event = incoming(core)
    core.answer(event.call_id, b"v=0\r\n", 0.0)
    sent(core)
    bye = None
    while (deadline := core.get_timer()) is not None and deadline <= 64 * T1:
        core.handle_timer(deadline)
        for msg, dest in sent(core):
            if isinstance(msg, Request) and msg.method == "BYE":
                bye = (msg, dest)
    assert bye is not None
    msg, dest = bye
    assert str(msg.uri) == "sip:+14155550123@54.172.60.1:5060;transport=udp"
    assert dest == ("54.172.60.1", 5060)
    assert msg.headers["Call-ID"] == event.call_id
    assert msg.cseq.method == "BYE"
    (ended,) = events(core)
    assert ended == ev.CallEnded(event.call_id, "timeout", 408)


def test_duplicate_invite_resends_last_response_only():
    core = make_core()
    event = incoming(core)
    core.ringing(event.call_id, 0.1)
    sent(core)
    core.receive_datagram(vector("invite_twilio.bin"), TWILIO, 0.5)  # retransmission
    assert statuses(sent(core)) == [180]
    assert events(core) == []
    core.answer(event.call_id, b"v=0\r\n", 0.6)
    ok = sent(core)[-1][0]
    core.receive_datagram(ack_for(ok), TWILIO, 0.65)
    assert [type(e) for e in events(core)] == [ev.CallConfirmed]
    # After the 2xx the IST is Accepted (RFC 6026): a late INVITE retransmission is absorbed.
    core.receive_datagram(vector("invite_twilio.bin"), TWILIO, 0.7)
    assert sent(core) == [] and events(core) == []
    assert core.active_calls == 1
    core.handle_timer(0.6 + 64 * T1)  # Timer L
    assert core.transaction_count == 0


def test_cancel_before_answer_487():
    core = make_core()
    event = incoming(core)
    core.ringing(event.call_id, 0.0)
    sent(core)
    core.receive_datagram(vector("cancel_twilio.bin"), TWILIO, 1.0)
    out = sent(core)
    assert statuses(out) == [200, 487]
    assert out[0][0].cseq.method == "CANCEL" and out[1][0].cseq.method == "INVITE"
    assert events(core) == [ev.CallEnded(event.call_id, "cancelled", 487)]
    with pytest.raises(SipUsageError):
        core.answer(event.call_id, b"v=0\r\n", 1.1)
    # 487 retransmitted (Timer G) until the ACK, then Timer I cleans up.
    core.handle_timer(1.5)
    assert statuses(sent(core)) == [487]
    ack = vector("cancel_twilio.bin").replace(b"CANCEL sip:", b"ACK sip:").replace(b"1 CANCEL", b"1 ACK")
    core.receive_datagram(ack, TWILIO, 1.6)
    core.handle_timer(1.6 + 5.0 + 0.01)
    core.handle_timer(64 * T1 + 2)
    assert core.transaction_count == 0


def test_cancel_unknown_transaction_481():
    core = make_core()
    core.receive_datagram(vector("cancel_twilio.bin"), TWILIO, 0.0)
    assert statuses(sent(core)) == [481]


def test_reject_488_retransmits_until_ack_then_timer_h():
    core = make_core()
    event = incoming(core)
    core.reject(event.call_id, 488, 0.0)
    assert statuses(sent(core)) == [488]
    assert events(core) == [ev.CallEnded(event.call_id, "rejected", 488)]
    retransmits = 0
    while (deadline := core.get_timer()) is not None:
        core.handle_timer(deadline)
        retransmits += len(sent(core))
    assert retransmits >= 5  # G at 0.5, 1.5, 3.5, 7.5, 11.5, ... until H at 32 s
    assert core.transaction_count == 0


def test_bye_from_caller_and_unknown_dialog():
    core = make_core()
    event = incoming(core)
    core.answer(event.call_id, b"v=0\r\n", 0.0)
    ok = sent(core)[-1][0]
    core.receive_datagram(ack_for(ok), TWILIO, 0.1)
    events(core)
    core.receive_datagram(in_dialog("BYE", ok, 2, "z9hG4bKbye1"), TWILIO, 5.0)
    assert statuses(sent(core)) == [200]
    assert events(core) == [ev.CallEnded(event.call_id, "remote_bye", None)]
    # The same BYE again is a retransmission: the same 200, no new event.
    core.receive_datagram(in_dialog("BYE", ok, 2, "z9hG4bKbye1"), TWILIO, 5.1)
    assert statuses(sent(core)) == [200]
    # A new BYE for the dialog that is gone: 481 (12.2.2).
    core.receive_datagram(in_dialog("BYE", ok, 3, "z9hG4bKbye2"), TWILIO, 5.2)
    assert statuses(sent(core)) == [481]
    assert events(core) == []


def test_hangup_sends_bye_and_retransmits():
    core = make_core()
    event = incoming(core)
    core.answer(event.call_id, b"v=0\r\n", 0.0)
    ok = sent(core)[-1][0]
    core.receive_datagram(ack_for(ok), TWILIO, 0.1)
    events(core)
    core.hangup(event.call_id, 1.0)
    ((bye, dest),) = sent(core)
    assert bye.method == "BYE" and bye.cseq.sequence == 2
    assert bye.headers["From"] == ok.headers["To"]  # our side of the dialog
    assert events(core) == [ev.CallEnded(event.call_id, "local_bye", None)]
    core.handle_timer(1.5)  # Timer E
    assert [m.method for m, _ in sent(core)] == ["BYE"]
    response = (
        "SIP/2.0 200 OK\r\n"
        f"Via: {bye.headers['Via']}\r\nFrom: {bye.headers['From']}\r\nTo: {bye.headers['To']}\r\n"
        f"Call-ID: {bye.headers['Call-ID']}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    core.receive_datagram(response, TWILIO, 1.6)
    core.handle_timer(1.6 + 5.0)  # Timer K
    core.handle_timer(64 * T1)  # Timer L of the INVITE
    assert core.transaction_count == 0


def test_options_and_unknown_method():
    core = make_core()
    core.receive_datagram(vector("options.bin"), ("127.0.0.1", 5070), 0.0)
    ((resp, dest),) = sent(core)
    assert resp.code == 200 and dest == ("127.0.0.1", 5070)
    assert resp.headers["Allow"] == "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, REFER, NOTIFY"
    assert resp.headers["CSeq"] == "7 OPTIONS"
    assert "tag=" in resp.headers["To"]
    # Via host matches the source and there is no rport: the Via comes back unchanged.
    assert resp.headers["Via"] == "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKopt1"
    subscribe = vector("options.bin").replace(b"OPTIONS", b"SUBSCRIBE").replace(b"z9hG4bKopt1", b"z9hG4bKsub1")
    core.receive_datagram(subscribe, ("127.0.0.1", 5070), 0.0)
    ((resp, _),) = sent(core)
    assert resp.code == 501


def test_response_goes_to_source_when_via_lies():
    """Via names a private address, the datagram came from elsewhere: received= and rport= (RFC 3581)."""
    core = make_core()
    data = vector("options.bin").replace(b"branch=z9hG4bKopt1", b"branch=z9hG4bKopt2;rport")
    core.receive_datagram(data, ("198.51.100.9", 40000), 0.0)
    ((resp, dest),) = sent(core)
    assert dest == ("198.51.100.9", 40000)
    assert resp.headers["Via"] == "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKopt2;rport=40000;received=198.51.100.9"


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "keepalive"),
        (b"\r\n\r\n", "keepalive"),
        (b"\xff\xfe\x00garbage", "unparseable"),
        (b"NOT SIP AT ALL\r\n\r\n", "unparseable"),
        (b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKa\r\nFrom", "unparseable"),
        (b"OPTIONS sip:x SIP/2.0\r\nVia: broken\r\n\r\n", "bad_via"),
        (b"A" * 20000, "oversized"),
    ],
)
def test_malformed_is_dropped_and_counted(data, reason):
    core = make_core()
    core.receive_datagram(data, ("192.0.2.1", 5060), 0.0)
    assert core.datagrams_to_send() == []
    assert events(core) == []
    key = "keepalives" if reason == "keepalive" else f"dropped_{reason}"
    assert core.counters[key] == 1


@pytest.mark.parametrize(
    "mutate,reason",
    [
        (lambda d: d.replace(b"CSeq: 7 OPTIONS", b"CSeq: seven OPTIONS"), "bad_header"),
        (lambda d: d.replace(b"CSeq: 7 OPTIONS", b"CSeq: 7 INVITE"), "cseq_method_mismatch"),
        (lambda d: d.replace(b"Content-Length: 0", b"Content-Length: 99"), "truncated_body"),
        (lambda d: d.replace(b"Call-ID: options-1@127.0.0.1\r\n", b""), "bad_header"),
    ],
)
def test_bad_but_routable_requests_get_400(mutate, reason):
    core = make_core()
    core.receive_datagram(mutate(vector("options.bin")), ("127.0.0.1", 5070), 0.0)
    if reason == "bad_header" and b"Call-ID" not in mutate(vector("options.bin")):
        # No Call-ID: a response cannot be built faithfully; dropped.
        assert core.counters["dropped_bad_header"] == 1
        return
    ((resp, dest),) = sent(core)
    assert resp.code == 400 and dest == ("127.0.0.1", 5070)
    assert core.counters[f"dropped_{reason}"] == 1


def test_parse_error_carries_status():
    with pytest.raises(SipParseError) as info:
        parse_datagram(vector("options.bin").replace(b"Content-Length: 0", b"Content-Length: 12"), 16384)
    assert info.value.status == 400 and info.value.reason == "truncated_body"


# ------------------------------------------------------------------- UAC


def uac_response(
    request: Request,
    status: int,
    reason: str,
    to_tag: str | None = "srv1",
    contact: str | None = "<sip:agent@192.0.2.10:5080>",
    body: bytes = b"",
) -> bytes:
    to = request.headers["To"] + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"SIP/2.0 {status} {reason}",
        f"Via: {request.headers['Via']}",
        f"From: {request.headers['From']}",
        f"To: {to}",
        f"Call-ID: {request.headers['Call-ID']}",
        f"CSeq: {request.headers['CSeq']}",
    ]
    if contact:
        lines.append(f"Contact: {contact}")
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_uac_invite_retransmits_then_answer_ack_bye():
    core = SipCore(("192.0.2.20", 5062), timers=Timers(t1=T1))
    server = ("192.0.2.10", 5080)
    call_id = core.invite("sip:agent@192.0.2.10:5080", server, b"v=0\r\n", 0.0)
    ((invite, dest),) = sent(core)
    assert invite.method == "INVITE" and dest == server
    assert invite.headers["Contact"] == "<sip:bridge@192.0.2.20:5062>"
    assert "rport" in invite.via[0].parameters
    core.handle_timer(0.5)  # Timer A
    assert [m.method for m, _ in sent(core)] == ["INVITE"]
    core.handle_timer(1.5)
    assert [m.method for m, _ in sent(core)] == ["INVITE"]
    core.receive_datagram(uac_response(invite, 180, "Ringing"), server, 1.6)
    assert events(core) == [ev.CallProgress(call_id, 180)]
    core.handle_timer(10.0)  # no more Timer A in Proceeding
    assert sent(core) == []
    core.receive_datagram(uac_response(invite, 200, "OK", body=b"v=0\r\n"), server, 2.0)
    ((ack, dest),) = sent(core)
    assert ack.method == "ACK" and ack.cseq.sequence == 1 and dest == ("192.0.2.10", 5080)
    assert ack.via[0].parameters["branch"] != invite.via[0].parameters["branch"]  # new transaction
    assert ";tag=srv1" in ack.headers["To"]
    assert events(core) == [ev.CallAnswered(call_id, b"v=0\r\n", server)]
    # A retransmitted 2xx gets the same ACK again (13.2.2.4).
    core.receive_datagram(uac_response(invite, 200, "OK", body=b"v=0\r\n"), server, 2.5)
    assert [m.method for m, _ in sent(core)] == ["ACK"]
    core.hangup(call_id, 3.0)
    ((bye, _),) = sent(core)
    assert bye.method == "BYE" and bye.cseq.sequence == 2 and str(bye.uri) == "sip:agent@192.0.2.10:5080"


def test_uac_cancel_waits_for_provisional():
    core = SipCore(("192.0.2.20", 5062), timers=Timers(t1=T1))
    server = ("192.0.2.10", 5080)
    call_id = core.invite("sip:agent@192.0.2.10:5080", server, b"v=0\r\n", 0.0)
    ((invite, _),) = sent(core)
    core.hangup(call_id, 0.1)
    assert sent(core) == []  # 9.1: no CANCEL before a provisional response
    assert events(core) == [ev.CallEnded(call_id, "cancelled", None)]
    core.receive_datagram(uac_response(invite, 180, "Ringing"), server, 0.2)
    ((cancel, _),) = sent(core)
    assert (
        cancel.method == "CANCEL"
        and cancel.headers["Via"] == invite.headers["Via"]
        and cancel.headers["CSeq"] == "1 CANCEL"
    )
    core.receive_datagram(uac_response(invite, 487, "Request Terminated"), server, 0.3)
    ((ack, _),) = sent(core)
    assert ack.method == "ACK" and ack.headers["Via"] == invite.headers["Via"]
    assert events(core) == []  # the user already had its CallEnded
    assert core.active_calls == 0


def test_uac_rejected():
    core = SipCore(("192.0.2.20", 5062), timers=Timers(t1=T1))
    call_id = core.invite("sip:agent@192.0.2.10", ("192.0.2.10", 5060), b"v=0\r\n", 0.0)
    ((invite, _),) = sent(core)
    core.receive_datagram(uac_response(invite, 486, "Busy Here", contact=None), ("192.0.2.10", 5060), 0.5)
    assert [m.method for m, _ in sent(core)] == ["ACK"]
    assert events(core) == [ev.CallEnded(call_id, "rejected", 486)]


# ------------------------------------------ transactions that must not leak (fuzz findings)


def test_bye_on_an_early_dialog_answers_the_invite_487():
    """RFC 3261 15.1.2: the caller hangs up after 180 (early dialog): BYE gets 200 and the
    INVITE 487, so its transaction ends by its timers instead of staying forever."""
    core = make_core()
    event = incoming(core)
    core.ringing(event.call_id, 0.0)
    ringing = sent(core)[0][0]
    core.receive_datagram(in_dialog("BYE", ringing, 2, "z9hG4bKearlybye"), TWILIO, 0.1)
    assert sorted(statuses(sent(core))) == [200, 487]
    for t in (1, 5, 40, 80):
        core.handle_timer(float(t))
        sent(core)
    assert core.transaction_count == 0 and core.active_calls == 0


def test_cancel_matching_another_calls_branch_gets_481():
    """A CANCEL whose Via branch matches an INVITE transaction of a different Call-ID
    does not end the call it names (9.2: no matching transaction -> 481)."""
    core = make_core()
    event = incoming(core)
    other = vector("cancel_twilio.bin").replace(event.call_id.encode(), b"someone-else@192.0.2.9")
    core.receive_datagram(other, TWILIO, 0.1)
    assert statuses(sent(core)) == [481]
    assert core.has_call(event.call_id)


def test_old_bye_timing_out_does_not_end_a_new_call_with_the_same_call_id():
    core = make_core()
    first = incoming(core)
    core.answer(first.call_id, b"v=0\r\n", 0.0)
    ok = sent(core)[0][0]
    core.receive_datagram(ack_for(ok), TWILIO, 0.1)
    core.hangup(first.call_id, 0.2)  # our BYE; the caller never answers it (Timer F at 64*T1)
    sent(core)
    events(core)
    # The same Call-ID comes back in a new INVITE (new branch) before our BYE times out.
    again = vector("invite_twilio.bin").replace(b"z9hG4bK1c9a.3d9a6b1b8a2f3e4a0d52c6d3a6e8d7b0.0", b"z9hG4bKsecondcall")
    core.receive_datagram(again, TWILIO, 1.0)
    sent(core)
    (second,) = events(core)
    core.handle_timer(0.2 + 64 * T1 + 0.1)
    sent(core)
    assert core.has_call(second.call_id) and not any(isinstance(e, ev.CallEnded) for e in events(core))


def test_options_while_unavailable_gets_503_with_retry_after():
    """RFC 3261 11.2: OPTIONS is answered as an INVITE would be; a draining node says 503,
    which takes it out of a load balancer's rotation (Kamailio's dispatcher probes)."""
    core = make_core()
    core.set_unavailable(10)
    core.receive_datagram(vector("options.bin"), ("127.0.0.1", 5070), 0.0)
    ((resp, _),) = sent(core)
    assert resp.code == 503 and resp.headers["Retry-After"] == "10"
    assert "OPTIONS" in resp.headers["Allow"]
    core.set_unavailable(None)
    core.receive_datagram(vector("options.bin").replace(b"z9hG4bKopt1", b"z9hG4bKopt2"), ("127.0.0.1", 5070), 0.0)
    ((resp, _),) = sent(core)
    assert resp.code == 200


def test_record_route_copied_into_dialog_creating_responses():
    """RFC 3261 12.1.1: the UAS copies Record-Route (values and order) into 18x/2xx, so
    the caller's route set keeps a record-routing proxy in the dialog; not into 100, and
    the UAS's own in-dialog requests follow the route set (12.2.1.1)."""
    core = make_core()
    rr = b"Record-Route: <sip:198.51.100.5;lr>\r\nRecord-Route: <sip:54.172.60.2;lr;ftag=x>\r\n"
    data = vector("invite_twilio.bin").replace(b"Max-Forwards:", rr + b"Max-Forwards:", 1)
    core.receive_datagram(data, TWILIO, 0.0)
    ((trying, _),) = sent(core)
    assert trying.code == 100 and not trying.headers.getlist("Record-Route")
    (event,) = events(core)
    core.ringing(event.call_id, 0.0)
    core.answer(event.call_id, b"v=0\r\n", 0.0)
    for resp, _ in sent(core):
        assert resp.headers.getlist("Record-Route") == ["<sip:198.51.100.5;lr>", "<sip:54.172.60.2;lr;ftag=x>"], (
            resp.code
        )
    core.receive_datagram(ack_for(resp), TWILIO, 0.1)
    core.hangup(event.call_id, 0.2)
    ((bye, dest),) = sent(core)
    assert bye.method == "BYE"
    # UAS route set = Record-Route in order; the first hop is a loose router.
    assert bye.headers.getlist("Route") == ["<sip:198.51.100.5;lr>", "<sip:54.172.60.2;lr;ftag=x>"]
    assert dest == ("198.51.100.5", 5060)
