"""Warm every model the way a call uses it, before the first call arrives.

A model's first run is slower than the next ones: CTranslate2 allocates its buffers for
each encoder window on the first pass of that shape, llama.cpp evaluates the persona
prompt (~600 tokens) and builds its graphs on the first decode, onnxruntime plans its
first run. Left to the first caller, that is their first turn's latency. So at start,
:func:`warm_engines` runs an ASR pass in every encoder window, an end-of-turn
decision, the LLM's prompt prefix and a short reply decoded, and synthesizes the agent's
fixed phrases into the phrase cache (the greeting is then ready for the first call too).

It sits above the conversation in the layer rule (docs/architecture.md): it builds the
prompts a call would, with :mod:`bridge.conversation.prompt`.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from .audio.resample import resample_all
from .conversation.prompt import build_completion_prompt, completion_prompt_prefix, stop_sequences
from .engines import Engines, load_engines

log = logging.getLogger("bridge.engines")


def load_warm_engines(settings, shared: dict | None = None) -> Engines:
    """:func:`bridge.engines.load_engines`, then :func:`warm_engines` for ``settings.agent``:
    what a server, a route or a benchmark loads before its first call.

    Raises:
        FileNotFoundError: a configured model path does not exist.
    """
    engines = load_engines(settings, shared)
    warm_engines(engines, settings.agent)
    return engines


def synthesize_8k(tts, text: str) -> np.ndarray:
    """``text`` through the TTS engine, as PCM16 mono 8000 Hz (resampled with PyAV)."""
    chunks = list(tts.synthesize(text))
    if not chunks:
        return np.zeros(0, dtype=np.int16)
    return resample_all(np.concatenate(chunks), tts.sample_rate, 8000)


def warm_engines(engines, agent) -> dict[str, float]:
    """Run each of ``engines``' models once as a call would, for ``agent`` (its greeting,
    phrases and prompt). Returns the seconds each part took (``tts``, ``asr``, ``turn``,
    ``llm``). Failures are logged, not raised: a model that cannot warm up fails the same
    way on the first call, with the apology (:mod:`bridge.conversation.failures`)."""
    spent: dict[str, float] = {}

    def timed(name: str, fn) -> object:
        started = time.monotonic()
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - logged; the call path reports the same failure
            log.warning("warm-up: %s failed: %s", name, exc)
            return None
        finally:
            spent[name] = round(time.monotonic() - started, 2)

    phrases = [p for p in (agent.greeting, agent.goodbye, agent.reprompt, agent.fallback, agent.error_apology) if p]
    speech = timed("tts", lambda: [engines.phrases.get(p, lambda t: synthesize_8k(engines.tts, t)) for p in phrases])
    voice = (
        speech[0]
        if speech
        else synthesize_8k(engines.tts, "Hello, I would like to book an appointment for a cleaning.")
    )
    asr = engines.asr
    batcher = getattr(asr, "batcher", None)
    if batcher is not None:
        # one pass in each encoder window: audio just short enough for it
        lengths = [int(w * 8000 / batcher.headroom) for w in sorted(batcher.windows)]
    else:
        lengths = [len(voice)]
    timed("asr", lambda: [asr.transcribe(np.pad(voice[:n], (0, max(0, n - len(voice))))) for n in lengths])
    turn = getattr(engines, "turn", None)
    if turn is not None:
        timed("turn", lambda: turn.probability(voice))
    llm = engines.llm
    if agent.kind == "llm" and agent.llm_mode == "completion" and hasattr(llm, "warm"):

        def llm_warm() -> None:
            llm.warm(build_completion_prompt(agent, []))  # persona, facts and examples: every prompt starts so
            if hasattr(llm, "end_probability"):
                llm.end_probability(completion_prompt_prefix(agent, []) + "Caller: Hello, are you open today")
            prompt = build_completion_prompt(agent, [("caller", "Hello, are you open today?")])
            for _ in llm.stream(prompt, stop_sequences(agent), 8, 0.0, threading.Event()):
                pass

        timed("llm", llm_warm)
    log.info(
        "models warmed up in %.1f s (%s)", sum(spent.values()), ", ".join(f"{k} {v:.2f} s" for k, v in spent.items())
    )
    return spent
