"""The conversation through a real SIP+RTP leg, in one process: server and ``bridge call``
client share the event loop, so the test can look at the server's conversation state."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bridge.client import place_call, read_wav_8k, write_wav_8k
from bridge.config import load_settings
from bridge.server import BridgeServer

from .conftest import ROOT, free_port, rtp_range

pytestmark = pytest.mark.e2e


async def start_server(engines, **agent) -> BridgeServer:
    port = free_port()
    settings = load_settings(
        overrides={
            "sip": {"listen": f"127.0.0.1:{port}"},
            "media": {"rtp_ports": rtp_range(10)},
            "models": {"cache_dir": str(ROOT / "models")},
            "agent": agent,
        }
    )
    server = BridgeServer(settings, engines)
    await server.start()
    return server


async def test_stop_means_no_more_frames(engines, speech):
    """After barge_in() the very next pull_frame() gives nothing: playout stops at the next packet."""
    server = await start_server(
        engines,
        greeting="This is a long greeting that keeps going so that there is a lot of audio queued for the caller.",
    )
    try:
        call = asyncio.create_task(
            place_call(f"sip:agent@127.0.0.1:{server.core.local_addr[1]}", [], None, duration=3, wait_greeting=False)
        )
        for _ in range(100):
            leg = next(iter(server.calls.values()), None)
            if leg is not None and leg.conversation is not None and leg.conversation.playout.playing:
                break
            await asyncio.sleep(0.05)
        conversation = leg.conversation
        await asyncio.sleep(0.5)
        assert conversation.pull_frame() is not None  # the greeting is playing
        conversation.barge_in()
        assert conversation.pull_frame() is None
        assert not conversation.agent_active
        await call
    finally:
        await server.stop()


async def test_dtmf_reaches_conversation_and_strangers_are_dropped(engines):
    """RFC 4733 digits from the caller reach the conversation; RTP from another address is dropped."""
    import socket

    from aiortc.rtp import RtpPacket

    from bridge.media.rtp import telephone_event_payload

    server = await start_server(engines)
    try:
        call = asyncio.create_task(
            place_call(
                f"sip:agent@127.0.0.1:{server.core.local_addr[1]}",
                [],
                None,
                duration=3,
                wait_greeting=False,
                dtmf="42#",
            )
        )
        for _ in range(100):
            leg = next(iter(server.calls.values()), None)
            if leg is not None and leg.stream is not None and leg.stream._latched:
                break
            await asyncio.sleep(0.05)
        stream = leg.stream  # the leg lets go of it when the call ends
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.bind(("127.0.0.1", 0))
        evil = RtpPacket(
            payload_type=101,
            sequence_number=1,
            timestamp=1,
            ssrc=666,
            payload=telephone_event_payload(9, True, 10, 800),
        ).serialize()
        for _ in range(5):
            stranger.sendto(evil, ("127.0.0.1", stream.local_port))
        stranger.close()
        await call
        for _ in range(50):
            if server.finished:
                break
            await asyncio.sleep(0.1)
        conversation = server.finished[-1]
        assert conversation.dtmf_digits == ["4", "2", "#"]
        assert stream.dropped_foreign == 5 and leg.stream is None and leg.conversation is None
        assert server.metrics.dtmf._value.get() == 3
    finally:
        await server.stop()


async def test_caller_talking_over_echo_still_interrupts(engines, speech, tmp_path):
    """Same echo, and the caller asks a question 1.5 s into the greeting: barge-in."""
    question = tmp_path / "late_question.wav"
    write_wav_8k(question, np.concatenate([np.zeros(12000, np.int16), read_wav_8k(speech["saturday"])]))
    server = await start_server(engines)
    try:
        await place_call(
            f"sip:agent@127.0.0.1:{server.core.local_addr[1]}",
            [question],
            None,
            wait_greeting=False,
            echo_db=-10,
            echo_delay_ms=150,
        )
        for _ in range(50):
            if server.finished:
                break
            await asyncio.sleep(0.1)
        conversation = server.finished[-1]
        greeting = conversation.history[0][1]
        assert greeting.interrupted and greeting.played < sum(greeting.samples)
        assert server.metrics.barge_ins._value.get() >= 1
    finally:
        await server.stop()
