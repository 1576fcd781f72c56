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


class SileroVad:
    """Silero VAD v6 (the ONNX model shipped inside faster-whisper), streaming.

    Frames (PCM16 8 kHz, 160 samples) are resampled to 16 kHz (PyAV) and fed
    in the model's 512-sample windows with its 64-sample context and LSTM
    state carried from window to window; a frame is speech while the last
    window's probability is at least ``threshold``.

    Args:
        session: a shared ``onnxruntime.InferenceSession`` of the model
            (``run`` is thread-safe, so one serves every call).
        threshold: speech probability threshold (0..1).
    """

    WINDOW = 512
    CONTEXT = 64

    def __init__(self, session, threshold: float = 0.5) -> None:
        from ..audio.resample import Resampler

        self.session = session
        self.threshold = threshold
        self._resampler = Resampler(8000, 16000)
        self._buffer = np.zeros(0, dtype=np.float32)
        self._context = np.zeros(self.CONTEXT, dtype=np.float32)
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self.probability = 0.0

    def is_speech(self, frame: np.ndarray) -> bool:
        """``frame``: PCM16 mono 8000 Hz, 160 samples (20 ms)."""
        pcm = self._resampler.resample(np.asarray(frame, dtype=np.int16)).astype(np.float32) / 32768.0
        self._buffer = np.concatenate([self._buffer, pcm])
        while len(self._buffer) >= self.WINDOW:
            chunk, self._buffer = self._buffer[: self.WINDOW], self._buffer[self.WINDOW :]
            window = np.concatenate([self._context, chunk])[None, :]
            out, self._h, self._c = self.session.run(None, {"input": window, "h": self._h, "c": self._c})
            self.probability = float(np.asarray(out).reshape(-1)[0])
            self._context = chunk[-self.CONTEXT :]
        return self.probability >= self.threshold


def silero_vad_factory(threshold: float = 0.5):
    """A callable that makes a :class:`SileroVad` per call, sharing one ONNX session."""
    import os

    import faster_whisper
    import onnxruntime

    path = os.path.join(os.path.dirname(faster_whisper.__file__), "assets", "silero_vad_v6.onnx")
    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    options.log_severity_level = 4
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"], sess_options=options)
    return lambda: SileroVad(session, threshold)
