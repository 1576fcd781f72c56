"""Sample-rate conversion of mono PCM16: PyAV's ``AudioResampler`` (FFmpeg swresample).

Used wherever audio crosses the 8000 Hz line: Piper's 22050 Hz voice into 20 ms frames,
8 kHz calls into Whisper's and webrtcvad's 16 kHz, Opus's 48 kHz on the browser leg.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np


class Resampler:
    """Mono PCM16 sample-rate converter (FFmpeg swresample via PyAV).

    Stateful: feed consecutive chunks of one stream; call :meth:`flush` at the
    end to get the filter's tail. Not thread-safe; use one per stream.

    Args:
        src_rate: input rate in Hz.
        dst_rate: output rate in Hz.
    """

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=dst_rate)
        self._pts = 0

    def _collect(self, frames: list[av.AudioFrame]) -> np.ndarray:
        parts = [f.to_ndarray().reshape(-1) for f in frames]
        return np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, dtype=np.int16)

    def resample(self, pcm: np.ndarray) -> np.ndarray:
        """int16 samples at ``src_rate`` -> int16 samples at ``dst_rate`` (may lag by the filter delay)."""
        pcm = np.ascontiguousarray(pcm, dtype=np.int16)
        if pcm.size == 0:
            return np.zeros(0, dtype=np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.src_rate
        frame.time_base = Fraction(1, self.src_rate)
        frame.pts = self._pts
        self._pts += pcm.size
        return self._collect(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        """The remaining buffered output samples (int16 at ``dst_rate``)."""
        return self._collect(self._resampler.resample(None))


def resample_all(pcm: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample one whole mono int16 signal from ``src_rate`` to ``dst_rate`` Hz."""
    if src_rate == dst_rate:
        return np.asarray(pcm, dtype=np.int16)
    r = Resampler(src_rate, dst_rate)
    out = r.resample(pcm)
    return np.concatenate([out, r.flush()])
