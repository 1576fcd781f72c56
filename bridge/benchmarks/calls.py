"""``bridge bench calls``: latency of real SIP calls, as heard by the caller."""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from . import percentile as _pct

QUESTIONS = [
    "What time do you open on Saturday?",
    "How much does a cleaning cost?",
    "Where is the clinic?",
    "Can I book an appointment for Monday morning?",
    "Do you take new patients?",
    "Is there parking near the clinic?",
]


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
    from ..client import place_call

    with tempfile.TemporaryDirectory() as tmp:
        wavs = _question_wavs(Path(tmp), turns)
        started = time.perf_counter()
        reports = await asyncio.gather(
            *[place_call(uri, wavs, None, local_host=local_host) for _ in range(concurrency)], return_exceptions=True
        )
        elapsed = time.perf_counter() - started
    latencies = [x for r in reports if not isinstance(r, BaseException) for x in r.latencies]
    failed = sum(1 for r in reports if isinstance(r, BaseException) or not r.answered)
    return {
        "uri": uri,
        "concurrency": concurrency,
        "turns": turns,
        "calls_failed": failed,
        "turns_measured": len(latencies),
        "p50": _pct(latencies, 0.5),
        "p95": _pct(latencies, 0.95),
        "p99": _pct(latencies, 0.99),
        "mean": statistics.mean(latencies) if latencies else float("nan"),
        "seconds": round(elapsed, 1),
        "latencies": latencies,
    }


def print_calls(r: dict) -> None:
    print(
        f"calls: {r['concurrency']} concurrent x {r['turns']} turns against {r['uri']} ({r['seconds']} s, {r['calls_failed']} failed)"
    )
    print("end of caller speech -> first agent audio (caller's side), seconds")
    print(f"{'turns':>6} {'p50':>7} {'p95':>7} {'p99':>7} {'mean':>7}")
    print(f"{r['turns_measured']:>6} {r['p50']:>7.3f} {r['p95']:>7.3f} {r['p99']:>7.3f} {r['mean']:>7.3f}")
