"""Sentence boundaries in streamed LLM text, for speaking sentence by sentence.

A sentence ends at ``.``, ``!`` or ``?`` followed by white space, except after
a title or an initial ("Dr. Patel", "St. Mary's", "J. Smith"): cutting there
would speak "The dentists are Dr." as a sentence of its own and count it
against ``agent.max_sentences``.
"""

from __future__ import annotations

import re

_END = re.compile(r"[.!?]+(?=\s)")
_NOT_AN_END = re.compile(r"(?:\b(?:Dr|Mr|Mrs|Ms|St|Prof|Mt|vs|etc|No)|\b[A-Z])\.$")


def first_sentence(buffer: str) -> tuple[str, str] | None:
    """``(sentence, rest)`` when ``buffer`` holds a complete sentence, else ``None``.

    The sentence is stripped; ``rest`` starts after the white space that
    followed it.
    """
    for m in _END.finditer(buffer):
        head = buffer[: m.end()]
        if _NOT_AN_END.search(head):
            continue
        sentence = head.strip()
        if sentence:
            return sentence, buffer[m.end():].lstrip()
    return None
