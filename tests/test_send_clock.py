"""The shared send tick (bridge.media.clock.SendClock): every stream keeps its own
20 ms phase, one timer serves them all, and a broken or closed stream stops only itself."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest
from aiortc.rtp import RtpPacket

from bridge.media.clock import SendClock
from bridge.media.sdp import MediaParams
from bridge.media.stream import RtpStream


class StepLoop:
    """An event loop's clock and timers, advanced by the test (the clock needs only these two)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[list] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when, callback):
        timer = [when, callback, False]

        class Handle:
            def cancel(self_inner) -> None:
                timer[2] = True

        self.timers.append(timer)
        return Handle()

    def run_until(self, end: float) -> None:
        while True:
            live = [t for t in self.timers if not t[2]]
            if not live:
                return
            first = min(live, key=lambda t: t[0])
            if first[0] > end:
                return
            self.timers.remove(first)
            self.now = max(self.now, first[0])
            first[1]()


class Ticker:
    def __init__(self, start: float, fail_at: int | None = None) -> None:
        self.next = start
        self.times: list[float] = []
        self.fail_at = fail_at

    def tick(self, now: float):
        if self.fail_at is not None and len(self.times) == self.fail_at:
            raise RuntimeError("broken source")
        self.times.append(now)
        self.next += 0.020
        return self.next


def test_each_stream_keeps_its_phase_and_one_timer_serves_all():
    loop = StepLoop()
    clock = SendClock(loop, coalesce=0.0005)
    tickers = [Ticker(0.001 * i) for i in range(10)] + [Ticker(0.0052), Ticker(0.0053)]  # the last two coalesce
    for t in tickers:
        clock.add(t, t.next)
    loop.run_until(1.0)
    for t in tickers:
        intervals = np.diff(t.times)
        assert len(t.times) >= 49
        assert np.allclose(intervals, 0.020, atol=0.0006), intervals  # at most the coalescing window early
        assert t.times[0] <= t.next - 0.020 * len(t.times) + 0.0006
    # 12 streams x 50 packets, yet fewer wake-ups than packets: the last two share theirs.
    assert clock.served == sum(len(t.times) for t in tickers)
    assert clock.wakeups < clock.served
    assert len([x for x in loop.timers if not x[2]]) == 1  # one armed timer for everyone


@pytest.mark.allow_errors  # the broken stream's exception is logged, on purpose
def test_a_removed_or_raising_stream_stops_alone():
    loop = StepLoop()
    clock = SendClock(loop)
    good, gone, broken = Ticker(0.0), Ticker(0.005), Ticker(0.010, fail_at=3)
    for t in (good, gone, broken):
        clock.add(t, t.next)
    loop.run_until(0.1)
    clock.remove(gone)
    seen = len(gone.times)
    loop.run_until(1.001)
    assert len(gone.times) == seen
    assert len(broken.times) == 3
    assert len(good.times) == 51
    assert len(clock) == 1
    clock.remove(good)
    assert not [x for x in loop.timers if not x[2]]  # nothing left to serve: no timer armed


def test_rtp_streams_on_one_loop_send_paced_packets_through_one_clock():
    """Real sockets on 127.0.0.1: 40 streams, each 20 ms frames with consecutive
    sequence numbers and timestamps 160 apart, all driven by the loop's one clock."""

    class Tone:
        def pull_frame(self, now):
            return np.full(160, 1000, dtype=np.int16)

    async def run() -> tuple[dict, SendClock]:
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        sink.setblocking(False)
        got: dict[int, list[RtpPacket]] = {}
        loop = asyncio.get_running_loop()

        class Sink(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                got.setdefault(addr[1], []).append(RtpPacket.parse(data))

        transport, _ = await loop.create_datagram_endpoint(Sink, sock=sink)
        streams = []
        for _ in range(40):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            params = MediaParams(codec="PCMU", payload_type=0, remote_addr=sink.getsockname(), dtmf_payload_type=None)
            stream = RtpStream(s, params, Tone(), lambda f, t: None, lambda e: None, lambda: None, latch=False)
            await stream.start()
            streams.append(stream)
            await asyncio.sleep(0.0013)  # different phases
        clock = SendClock.for_loop()
        assert len(clock) == 40
        await asyncio.sleep(0.6)
        for stream in streams:
            await stream.close()
        assert len(clock) == 0
        await asyncio.sleep(0.05)
        transport.close()
        return got, clock

    got, clock = asyncio.run(run())
    assert len(got) == 40
    for packets in got.values():
        assert len(packets) >= 20
        for a, b in zip(packets, packets[1:]):
            assert (b.sequence_number - a.sequence_number) & 0xFFFF == 1
            assert (b.timestamp - a.timestamp) & 0xFFFFFFFF == 160
    assert clock.served >= 40 * 20
