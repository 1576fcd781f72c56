"""``bridge bench bargein``: true interruptions and backchannels played over the agent.

Each item is one caller sound spoken over a long agent utterance: a true
interruption ("Sorry, do you take Cigna?") or a backchannel ("mm-hmm", "okay",
a cough). The set lives in ``config/bargein/`` (``tune.yaml``, looked at while
choosing the defaults; ``heldout.yaml``, only scored). Every item is rendered
with Piper and espeak-ng voices, at several levels and with sox pink noise, and
passed through G.711 mu-law (:func:`bridge.evaluation.voices.telephone`).

One item is one real :class:`~bridge.conversation.engine.Conversation` on a
recording leg, run in real time: every 20 ms the agent's frame is pulled (as
the RTP sender would) and the caller's frame fed. Reported:

- true interruptions: the share interrupted (the agent stopped for good), and
  the stop time, caller onset (first frame webrtcvad calls speech) to the last
  agent frame handed out before the agent fell silent;
- backchannels: the share of false interruptions (the agent stopped for good),
  of pauses that resumed, and of sounds that did not pause it at all, with the
  gap a resumed pause left.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from . import percentile

ROOT = Path(__file__).resolve().parents[2]
SET_DIR = ROOT / "config" / "bargein"
FRAME = 160
#: A long agent utterance to talk over (about 12 s with the embedded voice).
AGENT_LINE = (
    "Thanks for calling Maple Street Dental. We are open Monday to Friday from 8 am to 6 pm, "
    "and on Saturday from 9 am to 1 pm. We are at 42 Maple Street, next to the public library, "
    "and there is free parking behind the building."
)
#: The caller's sound starts this long after the agent's first frame, seconds.
AT_S = 1.5
#: How long to go on after the caller's sound, seconds.
TAIL_S = 3.0
#: Frames (20 ms) of silence the caller waits after its track for a pending barge-in's
#: judgement, or a confirmed one's turn and words (slow under load), before giving up.
WAIT_FRAMES = 1500
#: Conditions: (name, gain dB applied to the caller's sound, pink noise under the
#: whole caller track in dBFS RMS or None). -35 dBFS is about 15-20 dB below the
#: voices' speech; the noise runs through the agent's turn, the caller's silence too.
CONDITIONS = [("clean", 0.0, None), ("quiet", -12.0, None), ("noisy", 0.0, -35.0)]
VOICES = ("piper", "espeak")


@dataclass
class ItemResult:
    """One item's outcome (times in seconds from the caller's onset)."""

    split: str
    kind: str  # "interruption" | "backchannel"
    text: str
    voice: str
    condition: str
    outcome: str  # "interrupted" | "resumed" | "untouched"
    heard: str  # what ASR made of it: the caller's turn, or the withdrawn backchannel
    stop_s: float | None  # last agent frame after onset, before the agent fell silent
    gap_s: float | None  # resumed: how long the agent was silent


def load_set(splits: list[str] | None = None) -> list[tuple[str, str, str]]:
    """``(split, kind, text)`` for every item of ``config/bargein/{tune,heldout}.yaml``;
    a text ``cough`` (or ``cough2``) is a sox-made cough, not speech."""
    items = []
    for split in splits or ["tune", "heldout"]:
        data = yaml.safe_load((SET_DIR / f"{split}.yaml").read_text())
        for kind in ("interruption", "backchannel"):
            items += [(split, kind, text) for text in data[kind + "s"]]
    return items


def _sox(*args: str) -> np.ndarray:
    exe = shutil.which("sox")
    if exe is None:
        raise RuntimeError("bench bargein needs sox (Debian package sox; scripts/setup.sh --test installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.raw"
        subprocess.run(
            [exe, "-n", "-r", "8000", "-b", "16", "-c", "1", "-e", "signed-integer", str(out), *args],
            check=True,
            capture_output=True,
        )
        return np.frombuffer(out.read_bytes(), dtype=np.int16).copy()


def cough(variant: str) -> np.ndarray:
    """A cough made by sox: band-limited noise bursts with a sharp attack (8 kHz PCM16)."""
    if variant == "cough2":
        first = _sox(
            "synth", "0.16", "brownnoise", "highpass", "300", "fade", "q", "0.004", "0.16", "0.12", "norm", "-4"
        )
        second = _sox(
            "synth", "0.12", "brownnoise", "highpass", "300", "fade", "q", "0.004", "0.12", "0.09", "norm", "-8"
        )
        return np.concatenate([first, np.zeros(800, np.int16), second])
    burst = _sox(
        "synth", "0.25", "pinknoise", "band", "-n", "900", "600", "fade", "q", "0.005", "0.25", "0.18", "norm", "-3"
    )
    return burst


def render(text: str, voice, condition: tuple[str, float, float | None], seed: int) -> np.ndarray:
    """The caller track of one item: :data:`AT_S` of silence, the speech (or a cough)
    at the condition's level, :data:`TAIL_S` of silence, the condition's noise under
    all of it, through G.711 mu-law; PCM16 mono 8000 Hz."""
    from ..evaluation.voices import telephone

    pcm = cough(text) if text.startswith("cough") else voice(text)
    _name, gain_db, noise_dbfs = condition
    x = pcm.astype(np.float64) * 10 ** (gain_db / 20)
    x = np.concatenate([np.zeros(int(AT_S * 8000)), x, np.zeros(int(TAIL_S * 8000))])
    if noise_dbfs is not None:
        noise = _sox("synth", f"{len(x) / 8000 + 0.1:.2f}", "pinknoise").astype(np.float64)[: len(x)]
        noise = np.roll(noise, seed * 997)
        noise *= 32768 * 10 ** (noise_dbfs / 20) / max(np.sqrt(np.mean(np.square(noise))), 1e-9)
        x[: len(noise)] += noise
    return telephone(np.clip(x, -32768, 32767).astype(np.int16), 8000)


async def play_over_agent(engines, agent, caller: np.ndarray) -> dict:
    """Feed ``caller`` (PCM16 8 kHz, from :func:`render`) from the agent's first frame
    of :data:`AGENT_LINE` on, in real time.

    Returns the onset (s), the agent's frame times (s), the outcome, and the
    conversation (closed).
    """
    from ..client import first_voiced_frame
    from ..conversation.engine import Conversation
    from ..evaluation.harness import RecordingLeg

    settings = agent.model_copy(update={"greeting": AGENT_LINE, "reprompt_after_s": 0, "max_call_seconds": 0})
    leg = RecordingLeg("bargein")
    conv = Conversation(engines, settings, leg)
    conv.start()
    deadline = time.monotonic() + 60
    while conv.pull_item() is None:  # the first frame: the agent starts talking now
        if time.monotonic() > deadline:
            raise RuntimeError("the agent line was never played")
        await asyncio.sleep(0.005)
    start = time.monotonic()
    sent = [0.0]
    voiced = first_voiced_frame(caller[int(AT_S * 8000) :])
    onset = AT_S + (voiced if voiced >= 0 else 0) * 0.02
    silence = np.zeros(FRAME, np.int16)
    frames = [caller[i : i + FRAME] for i in range(0, len(caller) - FRAME + 1, FRAME)]
    greeting = conv.history[0][1]
    turns = conv.turns_started
    n = 1
    try:
        while True:
            delay = start + n * 0.02 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            t = n * 0.02
            if conv.pull_item() is not None:
                sent.append(t)
            i = n  # the caller track (render) starts with the agent's first frame
            conv.feed_audio(frames[i] if 0 <= i < len(frames) else silence)
            n += 1
            if not greeting.interrupted and greeting.played >= sum(greeting.samples) and not conv.playout.playing:
                break  # the agent said it all
            if conv.turns_started != turns:
                break  # the caller's turn began (a real interruption)
            if i >= len(frames) and (
                (not conv.barge_in_pending and not greeting.interrupted) or i >= len(frames) + WAIT_FRAMES
            ):
                break  # the caller is done, and no barge-in is being judged or waits for its turn
        if conv.turns_started != turns:
            # The caller stays on the line (silence) until the turn's words are in the
            # history: under load the turn begins on the endpoint with its final ASR pass
            # still running. The agent's next reply is not pulled: ``sent`` holds this
            # line's frames only.
            deadline = time.monotonic() + WAIT_FRAMES * 0.02
            while not any(role == "caller" for role, _ in conv.history) and time.monotonic() < deadline:
                if conv._reply_task is not None and conv._reply_task.done():
                    break  # the turn ended without words
                conv.feed_audio(silence)
                await asyncio.sleep(0.02)
        if greeting.interrupted:
            outcome = "interrupted"
        elif conv.backchannels:
            outcome = "resumed"
        else:
            outcome = "untouched"
        callers = [text for role, text in conv.transcript() if role == "caller"]
        heard = callers[0] if callers else (conv.backchannels[0] if conv.backchannels else conv.interim_text)
    finally:
        await conv.close()
    return {"onset": onset, "sent": sent, "outcome": outcome, "heard": heard, "conversation": conv}


def _stop_and_gap(sent: list[float], onset: float) -> tuple[float | None, float | None]:
    """Stop time: the last frame before the first silence of more than 60 ms at or
    after onset; gap: that silence's length, when frames came again."""
    after = [t for t in sent if t >= onset - 0.02]
    if not after:
        return None, None
    for a, b in zip(after, after[1:]):
        if b - a > 0.06:
            return round(a - onset, 3), round(b - a, 3)
    return round(after[-1] - onset, 3), None


async def bench_bargein(
    settings, engines, splits: list[str] | None = None, voices=VOICES, conditions=CONDITIONS
) -> dict:
    """Every item of the set in every voice and condition; see the module docstring."""
    from ..evaluation.voices import voice as make_voice

    speakers = {v: make_voice(v, engines.tts, deterministic=True) for v in voices}
    results: list[ItemResult] = []
    started = time.monotonic()
    seed = 0
    for split, kind, text in load_set(splits):
        for v in voices:
            if text.startswith("cough") and v != voices[0]:
                continue  # a cough has no voice
            for condition in conditions:
                seed += 1
                caller = render(text, speakers[v], condition, seed)
                run = await play_over_agent(engines, settings.agent, caller)
                stop, gap = _stop_and_gap(run["sent"], run["onset"])
                results.append(
                    ItemResult(
                        split,
                        kind,
                        text,
                        "sox" if text.startswith("cough") else v,
                        condition[0],
                        run["outcome"],
                        run["heard"],
                        stop,
                        gap if run["outcome"] == "resumed" else None,
                    )
                )
    return {
        "items": [asdict(r) for r in results],
        "summary": summarize(results),
        "seconds": round(time.monotonic() - started, 1),
        "barge_in_min_speech_ms": settings.agent.barge_in_min_speech_ms,
        "barge_in_confirm_ms": settings.agent.barge_in_confirm_ms,
    }


def summarize(results: list[ItemResult]) -> dict:
    """Per split and overall: interruption rate and stop time p50/p95/max for true
    interruptions; false-interruption, resumed and untouched rates for backchannels."""
    out = {}
    for split in ["all"] + sorted({r.split for r in results}):
        rs = [r for r in results if split == "all" or r.split == split]
        true = [r for r in rs if r.kind == "interruption"]
        back = [r for r in rs if r.kind == "backchannel"]
        stops = [r.stop_s for r in true if r.outcome == "interrupted" and r.stop_s is not None]
        gaps = [r.gap_s for r in back if r.gap_s is not None]
        out[split] = {
            "interruptions": len(true),
            "interrupted": sum(r.outcome == "interrupted" for r in true),
            "stop_p50_s": percentile(stops, 0.5),
            "stop_p95_s": percentile(stops, 0.95),
            "stop_max_s": max(stops) if stops else float("nan"),
            "backchannels": len(back),
            "false_interruptions": sum(r.outcome == "interrupted" for r in back),
            "resumed": sum(r.outcome == "resumed" for r in back),
            "untouched": sum(r.outcome == "untouched" for r in back),
            "resume_gap_p50_s": percentile(gaps, 0.5),
        }
    return out


def print_bargein(report: dict) -> None:
    print(
        f"bargein: {len(report['items'])} items in {report['seconds']} s "
        f"(pause at {report['barge_in_min_speech_ms']} ms of speech, final at {report['barge_in_confirm_ms']} ms or words)"
    )
    print(
        f"{'part':<8} {'true':>5} {'stopped':>8} {'stop p50':>9} {'p95':>6} {'max':>6} {'back':>5} {'false':>6} {'rate':>6} {'resumed':>8} {'untouched':>9} {'gap p50':>8}"
    )
    for split, s in report["summary"].items():
        rate = s["false_interruptions"] / s["backchannels"] if s["backchannels"] else float("nan")
        print(
            f"{split:<8} {s['interruptions']:>5} {s['interrupted']:>8} {s['stop_p50_s']:>9.3f} {s['stop_p95_s']:>6.3f} {s['stop_max_s']:>6.3f} "
            f"{s['backchannels']:>5} {s['false_interruptions']:>6} {rate:>6.1%} {s['resumed']:>8} {s['untouched']:>9} {s['resume_gap_p50_s']:>8.3f}"
        )
    wrong = [r for r in report["items"] if (r["kind"] == "interruption") != (r["outcome"] == "interrupted")]
    for r in wrong:
        print(
            f"  {r['split']}/{r['kind']} {r['text']!r} {r['voice']} {r['condition']}: {r['outcome']} (heard {r['heard']!r})"
        )
