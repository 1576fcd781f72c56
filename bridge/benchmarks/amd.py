"""``bridge bench amd``: does the detector tell a person from a machine, and how fast?

Plays ``config/eval/amd/``'s answers (format in its README), spoken by every voice of
``bench answers`` through G.711, into a real
:class:`~bridge.outbound.amd.AnsweringMachineDetector` with the configured VAD and ASR,
frame by frame. The detector's clock is the call audio's; each ASR pass it asks for
really runs, and its text is handed back only once as much call audio has gone by as
the pass took here (as on a live call, where the audio keeps coming while ASR runs).

It prints, per split, voice and kind:

- accuracy: the verdict is the item's ``expect`` (``human``, ``machine``, ``unknown``);
- time to the verdict after the answer (p50/p95);
- human: the end of the greeting to the agent's first audio (the greeting was
  synthesized while the detector listened, so it starts with the next 20 ms frame);
- machine with a beep: the beep's end to the message's start, and messages started
  before the beep (there must be none).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

from . import percentile

#: Silence before the callee's first sound, and after the last part (seconds).
LEAD_S = 0.4
TAIL_S = 4.0
#: The agent's first frame goes out one 20 ms slot after the verdict.
FRAME_S = 0.02


class AmdItem(BaseModel):
    """One answer: its parts, and the verdict it should get."""

    model_config = ConfigDict(extra="forbid")

    id: str
    expect: Literal["human", "machine", "unknown"]
    kind: str
    parts: list[dict]

    @field_validator("parts")
    @classmethod
    def _parts(cls, parts: list[dict]) -> list[dict]:
        for part in parts:
            if len(part) != 1 or next(iter(part)) not in ("say", "pause", "beep", "noise"):
                raise ValueError(f"a part is one of say, pause, beep, noise: {part}")
        return parts


class AmdSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    split: Literal["tune", "heldout"]
    items: list[AmdItem]


def default_paths() -> list[Path]:
    """``config/eval/amd/*.yaml`` next to the package's checkout, sorted."""
    return sorted((Path(__file__).resolve().parents[2] / "config" / "eval" / "amd").glob("*.yaml"))


def load_amd_sets(paths: list[str | Path] | None = None) -> list[AmdSet]:
    """Load and validate the answer sets.

    Raises:
        ValueError: a malformed file or a repeated id.
    """
    from ..evaluation.evalset import load_yaml_sets

    return load_yaml_sets(paths or default_paths(), AmdSet)


def _noise(seconds: float, rms: float, rng: np.random.Generator) -> np.ndarray:
    """Brown-ish noise (white noise through a one-pole low-pass), ``rms`` PCM16."""
    white = rng.normal(0, 1, int(seconds * 8000))
    brown = np.empty_like(white)
    acc = 0.0
    for i, w in enumerate(white):
        acc = 0.97 * acc + w
        brown[i] = acc
    brown -= brown.mean()
    return (brown / (np.sqrt(np.mean(brown**2)) or 1) * rms).astype(np.int16)


def render(item: AmdItem, speak, seed: int = 0) -> tuple[np.ndarray, dict]:
    """The callee's audio (PCM16 8 kHz) for ``item`` and its landmarks: ``speech_end``
    (seconds: the end of the last spoken part), ``beep_end`` (the last beep's end)."""
    from ..client import last_voiced_frame

    rng = np.random.default_rng(seed)
    pieces = [np.zeros(int(LEAD_S * 8000), np.int16)]
    marks: dict = {"speech_end": None, "beep_end": None}
    at = LEAD_S
    for part in item.parts:
        ((key, value),) = part.items()
        if key == "say":
            pcm = speak(value)
            last = last_voiced_frame(pcm)
            pcm = pcm[: (last + 1) * 160] if last >= 0 else pcm
            marks["speech_end"] = at + len(pcm) / 8000
        elif key == "pause":
            pcm = np.zeros(int(float(value) * 8000), np.int16)
        elif key == "beep":
            hz, ms = value
            t = np.arange(int(ms * 8)) / 8000
            pcm = (7000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
            marks["beep_end"] = at + len(pcm) / 8000
        else:
            pcm = _noise(float(value[0]), float(value[1]), rng)
        pieces.append(pcm)
        at += len(pcm) / 8000
    pieces.append(np.zeros(int(TAIL_S * 8000), np.int16))
    return np.concatenate(pieces), marks


def run_item(engines, settings, item: AmdItem, speak, voice: str) -> dict:
    """Play ``item`` into a fresh detector; the figures of that answer."""
    from ..outbound.amd import AnsweringMachineDetector, GiveUp, SpeakMessage, Transcribe, Verdict

    pcm, marks = render(item, speak, seed=hash(item.id) & 0xFFFF)
    detector = AnsweringMachineDetector(settings)
    vad = engines.vad_factory()
    pending: list[tuple[float, Transcribe, str]] = []
    verdict = message = None
    passes = 0
    for i in range(0, len(pcm) - 159, 160):
        frame = pcm[i : i + 160]
        actions = detector.feed(frame, vad.is_speech(frame))
        for due, req, text in list(pending):
            if detector.t >= due:
                pending.remove((due, req, text))
                actions += detector.transcript(req.id, text.text, text.avg_logprob)
        for a in actions:
            if isinstance(a, Transcribe):
                started = time.perf_counter()
                text = engines.asr.hear(a.pcm)
                passes += 1
                pending.append((detector.t + time.perf_counter() - started, a, text))
            elif isinstance(a, Verdict):
                verdict = a
            elif isinstance(a, (SpeakMessage, GiveUp)):
                message = a
        if detector.done:
            break
    kind = verdict.kind if verdict else "none"
    r = {
        "id": item.id,
        "kind": item.kind,
        "voice": voice,
        "expect": item.expect,
        "verdict": kind,
        "reason": verdict.reason if verdict else "",
        "heard": verdict.transcript if verdict else "",
        "logprob": verdict.logprob if verdict else None,
        "right": kind == item.expect,
        "verdict_s": round(verdict.at, 3) if verdict else None,
        "asr_passes": passes,
        "human_latency": None,
        "beep_to_message": None,
        "before_beep": False,
        "message": getattr(message, "how", None),
    }
    if verdict is not None and kind in ("human", "unknown") and marks["speech_end"] is not None:
        r["human_latency"] = round(verdict.at + FRAME_S - marks["speech_end"], 3)
    if isinstance(message, SpeakMessage) and marks["beep_end"] is not None:
        r["before_beep"] = message.at < marks["beep_end"]
        if message.how == "beep":
            r["beep_to_message"] = round(message.at - marks["beep_end"], 3)
    return r


def bench_amd(settings, engines, voices: list[str], splits: list[str] | None = None, paths=None) -> dict:
    """Every answer of the sets (``splits``: only those) with every voice; the report."""
    from ..evaluation.voices import voice as make_voice

    started = time.monotonic()
    runs = []
    for s in load_amd_sets(paths):
        if splits and s.split not in splits:
            continue
        for v in voices:
            speak = make_voice(v, engines.tts, deterministic=True)
            for item in s.items:
                r = run_item(engines, settings.outbound.amd, item, speak, v)
                r["split"] = s.split
                runs.append(r)
    groups = {"overall": runs}
    for key in ("split", "voice", "kind"):
        for value in sorted({r[key] for r in runs}):
            groups[f"{key}={value}"] = [r for r in runs if r[key] == value]
    return {
        "seconds": round(time.monotonic() - started, 1),
        "groups": {k: summarize(v) for k, v in groups.items()},
        "runs": runs,
    }


def summarize(runs: list[dict]) -> dict:
    """Accuracy and timing figures of some runs."""
    n = len(runs)
    right = sum(r["right"] for r in runs)
    humans = [
        r["human_latency"]
        for r in runs
        if r["expect"] == "human" and r["verdict"] == "human" and r["human_latency"] is not None
    ]
    beeps = [r["beep_to_message"] for r in runs if r["beep_to_message"] is not None]
    verdicts = [r["verdict_s"] for r in runs if r["verdict_s"] is not None]
    machines = [r for r in runs if r["expect"] == "machine"]
    people = [r for r in runs if r["expect"] == "human"]
    return {
        "answers": n,
        "right": right,
        "accuracy_pct": round(100 * right / n, 1) if n else 0.0,
        "human_right": sum(r["right"] for r in people),
        "humans": len(people),
        "machine_right": sum(r["right"] for r in machines),
        "machines": len(machines),
        "verdict_p50": percentile(verdicts, 0.5),
        "verdict_p95": percentile(verdicts, 0.95),
        "human_p50": percentile(humans, 0.5),
        "human_p95": percentile(humans, 0.95),
        "human_max": max(humans) if humans else None,
        "beep_p50": percentile(beeps, 0.5),
        "beep_max": max(beeps) if beeps else None,
        "before_beep": sum(r["before_beep"] for r in runs),
    }


def _f(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def print_amd(report: dict) -> None:
    """The report as a table, then the wrong verdicts."""
    print(f"amd: {report['groups']['overall']['answers']} answers in {report['seconds']} s")
    print(
        f"{'group':24} {'answers':>7} {'right':>13} {'human':>7} {'machine':>8} {'verdict p50/p95':>16} {'human->agent p50/p95/max':>25} "
        f"{'beep->msg p50/max':>18} {'early':>5}"
    )
    for name, g in report["groups"].items():
        print(
            f"{name:24} {g['answers']:>7} {g['right']:>5} ({g['accuracy_pct']:5.1f}%) {g['human_right']:>3}/{g['humans']:<3} "
            f"{g['machine_right']:>3}/{g['machines']:<4} {_f(g['verdict_p50']):>7} / {_f(g['verdict_p95']):<6} "
            f"{_f(g['human_p50']):>8} / {_f(g['human_p95'])} / {_f(g['human_max']):<5} {_f(g['beep_p50']):>8} / {_f(g['beep_max']):<7} {g['before_beep']:>5}"
        )
    for r in [r for r in report["runs"] if not r["right"]][:40]:
        print(
            f"  wrong {r['split']:7} {r['id']:5} {r['voice']:12} expected {r['expect']:7} got {r['verdict']:7} ({r['reason']}): heard {r['heard']!r}"
        )
