"""Summaries of ``bridge bench answers``: overall, by split, voice and category; JSON."""

from __future__ import annotations

import statistics
from collections import defaultdict

from ..benchmarks import percentile as _pct
from .evalset import CATEGORIES
from .scoring import TurnScore

STAGES = ("endpoint", "asr_final", "llm_first_token", "first_sentence", "tts_first_audio", "first_packet")


def summarize(scores: list[TurnScore]) -> dict:
    """Figures for a list of scored turns.

    ``accuracy``: share of turns fully correct; ``wer``: mean ASR word error rate
    over turns that went through ASR; ``degenerate``: turns with any degenerate
    kind; ``unrequested_hangups``/``unrequested_transfers``/``unrequested_digits``
    and ``missed_tools``: tool misfires; ``no_reply``: turns the agent never got
    (nothing recognized); ``fallback``: replies that were ``agent.fallback``;
    ``latency``: p50/p95 seconds per stage, from the end of
    the caller's speech (``first_packet`` is voice-to-voice).
    """
    n = len(scores)
    out = {
        "turns": n,
        "correct": sum(s.correct for s in scores),
        "accuracy": (sum(s.correct for s in scores) / n) if n else None,
        "degenerate": sum(bool(s.degenerate) for s in scores),
        "degenerate_kinds": dict(sorted(_count(k for s in scores for k in s.degenerate).items())),
        "unrequested_hangups": sum("end_call" in s.unrequested for s in scores),
        "unrequested_transfers": sum("transfer" in s.unrequested for s in scores),
        "unrequested_digits": sum("collect_digits" in s.unrequested for s in scores),
        "missed_tools": sum(s.missed_tool for s in scores),
        "no_reply": sum(s.no_reply for s in scores),
        "after_end": sum(s.after_end for s in scores),
        "fallback": sum(s.fallback for s in scores),
    }
    wers = [s.wer for s in scores if s.wer is not None]
    out["wer"] = statistics.mean(wers) if wers else None
    out["latency"] = {
        st: {
            "p50": _pct([s.latency[st] for s in scores if st in s.latency], 0.5),
            "p95": _pct([s.latency[st] for s in scores if st in s.latency], 0.95),
        }
        for st in STAGES
    }
    return out


def _count(items) -> dict:
    counts: dict = defaultdict(int)
    for k in items:
        counts[k] += 1
    return counts


def build_report(runs: list[dict]) -> dict:
    """``runs``: ``{"voice", "split", "scores"}`` per voice and file -> the report dict."""
    everything = [s for r in runs for s in r["scores"]]
    report = {"overall": summarize(everything), "by_split": {}, "by_voice": {}, "by_category": {}, "turns": []}
    for split in sorted({r["split"] for r in runs}):
        report["by_split"][split] = summarize([s for r in runs if r["split"] == split for s in r["scores"]])
    for voice in dict.fromkeys(r["voice"] for r in runs):
        report["by_voice"][voice] = summarize([s for r in runs if r["voice"] == voice for s in r["scores"]])
    for cat in CATEGORIES:
        cs = [s for s in everything if s.item.category == cat]
        if cs:
            report["by_category"][cat] = summarize(cs)
    for r in runs:
        report["turns"] += [{"voice": r["voice"], "split": r["split"], **s.to_json()} for s in r["scores"]]
    return report


def _fmt(v, pct=False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:5.1f}%" if pct else f"{v:.3f}"


def print_report(report: dict, header: str = "") -> None:
    """The report as tables on stdout."""
    if header:
        print(header)
    cols = f"{'':14} {'turns':>5} {'accuracy':>9} {'WER':>6} {'degen':>5} {'hangup!':>7} {'xfer!':>5} {'digits!':>7} {'missed':>6} {'unheard':>7} {'lost':>4} {'fallbk':>6} {'v2v p50':>7} {'v2v p95':>7}"

    def row(name: str, s: dict) -> str:
        lat = s["latency"]["first_packet"]
        return (
            f"{name:14} {s['turns']:>5} {_fmt(s['accuracy'], True):>9} {_fmt(s['wer'], True) if s['wer'] is not None else '-':>6} {s['degenerate']:>5} "
            f"{s['unrequested_hangups']:>7} {s['unrequested_transfers']:>5} {s['unrequested_digits']:>7} {s['missed_tools']:>6} {s['no_reply']:>7} {s['after_end']:>4} {s.get('fallback', 0):>6} "
            f"{_fmt(lat['p50']):>7} {_fmt(lat['p95']):>7}"
        )

    print(cols)
    print(row("all", report["overall"]))
    for name, s in report["by_split"].items():
        print(row(f"split {name}", s))
    for name, s in report["by_voice"].items():
        print(row(f"voice {name}", s))
    for name, s in report["by_category"].items():
        print(row(name, s))
    kinds = report["overall"]["degenerate_kinds"]
    if kinds:
        print("degenerate kinds: " + ", ".join(f"{k} {v}" for k, v in kinds.items()))
    lat = report["overall"]["latency"]
    print(
        "latency from the end of the caller's speech, p50 (p95), seconds: "
        + ", ".join(f"{st} {_fmt(lat[st]['p50'])} ({_fmt(lat[st]['p95'])})" for st in STAGES)
    )
    wrong = [t for t in report["turns"] if not t["correct"]]
    if wrong:
        print(f"wrong turns ({len(wrong)}):")
        for t in wrong:
            why = []
            if t["no_reply"]:
                why.append("unheard")
            if t["after_end"]:
                why.append("lost: the call had ended")
            why += [f"degenerate:{k}" for k in t["degenerate"]]
            why += [f"missing:{'/'.join(g)}" for g in t["missing"]] + [f"forbidden:{p}" for p in t["forbidden"]]
            why += [f"unrequested:{u}" for u in t["unrequested"]] + (
                ["missed:" + t["expected_tool"]] if t["missed_tool"] else []
            )
            print(
                f"  [{t['voice']}] {t['id']} heard={t['heard']!r} reply={t['reply']!r} tools={t['tools']} -> {', '.join(why)}"
            )
