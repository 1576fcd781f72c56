"""Smart Turn v3: an end-of-turn model that listens to how an utterance ends.

Silence alone cannot tell "I'd like to book a cleaning for... [thinking] ...next
Tuesday" from a finished question; the way a phrase ends (pitch, lengthening, the
words) can. Smart Turn v3 (Daily, BSD-2-Clause, https://github.com/pipecat-ai/smart-turn)
is a Whisper-tiny encoder with a classification head, 8.7 MB as ONNX, that gives the
probability that the speaker has finished, from the last 8 s of 16 kHz audio.

The model and its numpy feature extractor ship inside the ``pipecat-ai`` wheel
(``pipecat/audio/turn/smart_turn/``, the same license). Only those two files are used,
loaded by path: importing ``pipecat`` itself would pull its framework (logging setup,
a version banner) into the server for nothing. The audio is a phone line's 8 kHz,
resampled to 16 kHz with FFmpeg (PyAV); ``bridge bench turns`` measures what the model
is worth on it (:mod:`bridge.benchmarks.turns`).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np

from ..audio.resample import resample_all

log = logging.getLogger("bridge.engines.turn")

MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
#: Seconds of audio the model hears: the end of the utterance, zero-padded in front.
WINDOW_S = 8


def smart_turn_files() -> tuple[Path, Path]:
    """``(model.onnx, _whisper_features.py)`` inside the installed ``pipecat-ai`` wheel.

    Raises:
        ModuleNotFoundError: ``pipecat-ai`` is not installed.
        FileNotFoundError: the wheel does not carry the model (another version).
    """
    spec = importlib.util.find_spec("pipecat")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("pipecat-ai is not installed (it carries the Smart Turn v3 model)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "audio" / "turn" / "smart_turn"
    model, features = folder / "data" / MODEL_FILE, folder / "_whisper_features.py"
    for path in (model, features):
        if not path.exists():
            raise FileNotFoundError(f"Smart Turn file not found: {path}")
    return model, features


class SmartTurn:
    """Probability that an utterance is a finished turn, from its audio.

    Args:
        threads: onnxruntime intra-op threads (1: the model is small, and ASR and the
            LLM run beside it).

    Raises:
        ModuleNotFoundError, FileNotFoundError: see :func:`smart_turn_files`.
    """

    sample_rate = 16000

    def __init__(self, threads: int = 1) -> None:
        import onnxruntime

        model, features = smart_turn_files()
        spec = importlib.util.spec_from_file_location("bridge_smart_turn_features", features)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self._features = module.compute_whisper_log_mel_features
        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = threads
        options.enable_cpu_mem_arena = False  # the input is fixed-size, but keep RSS flat as for Piper
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        log.info("turn: Smart Turn v3 %s", model.name)

    def probability(self, pcm: np.ndarray) -> float:
        """``pcm``: PCM16 mono 8000 Hz (int16), the utterance so far -> P(the turn is over), 0..1.

        Only the last 8 s count; shorter audio is zero-padded in front, as the model was
        trained. Thread-safe (one onnxruntime session serves every call).
        """
        audio = resample_all(np.asarray(pcm, dtype=np.int16), 8000, self.sample_rate).astype(np.float32) / 32768.0
        n = WINDOW_S * self.sample_rate
        audio = audio[-n:]
        if len(audio) < n:
            audio = np.pad(audio, (n - len(audio), 0))
        features = self._features(audio, do_normalize=True)[None]
        out = self._session.run(None, {"input_features": features})[0]
        return float(np.asarray(out).reshape(-1)[0])
