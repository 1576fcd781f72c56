"""The browser leg's parts without a browser: the peer connection's ICE configuration
(no STUN server unless configured), the agent's track (20 ms frames of PCM16 8 kHz,
timestamps in samples, paced), and the data channel's messages (digits in, garbage
dropped and counted)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from bridge.calls.webrtc import peer_configuration
from bridge.config import ConsoleSettings
from bridge.webrtc.leg import WebRtcCallLeg


def test_no_ice_server_unless_configured():
    assert peer_configuration(ConsoleSettings()).iceServers == []  # None would mean aiortc's public STUN server
    configured = peer_configuration(
        ConsoleSettings(ice_servers=["turn:turn.example.test:3478"], ice_username="u", ice_credential="p")
    )
    assert [(s.urls, s.username, s.credential) for s in configured.iceServers] == [
        ("turn:turn.example.test:3478", "u", "p")
    ]


class Agent:
    """The conversation's side of the leg, as far as these tests need it."""

    def __init__(self) -> None:
        self.digits: list[str] = []
        self.frames = [np.full(160, 1000, np.int16), None]

    def pull_frame(self, now=None):
        return self.frames.pop(0) if self.frames else None

    def feed_dtmf(self, digit: str) -> None:
        self.digits.append(digit)

    def transcript(self) -> list[tuple[str, str]]:
        return []


class Host:
    def __init__(self) -> None:
        self.ended: list[tuple[str, str]] = []

    def end_call(self, call_id: str, reason: str) -> None:
        self.ended.append((call_id, reason))


def leg() -> WebRtcCallLeg:
    out = WebRtcCallLeg(Host(), "webrtc-0123456789abcdef", "console", pc=None)
    out.conversation = Agent()
    out.connected.set()
    return out


async def test_the_agent_track_sends_20_ms_of_8_khz_pcm_every_20_ms():
    track = leg().track
    started = time.monotonic()
    frames = [await track.recv() for _ in range(5)]
    assert [f.pts for f in frames] == [0, 160, 320, 480, 640]
    assert all(f.sample_rate == 8000 and f.samples == 160 and f.format.name == "s16" for f in frames)
    assert frames[0].to_ndarray().max() == 1000 and frames[1].to_ndarray().max() == 0  # the agent's frame, then silence
    assert time.monotonic() - started >= 4 * 0.02 * 0.9  # paced, not as fast as aiortc asks
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


def test_data_channel_messages_digits_in_garbage_dropped():
    call = leg()
    for message in (
        json.dumps({"type": "dtmf", "digit": "5"}),
        json.dumps({"type": "dtmf", "digit": "55"}),
        "not json",
        json.dumps([1]),
        json.dumps({"type": "dtmf", "digit": "#"}),
        json.dumps({"type": "reboot"}),
    ):
        call.on_message(message)
    assert call.conversation.digits == ["5", "#"]
    assert call.dropped == {"bad_event": 4}
    call.on_message(json.dumps({"type": "hangup"}))
    assert call.host.ended == [("webrtc-0123456789abcdef", "bye")]
