"""The ``echo`` agent: plays the caller's audio back, like a PBX echo test.

No models: it exists to measure signalling and media capacity (``agent.kind:
echo``) and to check a trunk's audio path end to end. It has the same
leg-facing methods as :class:`bridge.conversation.engine.Conversation`.
"""

from __future__ import annotations

import collections
import logging

import numpy as np

from ..audio.wire import FRAME_SAMPLES
from .turns import AgentFrame, AgentUtterance

log = logging.getLogger("bridge.conversation")


class EchoAgent:
    """Echoes each received 20 ms frame after ``delay_frames`` frames (default 200 ms).

    Args:
        leg: the call leg (only ``call_id`` is used).
        delay_frames: echo delay in 20 ms frames.
        max_frames: at most this many frames are buffered (older ones dropped).
    """

    def __init__(self, leg, delay_frames: int = 10, max_frames: int = 250) -> None:
        self.leg = leg
        self.delay_frames = delay_frames
        self._buffer: collections.deque[np.ndarray] = collections.deque(maxlen=max_frames)
        self.dtmf_digits: list[str] = []
        self.history: list = []
        self.frames_in = 0
        self.frames_out = 0
        self.on_hold = False
        #: Everything echoed belongs to one utterance (marks on Media Streams count it).
        self._echoed = AgentUtterance()

    def start(self) -> None:
        """Nothing to say first."""

    def feed_audio(self, frame: np.ndarray, now: float | None = None) -> None:
        """A caller frame: PCM16 mono 8000 Hz, 160 samples."""
        if len(frame) == FRAME_SAMPLES:
            self._buffer.append(frame)
            self.frames_in += 1

    def feed_dtmf(self, digit: str) -> None:
        self.dtmf_digits.append(digit)
        log.info("dtmf call=%s digit=%s", self.leg.call_id, digit)

    def pull_frame(self, now: float | None = None) -> np.ndarray | None:
        """The frame received ``delay_frames`` ago, or ``None`` while filling."""
        item = self.pull_item(now)
        return item.pcm if item is not None else None

    def pull_item(self, now: float | None = None) -> AgentFrame | None:
        """:meth:`pull_frame` as an :class:`AgentFrame` (the Media Streams leg's call)."""
        if len(self._buffer) <= self.delay_frames:
            return None
        self.frames_out += 1
        return AgentFrame(self._buffer.popleft(), self._echoed, False, self.frames_out * FRAME_SAMPLES)

    def mark_played(self, owner, offset: int) -> None:
        """Twilio played the echo up to ``offset`` samples."""
        owner.played = max(owner.played, offset)

    def set_hold(self, held: bool) -> None:
        self.on_hold = held
        self._buffer.clear()

    def transfer_failed(self) -> None:
        """Nothing to tell the caller."""

    def transcript(self) -> list[tuple[str, str]]:
        return []

    async def close(self) -> None:
        self._buffer.clear()
