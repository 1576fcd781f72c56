"""Issue 13's single-call latency levers, against the real engines: the LLM evaluates
the prompt up to the caller's coming line while the caller speaks (priming), and an
utterance starts with its first sound, not with the TTS voice's leading silence."""

from __future__ import annotations

import threading
import time

import numpy as np

from bridge.config import load_settings
from bridge.conversation.playout import ONSET_MARGIN, trim_leading_silence
from bridge.conversation.prompt import build_completion_prompt, completion_prompt_prefix

HISTORY = [
    ("agent", "Hello, this is Sam, how can I help you?"),
    ("caller", "What time do you open on Saturday?"),
    ("agent", "On Saturday we are open from 9 am to 1 pm."),
]


def test_the_prefix_is_what_the_next_prompt_starts_with():
    agent = load_settings(None).agent
    prefix = completion_prompt_prefix(agent, HISTORY)
    for line in ("How much is a cleaning?", "Where do I park?"):
        prompt = build_completion_prompt(agent, [*HISTORY, ("caller", line)])
        assert prompt.startswith(prefix)
        assert prompt[len(prefix) :].startswith(f"Caller: {line}")
    assert "On Saturday we are open" in prefix  # the history is in it


def test_priming_runs_when_the_model_is_free_and_not_when_it_is_busy(engines):
    agent = load_settings(None).agent
    llm = engines.llm
    prefix = completion_prompt_prefix(agent, HISTORY)
    assert llm.prime(prefix) is True
    for _ in range(200):  # priming does not wait for the evaluation
        if llm.cached(prefix):
            break
        time.sleep(0.02)
    # A slot's KV cache now holds the prefix: the next prompt re-evaluates only its tail.
    assert llm.cached(prefix)
    # Every slot busy generating: priming would only displace a cache, so nothing.
    never = threading.Event()
    streams = [
        llm.stream(f"Note {i}: the longest list of words you know is", [], 40, 0.0, never) for i in range(llm.parallel)
    ]
    for s in streams:
        next(s)
    try:
        assert llm.prime(prefix + "Caller:") is False
    finally:
        for s in streams:
            s.close()


def test_leading_silence_is_cut_to_the_margin():
    pcm = np.concatenate(
        [np.zeros(400, np.int16), np.full(50, 3, np.int16), (np.sin(np.arange(800) / 3) * 8000).astype(np.int16)]
    )
    out = trim_leading_silence(pcm)
    first_loud = int(np.flatnonzero(np.abs(pcm) > 200)[0])
    assert len(out) == len(pcm) - (first_loud - ONSET_MARGIN)
    assert np.array_equal(out[ONSET_MARGIN:], pcm[first_loud:])
    silent = np.zeros(300, np.int16)
    assert trim_leading_silence(silent) is silent


class _PrimeLog:
    """The real LLM engine, with a record of the prefixes it was asked to prime."""

    def __init__(self, llm) -> None:
        self._llm = llm
        self.primed: list[str] = []

    def prime(self, prefix: str) -> bool:
        self.primed.append(prefix)
        return self._llm.prime(prefix)

    def __getattr__(self, name: str):
        return getattr(self._llm, name)


async def test_a_conversation_primes_when_the_caller_starts_speaking(engines):
    import asyncio

    from bridge.conversation.engine import Conversation
    from bridge.engines import Engines
    from bridge.evaluation.harness import RecordingLeg
    from bridge.evaluation.voices import voice

    agent = load_settings(None).agent.model_copy(update={"greeting": "", "reprompt_after_s": 0})
    llm = _PrimeLog(engines.llm)
    spied = Engines(engines.vad_factory, engines.asr, llm, engines.tts, engines.device, engines.phrases, engines.turn)
    conv = Conversation(spied, agent, RecordingLeg("prime"))
    conv.start()
    pcm = voice("espeak", engines.tts)("Hello there.")
    try:
        for i in range(0, len(pcm) - 160, 160):
            conv.feed_audio(pcm[i : i + 160])
            await asyncio.sleep(0)
            if llm.primed:
                break
        for _ in range(100):  # the priming pass runs in a worker thread
            if llm.primed:
                break
            await asyncio.sleep(0.01)
        assert llm.primed == [completion_prompt_prefix(agent, conv.transcript())]
    finally:
        await conv.close()
