"""Which of the agent's facts a caller's words are about.

A 270M base model does not reliably find "a filling 150 dollars" in a block
of eight facts, but it copies a fact written right above its line well. So the
completion prompt puts the most relevant fact next to each caller line (the
examples' and the live one), and :class:`FactIndex` picks it: word overlap
between the caller's words and each fact, where words of the same concept
count as one (``charge``, ``cost``, ``price``, ``how much`` are all about
prices; ``open``, ``close``, ``hours``, ``late`` about hours), and words that
occur in many facts count less. No model, no network: a dozen facts are
looked up in microseconds.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter

#: Receptionist concepts: words that ask about the same thing. Not domain facts:
#: what any business's callers ask about (hours, prices, place, parking, insurance,
#: appointments, people).
CONCEPTS = {
    "HOURS": "open opens opening close closes closing closed hours hour time times late early weekend weekends",
    "PRICE": "cost costs price prices charge charges much fee fees pay expensive cheap dollars dollar afford",
    "PLACE": "where address located location find street directions get",
    "PARK": "park parking car garage",
    "INSURANCE": "insurance insurances insurer accept accepted accepts take cover covered plan plans",
    "BOOK": "book booking appointment appointments schedule slot available availability come visit",
    "PEOPLE": "dentist dentists doctor doctors dr staff who",
    "URGENT": "emergency emergencies toothache pain hurts urgent",
    "NEW": "new patients patient kids children child son daughter family",
}
_CONCEPT_OF = {w: c for c, words in CONCEPTS.items() for w in words.split()}
_STOP = frozenset(
    "a an the and or but to of in on at for with from by is are was be been do does did can could would will "
    "i you we they it this that there here my your our me us what when how which if not no yes please hi hello "
    "just like so some any about as into than then them their its have has had am pm one next".split()
)


def _terms(text: str) -> list[str]:
    out = []
    for w in re.findall(r"[a-z0-9]+", text.lower().replace("-", "")):
        if w in _STOP:
            continue
        if w in _CONCEPT_OF:
            out.append(_CONCEPT_OF[w])
            continue
        if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]  # plural: "sundays" -> "sunday"
        out.append(w)
    return out


class FactIndex:
    """Look facts up by the caller's words.

    Args:
        facts: the agent's facts (``agent.facts``), one or two sentences each.
    """

    def __init__(self, facts: list[str]) -> None:
        self.facts = [" ".join(f.split()) for f in facts if f.strip()]
        self._terms = [set(_terms(f)) for f in self.facts]
        df = Counter(t for terms in self._terms for t in terms)
        n = max(1, len(self.facts))
        self._idf = {t: math.log(1 + n / c) for t, c in df.items()}

    def lookup(self, text: str) -> str | None:
        """The fact ``text`` is most about, or ``None`` when it shares nothing with any."""
        asked = set(_terms(text))
        best, best_score = None, 0.0
        for fact, terms in zip(self.facts, self._terms):
            score = sum(self._idf[t] for t in asked & terms)
            if score > best_score:
                best, best_score = fact, score
        return best


_NEGATION = re.compile(r"\b(not|no|never|closed|don't|doesn't|cannot|can't|won't|isn't|aren't)\b", re.I)
_NUMBER = re.compile(r"\d+")
_QUESTION = re.compile(
    r"\?|^\s*(what|when|where|who|which|why|how|can|could|do|does|did|are|is|will|would|should|may)\b", re.I
)


def _names(fact: str) -> set[str]:
    """Capitalized words after the first word ("Maple", "Aetna", "Patel"), lower-cased, minus a plural s."""
    words = re.findall(r"[A-Za-z]+", fact)
    return {w.lower().rstrip("s") for w in words[1:] if w[0].isupper() and w.lower() not in ("dr", "i", "am", "pm")}


def is_question(text: str) -> bool:
    """Whether the caller asks something: a ``?`` (Whisper punctuates) or a question word first."""
    return bool(_QUESTION.search(text))


def grounded(reply: str, fact: str, known_numbers: set[str], caller: str = "") -> bool:
    """Whether ``reply`` answers from ``fact`` rather than against it.

    - a number in the reply must be one the facts (or the caller) contain:
      "It's $15.00" for a 60-dollar check-up is not;
    - when the fact has numbers, the reply carries at least one of them;
    - when the fact says no ("not", "closed"), the reply says no too:
      "Yes, we are open on Sundays" against "We are closed on Sunday" is not;
    - when the fact names things (Aetna, Patel) and has no numbers, the reply
      names at least one of them ("Yes, we do." is not an answer from the fact);
    - the reply says something of the fact that the caller did not say
      ("Yes, there is parking nearby" against "There is free parking behind the
      building" only repeats the question).
    """
    numbers = set(_NUMBER.findall(reply))
    if numbers - known_numbers:
        return False
    fact_numbers = set(_NUMBER.findall(fact))
    if fact_numbers and not numbers & fact_numbers:
        return False
    if _NEGATION.search(fact) and not _NEGATION.search(reply):
        return False
    names = _names(fact)
    if names and not fact_numbers:
        said = {w.lower().rstrip("s") for w in re.findall(r"[A-Za-z]+", reply)}
        if not names & said:
            return False
    news = set(_terms(fact)) - set(_terms(caller))
    if news and not news & set(_terms(reply)):
        return False
    return True


@functools.lru_cache(maxsize=32)
def _index(facts: tuple[str, ...]) -> FactIndex:
    return FactIndex(list(facts))


def index_for(agent) -> FactIndex | None:
    """The (cached) :class:`FactIndex` of ``agent.facts``, ``None`` without facts."""
    return _index(tuple(agent.facts)) if agent.facts else None


def grounding_fact(agent, caller: str) -> tuple[str | None, set[str]]:
    """For the guard: the fact a caller's question is about (``None`` when the caller
    asks nothing, or nothing the facts cover, or ``agent.fact_lookup`` is off),
    and the numbers the reply may use (those of the facts and of the caller)."""
    index = index_for(agent)
    if index is None or not agent.fact_lookup or not is_question(caller) or "BOOK" in _terms(caller):
        return None, set()  # not a question, or a request to book: the model leads
    known = set(_NUMBER.findall(" ".join(agent.facts) + " " + caller))
    return index.lookup(caller), known
