"""Adapters for the VAD, ASR, LLM and TTS engines, behind small Protocols.

Each engine is a plain class (composition, no base class). Inference methods
are blocking and meant to run in a worker thread (``asyncio.to_thread``);
every adapter serializes access to its model with a lock, so one loaded model
serves all calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from threading import Event
from typing import Protocol

import numpy as np

from .phrases import PhraseCache

log = logging.getLogger("bridge.engines")


class Vad(Protocol):
    def is_speech(self, frame: np.ndarray) -> bool:
        """``frame``: PCM16 mono 8000 Hz, 160 samples (20 ms)."""


class Asr(Protocol):
    def transcribe(self, pcm: np.ndarray) -> str:
        """``pcm``: PCM16 mono 8000 Hz int16 array, any length -> text."""


class Llm(Protocol):
    def stream(self, prompt: str, stop: list[str], max_tokens: int, temperature: float, cancel: Event) -> Iterator[str]:
        """Yield text pieces of the completion of ``prompt``; stop early when ``cancel`` is set."""


class Tts(Protocol):
    sample_rate: int

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        """Yield PCM16 mono chunks at ``sample_rate`` Hz for ``text``."""


@dataclass
class Engines:
    """The loaded engines shared by all calls. ``vad_factory`` makes one VAD per call."""

    vad_factory: object
    asr: Asr
    llm: Llm
    tts: Tts
    device: str
    #: Fixed phrases (greeting, goodbye, ...) synthesized once, as 8 kHz PCM.
    phrases: "PhraseCache" = field(default_factory=lambda: PhraseCache())


def _cuda_devices() -> int:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count()
    except Exception:  # noqa: BLE001 - any failure to probe means no usable GPU
        return 0


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when CTranslate2 sees a CUDA device, else ``cpu``.

    ``cuda`` without a usable device also falls back to ``cpu``, with a warning.
    """
    if requested == "cpu":
        return "cpu"
    if _cuda_devices() > 0:
        log.info("models: CUDA device found: faster-whisper float16, llama.cpp GPU layers, Piper CUDA provider")
        return "cuda"
    if requested == "cuda":
        log.warning("models: device cuda requested but no CUDA device is usable: falling back to CPU")
    else:
        log.info("models: no CUDA device found, running on CPU")
    return "cpu"


def load_engines(settings) -> Engines:
    """Load every engine named in ``settings.models`` (a :class:`bridge.config.ModelSettings` owner).

    Raises:
        FileNotFoundError: a configured model path does not exist.
    """
    from .asr import WhisperAsr
    from .llm import LlamaCppLlm
    from .tts import PiperTts
    from .vad import silero_vad_factory, webrtc_vad_factory

    m = settings.models
    device = resolve_device(m.device)
    asr = WhisperAsr.from_settings(m, device, settings.agent)
    if m.llm_backend == "openai":
        from .openai_llm import OpenAiLlm

        llm = OpenAiLlm.from_settings(m, device)
    else:
        llm = LlamaCppLlm.from_settings(m, device)
    tts = PiperTts.from_settings(m, device)
    agent = settings.agent
    if agent.kind == "llm" and agent.llm_mode == "completion" and hasattr(llm, "warm"):
        from ..conversation.prompt import build_completion_prompt

        started = time.monotonic()
        llm.warm(build_completion_prompt(agent, []))  # persona, facts and examples: every prompt starts so
        log.info("llm: prompt prefix evaluated in %.1f s", time.monotonic() - started)
    vad = silero_vad_factory(agent.silero_threshold) if agent.vad == "silero" else webrtc_vad_factory(agent.vad_aggressiveness)
    return Engines(vad, asr, llm, tts, device)
