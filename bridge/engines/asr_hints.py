"""Whisper's initial prompt, built from the agent's vocabulary.

Whisper conditions on its prompt: names it has just "seen" (Maple Street
Dental, Aetna, Dr. Moreno) are recognized over a phone line where it would
otherwise hear "Etna" or "Marino". The prompt is the agent's proper names and
service terms, taken from ``agent.persona`` and ``agent.facts``, as a short
comma-separated list (Whisper reads only the last 224 tokens of a prompt).
"""

from __future__ import annotations

import re

#: Capitalized words that start sentences or are too common to help.
_COMMON = frozenset(
    "The A An We Our You Your For There This That It Sam Monday Tuesday Wednesday Thursday Friday Saturday Sunday "
    "Yes No Sure Of And But Or If In On At To From By With Sorry Hello Hi Thanks Thank".split()
)
#: Service words worth priming in any domain, when the facts use them.
_TERMS = re.compile(
    r"\b(check-up|checkup|cleaning|filling|whitening|x-ray|appointment|insurance|emergency|toothache)s?\b", re.I
)


def vocabulary(agent) -> list[str]:
    """Proper names (runs of capitalized words, "Dr." kept) and service terms of
    ``agent.name``, ``agent.persona`` and ``agent.facts``, in first-seen order."""
    text = " ".join([agent.persona, *agent.facts])
    names = re.findall(r"(?:Dr\. )?[A-Z][a-z]+(?: [A-Z][a-z]+)*", text)
    out: list[str] = []
    for name in names:
        words = [w for w in name.split() if w not in _COMMON]
        if not words:
            continue
        phrase = " ".join(words)
        if not any(phrase in o for o in out):
            out.append(phrase)
    for term in _TERMS.findall(text):
        if term.lower() not in (o.lower() for o in out):
            out.append(term.lower())
    return out


def initial_prompt(models, agent) -> str | None:
    """The ASR prompt that ``models.asr_prompt`` asks for (``auto``: from :func:`vocabulary`)."""
    if models.asr_prompt == "auto":
        words = vocabulary(agent)
        return (", ".join(words) + ".") if words else None
    return models.asr_prompt or None
