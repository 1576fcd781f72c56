"""RTP packetization, pacing arithmetic and RFC 4733 DTMF decoding, byte-exact."""

from __future__ import annotations

import numpy as np
import pytest
from aiortc.rtp import RtpPacket

from bridge.media.codecs import G711
from bridge.media.rtp import (
    DtmfEvent,
    DtmfSchedule,
    Pacer,
    RtpReceiver,
    RtpSender,
    parse_telephone_event,
    telephone_event_payload,
)


def test_sender_header_bytes_timestamps_and_marker():
    sender = RtpSender(payload_type=0, ssrc=0x11223344)
    sender.sequence = 0xFFFF
    sender.timestamp0 = 0xFFFFFF00
    payload = b"\xff" * 160
    first = sender.packet(0, payload, talkspurt_start=True)
    second = sender.packet(1, payload, talkspurt_start=False)
    later = sender.packet(5, payload, talkspurt_start=True)  # slots 2-4 were silence, not sent
    # V=2, M=1 PT=0, seq, ts, ssrc (RFC 3550 section 5.1)
    assert first[:12] == bytes.fromhex("80 80 ffff ffffff00 11223344".replace(" ", ""))
    assert second[:12] == bytes.fromhex("80 00 0000 ffffffa0 11223344".replace(" ", ""))  # seq wraps, ts +160
    assert later[:12] == bytes.fromhex(
        "80 80 0001 00000220 11223344".replace(" ", "")
    )  # ts advanced over silence, seq did not
    assert first[12:] == payload and len(first) == 172
    assert sender.packets_sent == 3 and sender.octets_sent == 480


def test_pacer_deadlines_come_from_start_not_from_last_send():
    pacer = Pacer(start=100.0, ptime=0.02)
    assert pacer.deadline() == 100.0
    assert pacer.due_slots(100.0) == [0]
    assert pacer.due_slots(100.013) == []  # early: nothing due
    assert pacer.due_slots(100.0205) == [1]  # late by 0.5 ms: no drift carried over
    assert pacer.deadline() == pytest.approx(100.04)
    assert pacer.due_slots(100.04) == [2]
    # 10 000 slots later the deadline is still start + n * 20 ms, exactly.
    assert pacer.deadline(10_000) == pytest.approx(300.0)


def test_pacer_catches_up_a_short_stall_and_skips_a_long_one():
    pacer = Pacer(start=0.0, ptime=0.02, max_behind=5)
    assert pacer.due_slots(0.0) == [0]
    assert pacer.due_slots(0.061) == [1, 2, 3]  # 3 slots overdue: sent back to back
    assert pacer.due_slots(1.0) == [46, 47, 48, 49, 50]  # 47 overdue: only the last 5
    assert pacer.next_slot == 51


def dtmf_packet(seq: int, ts: int, event: int, end: bool, duration: int, pt: int = 101) -> bytes:
    return RtpPacket(
        payload_type=pt,
        sequence_number=seq,
        timestamp=ts,
        ssrc=7,
        payload=telephone_event_payload(event, end, 10, duration),
    ).serialize()


def test_telephone_event_payload_bytes():
    # RFC 4733 section 2.3: event 5, E=1, volume 10, duration 800.
    assert telephone_event_payload(5, True, 10, 800) == bytes([5, 0x8A, 0x03, 0x20])
    assert parse_telephone_event(bytes([11, 0x0A, 0x01, 0x40])) == (11, False, 10, 320)
    with pytest.raises(ValueError):
        parse_telephone_event(b"\x01\x02")


def test_dtmf_digit_delivered_once_per_event():
    rx = RtpReceiver(audio_pt=0, dtmf_pt=101)
    got = []
    seq = 1
    # digit "5": three updates, then three end packets (RFC 4733 section 2.5.1.4), same timestamp
    for duration, end in [(160, False), (320, False), (480, False), (640, True), (640, True), (640, True)]:
        result = rx.receive(dtmf_packet(seq, 8000, 5, end, duration))
        seq += 1
        if result:
            got.append(result)
    # then "#" (event 11), whose first packets were lost: only end packets arrive
    for _ in range(3):
        result = rx.receive(dtmf_packet(seq, 9600, 11, True, 800))
        seq += 1
        if result:
            got.append(result)
    assert got == [("dtmf", DtmfEvent("5", 8000, False, 160)), ("dtmf", DtmfEvent("#", 9600, True, 800))]


def test_receiver_drops_duplicates_unknown_pt_and_garbage():
    rx = RtpReceiver(audio_pt=8, dtmf_pt=None)
    audio = RtpPacket(payload_type=8, sequence_number=10, timestamp=0, ssrc=1, payload=b"\xd5" * 160).serialize()
    assert rx.receive(audio)[0] == "audio"
    assert rx.receive(audio) is None  # duplicate
    assert rx.receive(b"\x80\x08") is None  # truncated
    assert rx.receive(b"\x40" + bytes(20)) is None  # version 1
    other = RtpPacket(payload_type=0, sequence_number=11, timestamp=160, ssrc=1, payload=b"\xff" * 160).serialize()
    assert rx.receive(other) is None  # PT 0 was not negotiated
    assert rx.last_drop == "unknown_payload_type"
    assert rx.counters == {"audio": 1, "duplicate_or_late": 1, "malformed": 2, "unknown_payload_type": 1}


def test_audio_payload_decodes_to_pcm():
    codec = G711("PCMU")
    pcm = (np.sin(np.arange(160) / 3) * 5000).astype(np.int16)
    packet = RtpPacket(payload_type=0, sequence_number=1, timestamp=0, ssrc=1, payload=codec.encode(pcm)).serialize()
    kind, parsed = RtpReceiver(0, 101).receive(packet)
    decoded = codec.decode(parsed.payload)
    assert kind == "audio" and decoded.shape == (160,) and decoded.dtype == np.int16
    assert np.max(np.abs(decoded.astype(int) - pcm)) < 200


def test_dtmf_schedule_and_packets_roundtrip_through_receiver():
    """What we send for "1#" is what the receiver decodes, once per digit (RFC 4733 2.5.1)."""
    sender = RtpSender(payload_type=0, ssrc=5)
    sender.timestamp0 = 1000
    schedule = DtmfSchedule(tone_slots=2, gap_slots=2)
    schedule.add("1#")
    rx = RtpReceiver(audio_pt=0, dtmf_pt=101)
    plan, got = [], []
    for slot in range(20):
        step = schedule.next(slot)
        plan.append(step)
        if step is not None:
            start, event, end, duration, first = step
            result = rx.receive(
                sender.dtmf_packet(start, event, end=end, duration=duration, first=first, payload_type=101)
            )
            if result:
                got.append(result[1])
    assert plan[:6] == [(0, 1, False, 160, True), (0, 1, False, 320, False)] + [(0, 1, True, 320, False)] * 3 + [None]
    assert plan[5:7] == [None, None]  # two slots of audio between digits
    assert plan[7][:2] == (7, 11)  # then "#" starts at its own slot
    assert [(e.digit, e.timestamp) for e in got] == [("1", 1000), ("#", 1000 + 7 * 160)]
    assert not schedule.active
    with pytest.raises(ValueError):
        schedule.add("x")


def test_sequence_jump_resyncs_after_two_packets():
    """RFC 3550 A.1: a restart (big jump) is accepted once a second packet confirms it."""
    rx = RtpReceiver(audio_pt=0, dtmf_pt=None)

    def pkt(seq):
        return RtpPacket(
            payload_type=0, sequence_number=seq, timestamp=seq * 160, ssrc=9, payload=b"\xff" * 160
        ).serialize()

    assert rx.receive(pkt(5000))[0] == "audio"
    assert rx.receive(pkt(5001))[0] == "audio"
    assert rx.receive(pkt(5003))[0] == "audio"  # a lost packet: fine
    assert rx.receive(pkt(4990)) is None  # late
    assert rx.receive(pkt(100)) is None  # jump back (a replay from the start)
    assert rx.receive(pkt(101))[0] == "audio"  # confirmed: resynchronized
    assert rx.receive(pkt(102))[0] == "audio"
    assert rx.valid_packets == 7
    assert rx.counters["resync"] == 1 and rx.counters["sequence_jump"] == 1 and rx.counters["duplicate_or_late"] == 1


def test_packets_of_any_ptime_become_20_ms_frames():
    """A peer may send 30 ms (240 samples) or 10 ms packets whatever ``a=ptime`` asked
    (RFC 3264 section 5; sipp's g711a.pcap is 30 ms): the layers above get whole 160-sample
    frames, in order, with nothing lost or repeated."""
    from bridge.audio.wire import FRAME_SAMPLES, Framer

    framer = Framer()
    audio = np.arange(240 * 7, dtype=np.int16)
    out = []
    for i in range(0, len(audio), 240):
        out += framer.frames(audio[i : i + 240])
    assert [len(f) for f in out] == [FRAME_SAMPLES] * (240 * 7 // FRAME_SAMPLES)
    assert np.array_equal(np.concatenate(out), audio[: len(out) * FRAME_SAMPLES])
    ten = [framer.frames(np.full(80, k, np.int16)) for k in range(4)]  # 10 ms packets
    assert [len(f) for f in ten] == [1, 0, 1, 0]  # the 80 samples left over from above complete the first
