"""WebRTC VAD (``webrtcvad``) on 20 ms PCM16 frames at 8000 Hz."""

from __future__ import annotations

import numpy as np
import webrtcvad


class WebRtcVad:
    """Speech/non-speech per 20 ms frame.

    Args:
        aggressiveness: 0 (least) .. 3 (most aggressive at calling non-speech).

    Raises:
        ValueError: aggressiveness outside 0..3.
    """

    sample_rate = 8000

    def __init__(self, aggressiveness: int = 2) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)

    def is_speech(self, frame: np.ndarray) -> bool:
        """``frame``: PCM16 mono 8000 Hz, exactly 160 samples (20 ms)."""
        return self._vad.is_speech(np.asarray(frame, dtype=np.int16).tobytes(), self.sample_rate)


def webrtc_vad_factory(aggressiveness: int):
    """A callable that makes a fresh :class:`WebRtcVad` (one per call: it is stateful)."""
    return lambda: WebRtcVad(aggressiveness)
