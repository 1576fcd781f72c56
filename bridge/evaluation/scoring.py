"""Scoring one agent reply against an :class:`~bridge.evaluation.evalset.EvalItem`.

Independent of the runtime guards in :mod:`bridge.conversation.guards` on
purpose: the benchmark must see what a guard lets through.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import jiwer

from .evalset import EvalItem

#: A speaker label or prompt text in the reply: the model wrote the transcript on.
_LEAK = re.compile(
    r"(\b(caller|sam|agent|user|assistant|receptionist|system)\s*:)|following is a phone call|\bfacts?\s*:", re.I
)
#: A sentence end: . ! ? and space or the end, not after a title or an initial ("Dr. Patel").
_SENTENCE_END = re.compile(r"(?<!\bDr)(?<!\bMr)(?<!\bMs)(?<!\bMrs)(?<!\bSt)(?<!\b[A-Z])[.!?]+(\s+|$)")


def words(text: str) -> list[str]:
    """Lower-case words of ``text``: hyphens split words, other punctuation goes,
    apostrophes inside words stay (``"don't"``), ``"$90"`` -> ``"90"``."""
    text = text.lower().replace("’", "'").replace("-", " ")
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text)


def contains(text_words: list[str], phrase: str) -> bool:
    """Whether the word sequence of ``phrase`` occurs in ``text_words``."""
    p = words(phrase)
    n = len(p)
    return n > 0 and any(text_words[i : i + n] == p for i in range(len(text_words) - n + 1))


def sentences(text: str) -> list[str]:
    """Sentences of ``text`` (split after . ! ?), empty ones dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip() and not _SENTENCE_END.fullmatch(s)]


def degenerate_kinds(reply: str) -> list[str]:
    """What is wrong with ``reply`` as spoken output, ``[]`` when nothing is.

    ``repetition``: a word 3-gram three times, a 4-gram twice, or a sentence
    twice; ``leak``: a speaker label or prompt text; ``too_long``: more than two
    sentences; ``empty`` is judged by the caller of this function (a tool turn
    may rightly say little).
    """
    kinds = []
    w = words(reply)
    grams3 = Counter(tuple(w[i : i + 3]) for i in range(len(w) - 2))
    grams4 = Counter(tuple(w[i : i + 4]) for i in range(len(w) - 3))
    said = [" ".join(words(s)) for s in sentences(reply)]
    if any(c >= 3 for c in grams3.values()) or any(c >= 2 for c in grams4.values()) or len(set(said)) < len(said):
        kinds.append("repetition")
    if _LEAK.search(reply):
        kinds.append("leak")
    if len(said) > 2:
        kinds.append("too_long")
    return kinds


@dataclass
class TurnScore:
    """The verdict on one reply. ``tools``: what the call leg was asked to do."""

    item: EvalItem
    heard: str
    reply: str
    tools: list[str]
    correct: bool = False
    degenerate: list[str] = field(default_factory=list)
    missing: list[list[str]] = field(default_factory=list)
    forbidden: list[str] = field(default_factory=list)
    unrequested: list[str] = field(default_factory=list)
    missed_tool: bool = False
    no_reply: bool = False
    #: The call had already ended (an earlier turn hung up or transferred).
    after_end: bool = False
    #: The reply was the agent's fallback ("Sorry, could you say that again?"): nothing
    #: the model wrote survived the guards.
    fallback: bool = False
    wer: float | None = None
    latency: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "id": self.item.id,
            "category": self.item.category,
            "said": self.item.say,
            "heard": self.heard,
            "reply": self.reply,
            "tools": self.tools,
            "expected_tool": self.item.tool,
            "correct": self.correct,
            "degenerate": self.degenerate,
            "missing": self.missing,
            "forbidden": self.forbidden,
            "unrequested": self.unrequested,
            "missed_tool": self.missed_tool,
            "no_reply": self.no_reply,
            "after_end": self.after_end,
            "fallback": self.fallback,
            "wer": self.wer,
            "latency": self.latency,
        }


def word_error_rate(said: str, heard: str) -> float:
    """WER of ``heard`` against ``said`` on :func:`words` (jiwer), 1.0 when nothing was heard."""
    ref = " ".join(words(said))
    hyp = " ".join(words(heard))
    if not hyp:
        return 1.0
    return float(jiwer.wer(ref, hyp))


def score_turn(
    item: EvalItem,
    heard: str | None,
    reply: str,
    tools: list[str],
    latency: dict | None = None,
    asr: bool = True,
    after_end: bool = False,
) -> TurnScore:
    """Score one turn.

    Args:
        item: the evaluation item.
        heard: the final transcript (``None``: the turn never reached the agent:
            VAD or ASR heard nothing).
        reply: what the agent said, as played.
        tools: tools the call leg carried out in this turn (``end_call``,
            ``transfer``, ``collect_digits``).
        asr: whether the words went through ASR (else no WER).
        after_end: the call was over before this turn (it counts as wrong).
    """
    s = TurnScore(item, heard or "", reply, list(tools), latency=dict(latency or {}), after_end=after_end)
    s.wer = word_error_rate(item.say, heard or "") if asr and not after_end else None
    if heard is None:
        s.no_reply = not after_end
        s.missed_tool = item.tool != "none"
        return s
    s.degenerate = degenerate_kinds(reply)
    if not words(reply) and item.tool == "none":
        s.degenerate.append("empty")
    w = words(reply)
    s.missing = [group for group in item.must if not any(contains(w, alt) for alt in group)]
    s.forbidden = [p for p in item.must_not if contains(w, p)]
    s.unrequested = [t for t in tools if t != item.tool]
    s.missed_tool = item.tool != "none" and item.tool not in tools
    s.correct = not (s.degenerate or s.missing or s.forbidden or s.unrequested or s.missed_tool)
    return s
