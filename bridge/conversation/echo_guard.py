"""Telling the caller's voice from the agent's own voice coming back (echo).

Phone lines echo: speakerphones, 2-wire hybrids, no echo cancellation on
the PSTN. We know exactly what we sent and when, so an inbound frame that is
our own recent audio, delayed and attenuated, is not caller speech
(docs/turn-taking.md). The test is a normalized cross-correlation between the
last few inbound frames and the audio we sent over the last ``max_delay_ms``:
an echo correlates strongly (> ``threshold``) at some lag whatever its level;
a caller talking over the agent (double talk) does not.

Computation: FFT cross-correlation (numpy), about 0.1 ms per 20 ms frame, and
only while the agent has spoken within ``max_delay_ms``.
"""

from __future__ import annotations

import collections

import numpy as np

FRAME = 160  # samples per 20 ms at 8000 Hz


class EchoGuard:
    """Keeps the recently sent agent audio and classifies inbound frames.

    Args:
        max_delay_ms: the longest echo path considered (network + line), ms.
        window_frames: inbound frames compared at once (60 ms by default).
        threshold: normalized correlation above which a frame is echo (0..1).
    """

    def __init__(self, max_delay_ms: int = 600, window_frames: int = 3, threshold: float = 0.55) -> None:
        self.ref_frames = max_delay_ms // 20 + window_frames
        self.window_frames = window_frames
        self.threshold = threshold
        self._sent: collections.deque[np.ndarray] = collections.deque(maxlen=self.ref_frames)
        self._recv: collections.deque[np.ndarray] = collections.deque(maxlen=window_frames)
        self._loud_sent = 0  # sent frames with energy among the last ref_frames
        self._silence = np.zeros(FRAME, dtype=np.float32)
        self.last_correlation = 0.0

    def note_sent(self, frame: np.ndarray | None) -> None:
        """Record what went out in this 20 ms slot (``None`` for nothing/silence)."""
        if len(self._sent) == self._sent.maxlen and np.any(self._sent[0]):
            self._loud_sent -= 1
        if frame is None:
            self._sent.append(self._silence)
        else:
            f = np.asarray(frame, dtype=np.float32)
            self._sent.append(f)
            if np.any(f):
                self._loud_sent += 1

    def clear(self) -> None:
        """Forget the audio kept (the call ended)."""
        self._sent.clear()
        self._recv.clear()
        self._loud_sent = 0

    def note_received(self, frame: np.ndarray) -> None:
        """Record one inbound 20 ms frame (PCM16, 160 samples)."""
        self._recv.append(np.asarray(frame, dtype=np.float32))

    @property
    def active(self) -> bool:
        """Whether the agent spoke recently enough for an echo to be arriving."""
        return self._loud_sent > 0

    def is_echo(self) -> bool:
        """Whether the latest inbound frames are (mostly) our own audio coming back."""
        if not self.active or len(self._recv) < self.window_frames:
            self.last_correlation = 0.0
            return False
        x = np.concatenate(self._recv)
        ref = np.concatenate(self._sent)
        n, m = len(ref), len(x)
        if n < m:
            return False
        x = x - x.mean()
        x_energy = float(np.dot(x, x))
        if x_energy <= 1e-6:
            return False
        size = 1 << (n + m - 1).bit_length()
        corr = np.fft.irfft(np.fft.rfft(ref, size) * np.conj(np.fft.rfft(x, size)), size)[: n - m + 1]
        # Energy of each reference window of length m (sliding sum of squares).
        csum = np.concatenate(([0.0], np.cumsum(ref.astype(np.float64) ** 2)))
        window_energy = csum[m:] - csum[:-m]
        # Only windows where we actually sent sound (RMS > 30): silent windows
        # would divide FFT round-off by nothing.
        valid = window_energy > m * 30.0**2
        if not np.any(valid):
            self.last_correlation = 0.0
            return False
        score = float(np.max(np.abs(corr[valid]) / np.sqrt(window_energy[valid] * x_energy)))
        self.last_correlation = score
        return score >= self.threshold
