"""The voicemail beep: a run of 20 ms frames that each hold one frequency.

A frame is *tonal* when it is loud enough and at least ``purity`` of its energy lies
within +-40 Hz of its spectral peak (a Hann-windowed FFT, numpy), and that peak is in
the beep band. A beep is a run of tonal frames at one frequency (+-60 Hz from the run's
first frame), at least ``min_ms`` and at most ``max_ms`` long, reported when the run
ends. A longer steady tone (a fax, a dial tone) is no beep. Speech is never tonal for
long: its energy spreads over many harmonics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..audio.wire import FRAME_SAMPLES, SAMPLE_RATE

_FFT = 1024
_BIN_HZ = SAMPLE_RATE / _FFT
_WINDOW = np.hanning(FRAME_SAMPLES)


@dataclass(frozen=True)
class Beep:
    """A beep heard: from ``start`` to ``end`` (seconds of call audio), at ``hz``."""

    start: float
    end: float
    hz: float

    @property
    def ms(self) -> int:
        """The beep's length in milliseconds."""
        return round((self.end - self.start) * 1000)


def tone_of(frame: np.ndarray, min_rms: float = 300.0, purity: float = 0.7) -> float | None:
    """The frequency (Hz) of a tonal frame, or ``None``.

    ``frame``: PCM16 mono 8000 Hz, 160 samples (20 ms). Tonal: RMS at least ``min_rms``
    and at least ``purity`` of the spectrum's energy within +-40 Hz of the peak.
    """
    x = np.asarray(frame, dtype=np.float64)
    if len(x) != FRAME_SAMPLES or np.sqrt(np.mean(x * x)) < min_rms:
        return None
    power = np.abs(np.fft.rfft(x * _WINDOW, _FFT)) ** 2
    total = power.sum()
    if total <= 0:
        return None
    peak = int(np.argmax(power))
    half = int(round(40 / _BIN_HZ))
    near = power[max(0, peak - half) : peak + half + 1].sum()
    if near / total < purity:
        return None
    return peak * _BIN_HZ


class ToneDetector:
    """Finds beeps in a stream of frames (sans-IO: frames in, :class:`Beep` out).

    Args:
        min_hz, max_hz: the beep band.
        min_ms, max_ms: the beep's length bounds.
        purity: see :func:`tone_of`.
        min_rms: the quietest frame that can be tonal (PCM16 RMS).
    """

    def __init__(
        self,
        min_hz: float = 300.0,
        max_hz: float = 2500.0,
        min_ms: int = 100,
        max_ms: int = 1500,
        purity: float = 0.7,
        min_rms: float = 300.0,
    ) -> None:
        self.min_hz, self.max_hz = min_hz, max_hz
        self.min_ms, self.max_ms = min_ms, max_ms
        self.purity, self.min_rms = purity, min_rms
        self._run_hz: float | None = None
        self._run_start = 0.0
        self._run_frames = 0
        #: Whether the last frame was part of a tone run (the caller should not call it speech).
        self.in_tone = False

    def feed(self, frame: np.ndarray, t: float) -> Beep | None:
        """One frame that starts at ``t`` seconds; the beep that ended just before it, if any."""
        hz = tone_of(frame, self.min_rms, self.purity)
        if hz is not None and not (self.min_hz <= hz <= self.max_hz):
            hz = None
        if hz is not None and self._run_hz is not None and abs(hz - self._run_hz) <= 60:
            self._run_frames += 1
            self.in_tone = True
            return None
        beep = None
        if self._run_hz is not None:
            ms = self._run_frames * FRAME_SAMPLES * 1000 / SAMPLE_RATE
            if self.min_ms <= ms <= self.max_ms:
                beep = Beep(self._run_start, t, round(self._run_hz))
        self._run_hz, self._run_start, self._run_frames = (hz, t, 1) if hz is not None else (None, 0.0, 0)
        self.in_tone = hz is not None
        return beep
