"""What a G.711 telephone call carries, in one place.

Narrowband audio is sampled at 8000 Hz (ITU-T G.711); one RTP packet carries 20 ms
(the ``ptime`` both Twilio legs use, RFC 3551 section 4.5 and RFC 4566 section 6), so a
frame is 160 samples: PCM16 mono, 160 ``int16`` values, one byte each once encoded.
Every part of the call path (RTP, Media Streams, VAD, turn-taking, playout,
recordings) counts in these frames.
"""

from __future__ import annotations

import numpy as np

#: Samples per second of a G.711 call (RTP clock rate of PCMU/PCMA, RFC 3551 section 4.5.14).
SAMPLE_RATE = 8000
#: Milliseconds of audio per RTP packet and per frame (``a=ptime:20``).
FRAME_MS = 20
#: Samples per 20 ms frame at 8000 Hz.
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
#: Seconds per frame.
PTIME = FRAME_MS / 1000


class Framer:
    """Cuts audio that arrives in packets of any duration into 20 ms frames.

    RFC 3264 section 5 makes ``a=ptime`` a preference: a peer may send 10, 30 or 60 ms
    per RTP packet whatever we asked for, and everything above the media layer (VAD,
    turn-taking, recordings) counts in 160-sample frames. Sans-IO; keeps at most one
    partial frame between calls.
    """

    def __init__(self) -> None:
        self._rest = np.zeros(0, dtype=np.int16)

    def frames(self, pcm: np.ndarray) -> list[np.ndarray]:
        """``pcm``: PCM16 mono 8000 Hz, any number of samples -> the whole 160-sample
        frames now complete (possibly none), in order."""
        if len(pcm) == FRAME_SAMPLES and not len(self._rest):
            return [pcm]  # the usual case: one 20 ms packet, one frame
        data = np.concatenate([self._rest, pcm]) if len(self._rest) else pcm
        whole = len(data) // FRAME_SAMPLES * FRAME_SAMPLES
        self._rest = data[whole:].copy()
        return [data[i : i + FRAME_SAMPLES] for i in range(0, whole, FRAME_SAMPLES)]

    def reset(self) -> None:
        """Drop a partial frame (a new talkspurt source, hold)."""
        self._rest = np.zeros(0, dtype=np.int16)
