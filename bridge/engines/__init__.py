"""Adapters for the VAD, ASR, LLM and TTS engines, behind small Protocols.

Each engine is a plain class (composition, no base class). Inference methods
are blocking and meant to run in a worker thread (``asyncio.to_thread``), and one
loaded model serves every call: calls take the in-process LLM in arrival order and
decode together as sequences of one batch (:mod:`.llm`); ASR passes that coincide
run as one batch (:mod:`.asr_batch`); Piper takes calls one at a time on the CPU in
arrival order (:mod:`.fifo`), concurrently on CUDA; Smart Turn's and Silero's
onnxruntime sessions are thread-safe; the OpenAI-compatible backend leaves
concurrency to its server.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from threading import Event
from typing import Protocol

import numpy as np

from .asr_batch import Transcript
from .phrases import PhraseCache

log = logging.getLogger("bridge.engines")


class Vad(Protocol):
    def is_speech(self, frame: np.ndarray) -> bool:
        """``frame``: PCM16 mono 8000 Hz, 160 samples (20 ms)."""


class Asr(Protocol):
    def transcribe(self, pcm: np.ndarray, previous: str = "") -> str:
        """``pcm``: PCM16 mono 8000 Hz int16 array, any length -> text; ``previous``: what
        was said just before (context for the recognizer)."""

    def hear(self, pcm: np.ndarray, previous: str = "") -> Transcript:
        """Like :meth:`transcribe`, with how sure the recognizer was
        (:class:`~.asr_batch.Transcript`)."""


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
    phrases: PhraseCache = field(default_factory=lambda: PhraseCache())
    #: The end-of-turn model on the audio (:class:`bridge.engines.turn.SmartTurn`), or ``None``.
    turn: object = None


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


def model_keys(m, device: str) -> dict[str, tuple]:
    """The keys under which :func:`load_engines` shares loaded models: one per model
    file (or server) and device, for ``asr``, ``llm``, ``tts`` and the TTS's ``phrases``."""
    from .asr import asr_batch, asr_model_path

    compute = m.asr_compute_type if device == "cpu" else "float16"
    llm = (
        ("llm", "openai", m.openai_base_url, m.openai_model)
        if m.llm_backend == "openai"
        else ("llm", m.llm, m.cache_dir, m.llm_context, m.llm_threads, m.llm_gpu_layers, m.llm_parallel, device)
    )
    tts = ("tts", m.tts, m.cache_dir, device)
    asr = (
        "asr",
        str(asr_model_path(m)),
        device,
        compute,
        asr_batch(m, device),
        tuple(m.asr_windows),
        m.asr_window_headroom,
    )
    return {"asr": asr, "llm": llm, "tts": tts, "phrases": ("phrases", *tts[1:])}


def load_engines(settings, shared: dict | None = None) -> Engines:
    """Load every engine named in ``settings.models`` for ``settings.agent`` (any owner of
    a :class:`bridge.config.ModelSettings` and an :class:`bridge.config.AgentSettings`).

    Args:
        shared: models already loaded, by file and device (several agent profiles
            pass the same dict: a model file is loaded once and shared, each profile
            keeping its own ASR prompt and beam). ``None``: load everything.

    Raises:
        FileNotFoundError: a configured model path does not exist.
    """
    from ..offline import lock_down

    lock_down()  # before any library that could phone home is loaded
    from .asr import WhisperAsr, asr_model_path
    from .asr_hints import initial_prompt
    from .llm import LlamaCppLlm
    from .tts import PiperTts
    from .vad import silero_vad_factory, webrtc_vad_factory

    shared = {} if shared is None else shared

    def once(key: tuple, make):
        if key not in shared:
            shared[key] = make()
        return shared[key]

    m, agent = settings.models, settings.agent
    device = resolve_device(m.device)
    keys = model_keys(m, device)
    compute = keys["asr"][3]
    whisper = once(
        keys["asr"],
        lambda: WhisperAsr(
            asr_model_path(m), device, compute, batch=keys["asr"][4], windows=keys["asr"][5], headroom=keys["asr"][6]
        ),
    )
    asr = whisper.variant(beam_size=m.asr_beam_size, initial_prompt=initial_prompt(m, agent))
    if m.llm_backend == "openai":
        from .openai_llm import OpenAiLlm

        llm = once(keys["llm"], lambda: OpenAiLlm.from_settings(m, device))
    else:
        llm = once(keys["llm"], lambda: LlamaCppLlm.from_settings(m, device))
    tts = once(keys["tts"], lambda: PiperTts.from_settings(m, device))
    phrases = once(keys["phrases"], PhraseCache)
    turn = None
    if agent.turn_audio_threshold > 0:
        from .turn import SmartTurn

        turn = once(("turn",), SmartTurn)
    vad = (
        silero_vad_factory(agent.silero_threshold)
        if agent.vad == "silero"
        else webrtc_vad_factory(agent.vad_aggressiveness)
    )
    # Warming the models up the way a call uses them is the caller's step
    # (bridge.warmup.load_warm_engines): it needs the conversation's prompts.
    return Engines(vad, asr, llm, tts, device, phrases, turn)
