"""``bridge bench models``: each stage of a model set, on the same utterances.

The caller's questions are spoken by the embedded Piper voice with its randomness off
(so every preset hears the same audio), resampled to 8 kHz and passed through G.711
mu-law (:func:`bridge.evaluation.voices.telephone`), then:

- ASR: one pass per utterance (seconds per pass) and its word error rate (jiwer);
- LLM: the agent's prompt for that question in the preset's ``llm_mode``: time to the
  first token, time to the first complete sentence (what the conversation speaks
  first), tokens per second after the first;
- TTS: a receptionist's reply per run: time to the first audio chunk and real-time
  factor (synthesis time / audio time);
- memory: resident set after loading the models, and the process's peak.

The voice-to-voice budget adds, stage after stage, what one turn waits for: the
endpointing silence (``agent.endpoint_fast_ms``, a finished question), the final ASR
pass, the LLM's first sentence and the TTS's first audio (p50 of each). The running
conversation overlaps some of it (speculative ASR during the silence), so the sum is
the serial upper bound, comparable between presets.
"""

from __future__ import annotations

import resource
import statistics
import time
from threading import Event

from . import percentile
from .calls import QUESTIONS

#: Replies of a receptionist's length, for the TTS figures (the same for every preset).
REPLIES = [
    "We are open from nine in the morning until five in the evening.",
    "A standard cleaning costs eighty dollars.",
    "You can park behind the building, and parking is free.",
    "I can book you in for Monday at ten. Does that work for you?",
    "Yes, we are taking new patients this month.",
    "Please hold while I put you through.",
]

STAGES = ("endpoint", "asr", "llm", "tts")
STAGE_NAMES = {
    "endpoint": "endpointing silence",
    "asr": "ASR final pass",
    "llm": "LLM first sentence",
    "tts": "TTS first audio",
}


def _llm_turn(llm, agent, text: str) -> tuple[float, float, int, float, str]:
    """``(first token s, first sentence s, tokens, total s, reply)`` for one question."""
    from ..conversation.prompt import build_chat_messages, build_completion_prompt, stop_sequences
    from ..conversation.sentences import first_sentence

    transcript = [("caller", text)]
    if agent.llm_mode == "chat":
        pieces = llm.stream_chat(build_chat_messages(agent, transcript), agent.max_tokens, agent.temperature, Event())
    else:
        pieces = llm.stream(
            build_completion_prompt(agent, transcript),
            stop_sequences(agent),
            agent.max_tokens,
            agent.temperature,
            Event(),
            repeat_penalty=agent.repeat_penalty,
            presence_penalty=agent.presence_penalty,
        )
    started = time.perf_counter()
    first = sentence = None
    tokens, reply = 0, ""
    for piece in pieces:
        if not isinstance(piece, str):  # a tool call: the turn's answer is an action
            sentence = sentence or time.perf_counter() - started
            continue
        tokens += 1
        reply += piece
        now = time.perf_counter() - started
        first = first if first is not None else now
        if sentence is None and first_sentence(reply + " ") is not None:
            sentence = now
    total = time.perf_counter() - started
    return (
        (first if first is not None else total),
        (sentence if sentence is not None else total),
        tokens,
        total,
        reply.strip(),
    )


def bench_stages(settings, runs: int = 5, label: str = "configured") -> dict:
    """Measure ASR, LLM and TTS of the models ``settings`` names (``runs`` utterances, at
    most 6). Returns the figures (seconds, MB) under ``asr``, ``llm``, ``tts``, ``memory``
    and ``budget``."""
    from ..engines.tts import PiperTts, embedded_voice_paths
    from ..evaluation.scoring import word_error_rate
    from ..evaluation.voices import voice
    from ..memory import rss_mb
    from ..warmup import load_warm_engines

    runs = max(1, min(runs, len(QUESTIONS)))
    agent = settings.agent
    before = rss_mb()
    started = time.perf_counter()
    engines = load_warm_engines(settings)
    load_s = time.perf_counter() - started
    loaded_mb = rss_mb() - before
    speak = voice(
        "piper", PiperTts(*embedded_voice_paths()), deterministic=True
    )  # the caller: the same for every preset
    utterances = [(text, speak(text)) for text in QUESTIONS[:runs]]

    asr = engines.asr
    asr.transcribe(utterances[0][1])  # warm-up pass
    asr_s, wers, heard = [], [], []
    for text, pcm in utterances:
        t0 = time.perf_counter()
        got = asr.transcribe(pcm)
        asr_s.append(time.perf_counter() - t0)
        wers.append(word_error_rate(text, got))
        heard.append({"said": text, "heard": got})

    ttft, first_sentence_s, tps, replies = [], [], [], []
    for text in QUESTIONS[:runs]:
        first, sentence, tokens, total, reply = _llm_turn(engines.llm, agent, text)
        ttft.append(first)
        first_sentence_s.append(sentence)
        if tokens > 1 and total > first:
            tps.append((tokens - 1) / (total - first))
        replies.append({"asked": text, "reply": reply})

    tts_first, tts_rtf = [], []
    for text in REPLIES[:runs]:
        t0 = time.perf_counter()
        first, samples = None, 0
        for chunk in engines.tts.synthesize(text):
            first = first if first is not None else time.perf_counter() - t0
            samples += len(chunk)
        tts_first.append(first or 0.0)
        tts_rtf.append((time.perf_counter() - t0) / (samples / engines.tts.sample_rate))

    m = settings.models
    budget = {  # each stage's p50, reported below as well
        "endpoint": agent.endpoint_fast_ms / 1000,
        "asr": percentile(asr_s, 0.5),
        "llm": percentile(first_sentence_s, 0.5),
        "tts": percentile(tts_first, 0.5),
    }
    budget["total"] = sum(budget[s] for s in STAGES)
    return {
        "label": label,
        "device": engines.device,
        "runs": runs,
        "load_seconds": round(load_s, 2),
        "models": {
            "asr": m.asr,
            "llm": m.openai_base_url if m.llm_backend == "openai" else m.llm,
            "tts": m.tts,
            "llm_mode": agent.llm_mode,
        },
        "asr": {
            "pass_p50": budget["asr"],
            "pass_mean": statistics.mean(asr_s),
            "wer_mean": statistics.mean(wers),
            "samples": heard,
        },
        "llm": {
            "first_token_p50": percentile(ttft, 0.5),
            "first_sentence_p50": budget["llm"],
            "tokens_per_s_mean": statistics.mean(tps) if tps else float("nan"),
            "samples": replies,
        },
        "tts": {"first_audio_p50": budget["tts"], "rtf_mean": statistics.mean(tts_rtf)},
        "memory": {
            "models_mb": round(loaded_mb, 1),
            "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        },
        "budget": budget,
    }


ROWS = [
    ("device", lambda r: r["device"], "{}"),
    ("models loaded in (s)", lambda r: r["load_seconds"], "{:.2f}"),
    ("ASR s per pass, p50", lambda r: r["asr"]["pass_p50"], "{:.3f}"),
    ("ASR word error rate, mean", lambda r: r["asr"]["wer_mean"], "{:.1%}"),
    ("LLM first token, p50 (s)", lambda r: r["llm"]["first_token_p50"], "{:.3f}"),
    ("LLM first sentence, p50 (s)", lambda r: r["llm"]["first_sentence_p50"], "{:.3f}"),
    ("LLM tokens/s, mean", lambda r: r["llm"]["tokens_per_s_mean"], "{:.1f}"),
    ("TTS first audio, p50 (s)", lambda r: r["tts"]["first_audio_p50"], "{:.3f}"),
    ("TTS real-time factor, mean", lambda r: r["tts"]["rtf_mean"], "{:.3f}"),
    ("RSS of the models (MB)", lambda r: r["memory"]["models_mb"], "{:.0f}"),
    ("peak RSS (MB)", lambda r: r["memory"]["peak_mb"], "{:.0f}"),
    ("voice-to-voice budget (s)", lambda r: r["budget"]["total"], "{:.3f}"),
]


def print_stages(results: list[dict]) -> None:
    """One column per preset (a failed one shows its error), one row per figure."""
    width = max(14, *(len(r["label"]) + 2 for r in results))
    print(f"{'':30}" + "".join(f"{r['label']:>{width}}" for r in results))
    for name, get, fmt in ROWS:
        cells = []
        for r in results:
            cells.append("-" if "error" in r else fmt.format(get(r)))
        print(f"{name:30}" + "".join(f"{c:>{width}}" for c in cells))
    for r in results:
        if "error" in r:
            print(f"{r['label']}: not run: {r['error']}")
            continue
        print(
            f"{r['label']}: ASR {r['models']['asr']}, LLM {r['models']['llm']} ({r['models']['llm_mode']}), TTS {r['models']['tts']}; {r['runs']} runs"
        )
        for sample in r["asr"]["samples"]:
            print(f"  ASR said {sample['said']!r} heard {sample['heard']!r}")
