"""Fuzzing the SIP entry point: 100k+ generated and mutated datagrams.

Seeds are real messages (tests/vectors) and RFC 4475 torture-message shapes
(tests/vectors/torture). Nothing may escape ``receive_datagram`` or the timers
(only the defined behaviour: an answer, or a drop counted by reason), and the
core must still answer OPTIONS afterwards. Deterministic (seeded).
"""

from __future__ import annotations

import random
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sipmessage import Message

from bridge.sip import events as ev
from bridge.sip.core import SipCore, Timers

from .conftest import VECTORS, BridgeProcess

SEEDS = sorted(VECTORS.glob("*.bin")) + sorted((VECTORS / "torture").glob("*.bin"))
CORPUS = [p.read_bytes() for p in SEEDS]
OPTIONS = (VECTORS / "options.bin").read_bytes()

INTERESTING = [
    b"",
    b"\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b"\xff\xfe",
    b";",
    b",",
    b":",
    b"<",
    b">",
    b'"',
    b"\\",
    b" ",
    b"\t",
    b"SIP/2.0",
    b"z9hG4bK",
    b"tag=",
    b"-1",
    b"4294967296",
    b"99999999999999999999",
    b"%00",
    b"\xc3\x28",
    b"Content-Length: 99999",
    b"CSeq: 1 ACK",
    b"To: <sip:x@y>;tag=a",
    b"Via: SIP/2.0/UDP 1.2.3.4;rport;branch=z9hG4bKq",
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four random mutations of ``data``."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(10)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:  # bit flip
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # insert an interesting token
            buf[pos:pos] = rng.choice(INTERESTING)
        elif op == 2 and buf:  # delete a span
            del buf[pos : pos + rng.randint(1, 40)]
        elif op == 3:  # truncate
            del buf[pos:]
        elif op == 4 and buf:  # duplicate a span
            end = min(len(buf), pos + rng.randint(1, 200))
            buf[pos:pos] = buf[pos:end]
        elif op == 5:  # splice with another seed
            other = rng.choice(CORPUS)
            cut = rng.randrange(len(other) + 1)
            buf = buf[:pos] + bytearray(other[cut:])
        elif op == 6:  # shuffle, drop or duplicate header lines
            head, sep, body = bytes(buf).partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            first, rest = lines[:1], lines[1:]
            choice = rng.randrange(3)
            if choice == 0:
                rng.shuffle(rest)
            elif choice == 1 and rest:
                rest.pop(rng.randrange(len(rest)))
            elif rest:
                rest.insert(rng.randrange(len(rest) + 1), rng.choice(rest))
            buf = bytearray(b"\r\n".join(first + rest) + sep + body)
        elif op == 7:  # line endings
            buf = bytearray(bytes(buf).replace(b"\r\n", rng.choice([b"\n", b"\r", b"\r\n\r\n", b"\r\n "])))
        elif op == 8:  # replace a number by an extreme one
            digits = [i for i, c in enumerate(buf) if 48 <= c <= 57]
            if digits:
                i = rng.choice(digits)
                buf[i : i + 1] = rng.choice([b"0", b"-1", b"65536", b"4294967296", b"1" * 40])
        else:  # random bytes
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 30)))
    return bytes(buf[:70000])


def drive(core: SipCore, rng: random.Random, data: bytes, now: float) -> None:
    """Feed one datagram, then play a random user on the events (answer, reject, hang up...).

    The core is driven directly, so nothing catches what it raises: any exception fails
    the test, naming the datagram. (Over a socket, the transport would count it as
    ``dropped_internal_error`` and log a traceback: ``test_running_server_survives_garbage``.)"""
    try:
        core.receive_datagram(data, ("192.0.2.77", rng.choice([5060, 5070])), now)
    except Exception as exc:  # noqa: BLE001
        raise AssertionError(f"the SIP core raised {exc!r} on {data[:300]!r}") from exc
    while (event := core.next_event()) is not None:
        action = rng.randrange(4)
        if isinstance(event, ev.IncomingCall):
            if action == 0:
                core.answer(event.call_id, b"v=0\r\n", now)
            elif action == 1:
                core.reject(event.call_id, 488, now)
            elif action == 2:
                core.hangup(event.call_id, now)
        elif isinstance(event, ev.SessionUpdate):
            if action < 2:
                core.answer_update(event.call_id, b"v=0\r\n", now)
            else:
                core.reject_update(event.call_id, 488, now)
    core.datagrams_to_send()


def options_still_answered(core: SipCore, now: float) -> None:
    probe = OPTIONS.replace(b"z9hG4bKopt1", b"z9hG4bKafterfuzz").replace(b"options-1@", b"after-fuzz@")
    core.receive_datagram(probe, ("127.0.0.1", 5070), now)
    replies = [Message.parse(d) for d, _ in core.datagrams_to_send()]
    assert [r.code for r in replies] == [200]


def test_100k_mutated_datagrams():
    rng = random.Random(4475)
    core = SipCore(("192.0.2.1", 5060), timers=Timers(t1=0.05))
    now = 0.0
    count = 0
    for i in range(100_000):
        seed = CORPUS[i % len(CORPUS)]
        data = seed if i % 97 == 0 else mutate(rng, seed)
        drive(core, rng, data, now)
        count += 1
        now += 0.001
        if i % 50 == 0:
            deadline = core.get_timer()
            if deadline is not None and deadline <= now:
                core.handle_timer(now)
                core.datagrams_to_send()
            while core.next_event() is not None:
                pass
    dropped = sum(v for k, v in core.counters.items() if k.startswith("dropped_"))
    answered = sum(v for k, v in core.counters.items() if k.startswith("responses_sent_"))
    assert dropped > 10_000 and answered > 5_000, core.counters  # both paths well exercised
    held = core.active_calls
    assert held > 0 and core.transaction_count > 0  # the fuzz left dialogs and transactions behind
    # Hang up what the random user left up, then let every timer run out: nothing may
    # raise, and every transaction and dialog is released.
    for call_id in core.call_ids():
        core.hangup(call_id, now)
    for _ in range(200):
        now += 1.0
        core.handle_timer(now)
        core.datagrams_to_send()
        while (event := core.next_event()) is not None:
            if isinstance(event, ev.IncomingCall):
                core.hangup(event.call_id, now)
    assert core.active_calls == 0, f"{core.active_calls} dialogs still held (of {held})"
    assert core.transaction_count == 0, f"{core.transaction_count} transactions still held"
    assert core.get_timer() is None
    options_still_answered(core, now)
    assert core.transaction_count == 1  # the OPTIONS' own server transaction (Timer J runs)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(
        ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "REFER", "NOTIFY", "INFO", "FOO", ""]
    ),
    uri=st.one_of(st.just("sip:agent@192.0.2.1"), st.text(max_size=30)),
    headers=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "Via",
                    "From",
                    "To",
                    "Call-ID",
                    "CSeq",
                    "Content-Length",
                    "Contact",
                    "Session-Expires",
                    "Event",
                    "Max-Forwards",
                    "Record-Route",
                    "Supported",
                    "X-Twilio-AccountSid",
                    "v",
                    "f",
                    "t",
                    "i",
                    "l",
                    "m",
                ]
            ),
            st.text(max_size=60),
        ),
        max_size=12,
    ),
    body=st.binary(max_size=300),
)
def test_structured_garbage(method, uri, headers, body):
    """Hypothesis: well-framed messages with arbitrary header values."""
    core = SipCore(("192.0.2.1", 5060), timers=Timers(t1=0.05))
    lines = [f"{method} {uri} SIP/2.0"] + [f"{name}: {value}" for name, value in headers]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogatepass") + body
    drive(core, random.Random(0), data, 1.0)
    core.handle_timer(100.0)
    options_still_answered(core, 101.0)


@pytest.mark.e2e
def test_running_server_survives_garbage(tmp_path):
    """5000 mutated datagrams over the wire to ``bridge serve``; then OPTIONS -> 200."""
    server = BridgeProcess(tmp_path, {"agent": {"kind": "echo"}, "sip": {"drain_timeout": 2}})
    server.start()
    rng = random.Random(3261)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        for i in range(5000):
            sock.sendto(mutate(rng, CORPUS[i % len(CORPUS)])[:60000], ("127.0.0.1", server.sip_port))
            if i % 200 == 0:
                time.sleep(0.01)  # do not just overflow the socket buffer
        # A fresh socket: the first one's receive buffer is full of answers to the garbage.
        # Retransmitted like a UAC does over UDP (Timer E): with 5000 datagrams just
        # sent, the server's socket buffer may have dropped the first copy.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe_sock:
            probe_sock.bind(("127.0.0.1", 0))
            probe_sock.settimeout(0.5)
            port = probe_sock.getsockname()[1]
            probe = OPTIONS.replace(b"z9hG4bKopt1", b"z9hG4bKwire").replace(b"options-1@", b"wire@")
            reply = b""
            for _ in range(20):
                probe_sock.sendto(
                    probe.replace(b"127.0.0.1:5070", f"127.0.0.1:{port}".encode()), ("127.0.0.1", server.sip_port)
                )
                try:
                    reply = probe_sock.recv(65535)
                    break
                except TimeoutError:
                    continue
        assert reply.startswith(b"SIP/2.0 200 OK") and b"wire@" in reply
        assert server.proc.poll() is None
    finally:
        sock.close()
        assert server.stop() == 0
    assert "Traceback" not in server.log_text(), server.log_text()[-3000:]
