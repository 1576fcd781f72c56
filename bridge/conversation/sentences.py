"""Sentence boundaries in streamed LLM text, for speaking sentence by sentence.

A sentence ends at ``.``, ``!`` or ``?`` followed by white space, except after
a title or an initial ("Dr. Patel", "St. Mary's", "J. Smith"): cutting there
would speak "The dentists are Dr." as a sentence of its own and count it
against ``agent.max_sentences``.

The first words of a reply may go to the voice before its sentence ends: at a
clause boundary (",", ";", ":" or a dash followed by white space) after enough words
to sound like a phrase of their own (:func:`first_clause`): "Yes, we are open on
Saturday from 9 am to 1 pm." starts with "Yes, we are open on Saturday," while the
model still writes the rest.
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
            return sentence, buffer[m.end() :].lstrip()
    return None


_CLAUSE = re.compile(r"(?:,|;|:|\s[-–—])(?=\s)")
#: A comma between digits ("1,500") or right after a number's unit is no clause end.
_NUMBER_COMMA = re.compile(r"\d,$")


def first_clause(buffer: str, min_words: int) -> tuple[str, str] | None:
    """``(clause, rest)`` when ``buffer`` starts with a clause of at least ``min_words``
    words ending at a clause boundary (",", ";", ":", " -"), else ``None``.

    The clause keeps its punctuation (the voice pauses there as it would in the whole
    sentence); ``rest`` starts after the white space that followed it.
    """
    for m in _CLAUSE.finditer(buffer):
        head = buffer[: m.end()]
        if _NUMBER_COMMA.search(head):
            continue
        if len(head.split()) >= min_words:
            return head.strip(), buffer[m.end() :].lstrip()
    return None
