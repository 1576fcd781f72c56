"""``bridge bench turns``: does the agent answer at the right moment?

Plays ``config/eval/turns/``'s caller turns (format in its README) through a real
:class:`~bridge.conversation.engine.Conversation`, in real time, frame by frame, as an
RTP leg would, with every voice of ``bench answers`` through G.711, and watches when the
agent's first frame comes:

- **premature**: a ``paused`` turn whose reply began inside the pause (agent audio, or a
  turn started, before the caller's completion), or any turn answered in two pieces;
- **late**: the first agent audio more than ``late_after`` seconds after the end of the
  caller's speech (its last voiced frame, by webrtcvad, as ``bridge call`` measures);
- **missed**: no reply at all within the wait;
- voice-to-voice p50/p95 (end of the caller's speech -> first agent frame), and the
  replies that were the fallback ("Sorry, could you say that again?").

Each turn gets a fresh conversation (no greeting, no history). Figures are printed per
split, voice and kind; ``--json`` writes every turn.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from . import percentile

#: Silence before a turn, seconds.
LEAD_S = 0.4
#: How long to wait for a reply after the caller's speech ended, seconds.
WAIT_S = 4.0


class TurnItem(BaseModel):
    """One caller turn: ``say`` (and for ``paused``, a pause of ``pause_s`` seconds, then ``then``)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    kind: Literal["paused", "complete"]
    say: str
    pause_s: float = 0.0
    then: str = ""


class TurnSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    split: Literal["tune", "heldout"]
    items: list[TurnItem]


def default_paths() -> list[Path]:
    """``config/eval/turns/*.yaml`` next to the package's checkout, sorted."""
    return sorted((Path(__file__).resolve().parents[2] / "config" / "eval" / "turns").glob("*.yaml"))


def load_turn_sets(paths: list[str | Path] | None = None) -> list[TurnSet]:
    """Load and validate the turn sets.

    Raises:
        ValueError: a malformed file (pydantic's message names the field), a ``paused``
            item without ``then`` or a pause, or a repeated id.
    """
    from ..evaluation.evalset import load_yaml_sets

    def check(item: TurnItem) -> str | None:
        return (
            "a paused turn needs pause_s and then"
            if item.kind == "paused" and (not item.then or item.pause_s <= 0)
            else None
        )

    return load_yaml_sets(paths or default_paths(), TurnSet, check=check)


def _trimmed(pcm: np.ndarray) -> np.ndarray:
    """``pcm`` from its first to its last voiced frame (the voice's own silences off)."""
    from ..client import first_voiced_frame, last_voiced_frame

    first, last = first_voiced_frame(pcm), last_voiced_frame(pcm)
    if first < 0:
        return pcm
    return pcm[first * 160 : (last + 1) * 160]


def render(item: TurnItem, speak) -> tuple[np.ndarray, float | None, float]:
    """The caller's audio (PCM16 8 kHz) for ``item``: lead silence, the phrase, the pause
    and the completion. Returns ``(pcm, completion onset s, speech end s)``."""
    lead = np.zeros(int(LEAD_S * 8000), np.int16)
    if item.kind == "complete":
        said = _trimmed(speak(item.say))
        return np.concatenate([lead, said]), None, (len(lead) + len(said)) / 8000
    phrase = item.say if item.say.rstrip()[-1:] in ",.?!" else item.say + ","  # the continuing intonation of a comma
    first, rest = _trimmed(speak(phrase)), _trimmed(speak(item.then))
    pause = np.zeros(int(item.pause_s * 8000), np.int16)
    onset = (len(lead) + len(first) + len(pause)) / 8000
    return np.concatenate([lead, first, pause, rest]), onset, onset + len(rest) / 8000


async def run_item(engines, agent, item: TurnItem, speak, voice: str) -> dict:
    """Play ``item`` (spoken by ``speak``) into a fresh conversation in real time; the figures of that turn."""
    from ..audio.wire import FRAME_SAMPLES
    from ..conversation.engine import Conversation
    from ..evaluation.harness import JumpClock, RecordingLeg, _drain

    pcm, onset, speech_end = render(item, speak)
    clock = JumpClock()
    conv = Conversation(
        engines,
        agent.model_copy(update={"greeting": "", "reprompt_after_s": 0, "max_call_seconds": 0}),
        RecordingLeg(f"turns-{item.id}"),
        clock=clock,
    )
    conv.start()
    silence = np.zeros(FRAME_SAMPLES, np.int16)
    frames = [pcm[i : i + FRAME_SAMPLES] for i in range(0, len(pcm) - FRAME_SAMPLES + 1, FRAME_SAMPLES)]
    total = len(frames) + int(WAIT_S / 0.02)
    first_frame = None
    started_before_onset = 0
    start = time.monotonic()
    try:
        for n in range(total):
            t = n * 0.02
            if conv.pull_item() is not None:
                first_frame = t
                break
            if onset is not None and t < onset:
                started_before_onset = conv.turns_started
            conv.feed_audio(frames[n] if n < len(frames) else silence)
            delay = start + (n + 1) * 0.02 - time.monotonic()
            await asyncio.sleep(max(0.0, delay))
        if first_frame is not None:
            clock.skipped += 0.02
            await _drain(conv, clock)
    finally:
        await conv.close()
    turns = conv.turn_log
    replies = [t["agent"] for t in turns]
    premature = (
        onset is not None and ((first_frame is not None and first_frame < onset) or started_before_onset > 0)
    ) or conv.turns_started > 1
    latency = None if first_frame is None else round(first_frame - speech_end, 3)
    return {
        "id": item.id,
        "kind": item.kind,
        "voice": voice,
        "premature": bool(premature),
        "missed": first_frame is None,
        "latency": latency,
        "heard": [t["caller"] for t in turns],
        "replies": replies,
        "rules": [
            t["endpoint_rule"] + (f" ({t['endpoint_reason']})" if t.get("endpoint_reason") else "") for t in turns
        ],
        "scores": [t.get("end_scores", {}) for t in turns],
        "fallback": any(r.strip() == agent.fallback.strip() for r in replies if agent.fallback),
        "server": conv.latencies[0] if conv.latencies else {},
    }


async def bench_turns(
    settings, engines, voices: list[str], splits: list[str] | None = None, late_after: float = 1.0, paths=None
) -> dict:
    """Every item of the turn sets (``splits``: only those) with every voice; the report."""
    from ..evaluation.voices import voice as make_voice

    started = time.monotonic()
    runs = []
    for s in load_turn_sets(paths):
        if splits and s.split not in splits:
            continue
        for v in voices:
            speak = make_voice(v, engines.tts)
            for item in s.items:
                r = await run_item(engines, settings.agent, item, speak, v)
                r["split"] = s.split
                r["late"] = r["latency"] is not None and r["latency"] > late_after
                runs.append(r)
    groups = {"overall": runs}
    for key in ("split", "voice", "kind"):
        for value in sorted({r[key] for r in runs}):
            groups[f"{key}={value}"] = [r for r in runs if r[key] == value]
    return {
        "late_after": late_after,
        "seconds": round(time.monotonic() - started, 1),
        "groups": {k: summarize(v) for k, v in groups.items()},
        "runs": runs,
    }


def summarize(runs: list[dict]) -> dict:
    """Counts and voice-to-voice figures of some runs."""
    lat = [r["latency"] for r in runs if r["latency"] is not None and not r["premature"]]
    n = len(runs)
    return {
        "turns": n,
        "premature": sum(r["premature"] for r in runs),
        "late": sum(r["late"] for r in runs),
        "missed": sum(r["missed"] for r in runs),
        "fallback": sum(r["fallback"] for r in runs),
        "p50": percentile(lat, 0.5),
        "p95": percentile(lat, 0.95),
        "premature_pct": round(100 * sum(r["premature"] for r in runs) / n, 1) if n else 0.0,
    }


def print_turns(report: dict) -> None:
    print(
        f"turns: {report['groups']['overall']['turns']} in {report['seconds']} s; late = first agent audio over {report['late_after']} s after the caller's speech"
    )
    print(
        f"{'group':22} {'turns':>5} {'premature':>10} {'late':>5} {'missed':>6} {'fallback':>8} {'v2v p50':>8} {'p95':>6}"
    )
    for name, g in report["groups"].items():
        print(
            f"{name:22} {g['turns']:>5} {g['premature']:>4} ({g['premature_pct']:4.1f}%) {g['late']:>5} {g['missed']:>6} {g['fallback']:>8} {g['p50']:>8.3f} {g['p95']:>6.3f}"
        )
    bad = [r for r in report["runs"] if r["premature"] or r["missed"]]
    for r in bad[:20]:
        print(
            f"  {'premature' if r['premature'] else 'missed':9} {r['id']} {r['voice']}: heard {r['heard']} rules {r['rules']}"
        )
