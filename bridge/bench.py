"""``bridge bench models`` and ``bridge bench calls``: benchmarks that print tables and write JSON.

They measure; they assert nothing (tests never assert wall-clock times).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from .media.codecs import G711, resample_all

QUESTIONS = [
    "What time do you open on Saturday?",
    "How much does a cleaning cost?",
    "Where is the clinic?",
    "Can I book an appointment for Monday morning?",
    "Do you take new patients?",
    "Is there parking near the clinic?",
]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def _telephone(pcm_22k: np.ndarray, rate: int) -> np.ndarray:
    """Speech as it arrives over a phone line: 8 kHz, through G.711 mu-law."""
    codec = G711("PCMU")
    return codec.decode(codec.encode(resample_all(pcm_22k, rate, 8000)))


def bench_models(settings, runs: int = 5) -> dict:
    """ASR real-time factor, LLM time to first token and tokens/s, TTS time to first
    audio and real-time factor, for the models ``settings`` names. Returns the figures."""
    from .conversation.prompt import build_completion_prompt, stop_sequences
    from .engines import load_engines

    started = time.perf_counter()
    engines = load_engines(settings)
    load_s = time.perf_counter() - started
    tts, asr, llm = engines.tts, engines.asr, engines.llm

    # TTS: first audio and real-time factor, one sentence at a time.
    tts_first, tts_rtf, utterances = [], [], []
    for text in QUESTIONS[:runs]:
        t0 = time.perf_counter()
        first = None
        chunks = []
        for chunk in tts.synthesize(text):
            first = first if first is not None else time.perf_counter() - t0
            chunks.append(chunk)
        total = time.perf_counter() - t0
        audio = np.concatenate(chunks)
        tts_first.append(first)
        tts_rtf.append(total / (len(audio) / tts.sample_rate))
        utterances.append((text, _telephone(audio, tts.sample_rate)))

    # ASR: the synthesized questions through G.711, one pass each.
    asr.transcribe(utterances[0][1])  # warm-up
    asr_rtf, asr_s, asr_text = [], [], []
    for text, pcm in utterances:
        t0 = time.perf_counter()
        heard = asr.transcribe(pcm)
        elapsed = time.perf_counter() - t0
        asr_s.append(elapsed)
        asr_rtf.append(elapsed / (len(pcm) / 8000))
        asr_text.append({"said": text, "heard": heard})

    # LLM: completion mode on the configured persona.
    ttft, tps = [], []
    for text in QUESTIONS[:runs]:
        prompt = build_completion_prompt(settings.agent, [("caller", text)])
        t0 = time.perf_counter()
        first, tokens = None, 0
        for _piece in llm.stream(prompt, stop_sequences(settings.agent), settings.agent.max_tokens, settings.agent.temperature, threading.Event()):
            tokens += 1
            first = first if first is not None else time.perf_counter() - t0
        total = time.perf_counter() - t0
        ttft.append(first if first is not None else total)
        if tokens > 1 and first is not None and total > first:
            tps.append((tokens - 1) / (total - first))

    return {
        "device": engines.device,
        "load_seconds": round(load_s, 2),
        "asr": {"model": settings.models.asr, "rtf_mean": statistics.mean(asr_rtf), "pass_seconds_mean": statistics.mean(asr_s), "samples": asr_text},
        "llm": {"model": settings.models.llm, "ttft_p50": _pct(ttft, 0.5), "ttft_mean": statistics.mean(ttft), "tokens_per_s_mean": statistics.mean(tps) if tps else float("nan")},
        "tts": {"model": settings.models.tts, "first_audio_p50": _pct(tts_first, 0.5), "first_audio_mean": statistics.mean(tts_first), "rtf_mean": statistics.mean(tts_rtf)},
        "runs": runs,
    }


def print_models(r: dict) -> None:
    print(f"models on {r['device']} (loaded in {r['load_seconds']} s), {r['runs']} runs each")
    print(f"{'stage':6} {'model':10} {'figure':34} {'value':>10}")
    print(f"{'ASR':6} {r['asr']['model']:10} {'real-time factor (pass/audio), mean':34} {r['asr']['rtf_mean']:>10.3f}")
    print(f"{'':6} {'':10} {'seconds per pass, mean':34} {r['asr']['pass_seconds_mean']:>10.3f}")
    print(f"{'LLM':6} {r['llm']['model']:10} {'time to first token, p50 (s)':34} {r['llm']['ttft_p50']:>10.3f}")
    print(f"{'':6} {'':10} {'tokens per second, mean':34} {r['llm']['tokens_per_s_mean']:>10.1f}")
    print(f"{'TTS':6} {r['tts']['model']:10} {'time to first audio, p50 (s)':34} {r['tts']['first_audio_p50']:>10.3f}")
    print(f"{'':6} {'':10} {'real-time factor, mean':34} {r['tts']['rtf_mean']:>10.3f}")
    for sample in r["asr"]["samples"]:
        print(f"  ASR said {sample['said']!r} heard {sample['heard']!r}")


def _question_wavs(folder: Path, count: int) -> list[Path]:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeError("bench calls needs espeak-ng for the caller's questions")
    paths = []
    for i in range(count):
        path = folder / f"q{i}.wav"
        subprocess.run([espeak, "-s", "150", "-w", str(path), QUESTIONS[i % len(QUESTIONS)]], check=True)
        paths.append(path)
    return paths


async def bench_calls(uri: str, concurrency: int, turns: int, local_host: str = "127.0.0.1") -> dict:
    """``concurrency`` simultaneous ``bridge call`` clients of ``turns`` turns each against
    ``uri``; latency is end of caller speech -> first agent audio, on the caller's side."""
    from .client import place_call

    with tempfile.TemporaryDirectory() as tmp:
        wavs = _question_wavs(Path(tmp), turns)
        started = time.perf_counter()
        reports = await asyncio.gather(*[place_call(uri, wavs, None, local_host=local_host) for _ in range(concurrency)], return_exceptions=True)
        elapsed = time.perf_counter() - started
    latencies = [x for r in reports if not isinstance(r, BaseException) for x in r.latencies]
    failed = sum(1 for r in reports if isinstance(r, BaseException) or not r.answered)
    return {
        "uri": uri, "concurrency": concurrency, "turns": turns, "calls_failed": failed, "turns_measured": len(latencies),
        "p50": _pct(latencies, 0.5), "p95": _pct(latencies, 0.95), "p99": _pct(latencies, 0.99), "mean": statistics.mean(latencies) if latencies else float("nan"),
        "seconds": round(elapsed, 1), "latencies": latencies,
    }


def print_calls(r: dict) -> None:
    print(f"calls: {r['concurrency']} concurrent x {r['turns']} turns against {r['uri']} ({r['seconds']} s, {r['calls_failed']} failed)")
    print("end of caller speech -> first agent audio (caller's side), seconds")
    print(f"{'turns':>6} {'p50':>7} {'p95':>7} {'p99':>7} {'mean':>7}")
    print(f"{r['turns_measured']:>6} {r['p50']:>7.3f} {r['p95']:>7.3f} {r['p99']:>7.3f} {r['mean']:>7.3f}")


def write_json(path: str | None, result: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(result, indent=2, default=float))
