"""Decoding guards: what the LLM writes is checked before a word of it is spoken.

A small base model loops ("I'm sorry, I'm sorry, I'm sorry, ..."), writes the
caller's next line ("... Caller: yes"), repeats itself, runs on for sentences,
or says goodbye to a caller who asked a question. :class:`ReplyGuard` watches a
reply as it streams and decides, sentence by sentence, what may be spoken; a
degenerate part is never spoken and never enters the history. When nothing of
a reply survives, the agent says ``agent.fallback`` (a short clarifying
question) instead.

llama.cpp's own repeat and presence penalties (``agent.repeat_penalty``,
``agent.presence_penalty``) make loops rarer; this module makes them harmless.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from .facts import grounded
from .sentences import first_sentence

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
#: The model started writing another speaker's line.
_LABEL = re.compile(
    r"(?:^|\s|[.!?,;])(caller|user|customer|patient|assistant|agent|receptionist|system|note|facts?)\s*:", re.I
)
#: A stage direction such as the prompt's "(Sam looks it up: ...)".
_ASIDE = re.compile(r"\(")
_FAREWELL = re.compile(r"\b(good ?-?bye|bye|have a (?:nice|good|great|wonderful) (?:day|one|evening|weekend))\b", re.I)
_MARKER = re.compile(r"\[[^\]]*\]?")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("’", "'").replace("-", " "))


def repeats(text: str) -> bool:
    """Whether ``text`` loops: a word 2-gram three times, or a word 3-gram twice.

    Shorter patterns are normal speech ("from 8 am to 6 pm ... from 9 am to 1 pm").
    """
    w = _words(text)
    grams2 = Counter(tuple(w[i : i + 2]) for i in range(len(w) - 1))
    grams3 = Counter(tuple(w[i : i + 3]) for i in range(len(w) - 2))
    return any(c >= 3 for c in grams2.values()) or any(c >= 2 for c in grams3.values())


_FILLER = frozenset(
    "yes yeah sure no of course we i you it a an the is are can do does we're i'm you're it's that this there to on in at for with and or".split()
)


def echoes(reply: str, caller: str) -> bool:
    """Whether ``reply`` only says the caller's words back ("Yes, I can recommend a
    good pizza place" to "Can you recommend a good pizza place?"): at least two
    content words, all of them the caller's."""
    said = {w.rstrip("s") for w in _words(caller)}
    content = [w for w in _words(reply) if w not in _FILLER]
    return len(content) >= 2 and all(w.rstrip("s") in said for w in content)


def first_sentences(text: str) -> list[str]:
    """The sentences of an earlier reply (for :class:`ReplyGuard`'s repeat check)."""
    out = []
    while text.strip():
        found = first_sentence(text + " ")
        if found is None:
            out.append(text.strip())
            break
        sentence, text = found
        out.append(sentence)
    return out


@dataclass
class Verdict:
    """``speak``: the text to say (may be a cut-down sentence, or empty);
    ``stop``: generation must stop here; ``reason``: why something was dropped."""

    speak: str
    stop: bool = False
    reason: str = ""


class ReplyGuard:
    """Checks one reply as it is generated.

    Args:
        agent_name: the agent's speaker label (``"Sam"``), which must never be spoken.
        max_sentences: sentences per reply; the rest is not generated.
        farewell_allowed: whether the caller took leave (:func:`bridge.conversation.intents.wants_to_end`);
            when not, a sentence that says goodbye is dropped.
        fact: the fact the caller's question is about (:func:`bridge.conversation.facts.grounding_fact`);
            a first sentence that is not :func:`~bridge.conversation.facts.grounded` in it
            ("Yes, we are open on Sundays" against "We are closed on Sunday") is
            replaced by the fact itself, and the reply ends there.
        known_numbers: numbers a reply may use (the facts' and the caller's).
        caller: what the caller said (a reply must add to it, not repeat it).
        previous: the agent's previous reply; a sentence of it said again, to
            different words of the caller, is dropped (a small model given garbled
            words repeats itself: "asked three different questions, it gave the
            same sentence three times").
    """

    def __init__(
        self,
        agent_name: str,
        max_sentences: int = 2,
        farewell_allowed: bool = False,
        fact: str | None = None,
        known_numbers: set[str] | None = None,
        caller: str = "",
        previous: str = "",
    ) -> None:
        self.max_sentences = max_sentences
        self.farewell_allowed = farewell_allowed
        self.fact = fact
        self.known_numbers = known_numbers or set()
        self.caller = caller
        self._previous = {" ".join(_words(p)) for p in first_sentences(previous)}
        self._name = re.compile(rf"(?:^|\s|[.!?,;]){re.escape(agent_name)}\s*:", re.I)
        self.spoken: list[str] = []
        self.dropped: list[str] = []
        #: The last spoken entry is a first clause whose sentence goes on.
        self._clause_open = False

    def _cut_label(self, text: str) -> tuple[str, bool]:
        cut = len(text)
        for pattern in (_LABEL, self._name, _ASIDE):
            m = pattern.search(text)
            if m:
                cut = min(cut, m.start())
        return text[:cut], cut < len(text)

    def partial(self, buffer: str) -> bool:
        """Whether the unfinished text ``buffer`` (no sentence end yet) is already
        degenerate: a loop or a speaker label. ``True`` means stop generating now."""
        _, leaked = self._cut_label(buffer)
        return leaked or repeats(_MARKER.sub(" ", buffer))

    def clause(self, text: str) -> Verdict:
        """The first clause of the reply's first sentence, spoken before the sentence ends
        (:func:`bridge.conversation.sentences.first_clause`): the same checks as a
        sentence, and it counts as one sentence together with the rest of its sentence.
        Only for a turn without a grounding fact (whose check needs the whole sentence)."""
        if self.fact is not None or self.spoken:
            raise ValueError("a first clause is only checked first, on a turn without a grounding fact")
        verdict = self.sentence(text)
        if verdict.speak and not verdict.stop:
            self._clause_open = True
        return verdict

    def sentence(self, text: str) -> Verdict:
        """One complete sentence (or the reply's unfinished tail) -> what to speak."""
        if self._clause_open:
            return self._rest_of_clause(text)
        if len(self.spoken) >= self.max_sentences:
            return self._drop(text, "too_long", stop=True)
        body, leaked = self._cut_label(text)
        speakable = _MARKER.sub(" ", body)
        if repeats(speakable):
            return self._drop(text, "repetition", stop=True)
        norm = " ".join(_words(speakable))
        if norm and any(norm == " ".join(_words(s)) for s in self.spoken):
            return self._drop(text, "repetition", stop=True)
        if not self.farewell_allowed and _FAREWELL.search(speakable):
            return self._drop(text, "farewell", stop=True)
        if norm in self._previous:
            return self._drop(text, "repeated_reply", stop=True)
        if self.fact and not self.spoken and norm and not grounded(body, self.fact, self.known_numbers, self.caller):
            # The model answered the question against (or without) the fact it is
            # about: the fact itself is the answer.
            self.dropped.append(text)
            self.spoken.append(self.fact)
            return Verdict(self.fact, stop=True, reason="ungrounded")
        if not self.fact and not self.spoken and norm and echoes(body, self.caller):
            return self._drop(text, "echo", stop=True)
        if leaked:
            if not norm:
                return self._drop(text, "leak", stop=True)
            self.dropped.append(text[len(body) :])
            self.spoken.append(body.strip())
            return Verdict(body.strip(), stop=True, reason="leak")
        if norm:
            self.spoken.append(body.strip())
        return Verdict(body.strip(), stop=len(self.spoken) >= self.max_sentences)

    def _rest_of_clause(self, text: str) -> Verdict:
        """The rest of the sentence whose first clause was spoken: one sentence with it."""
        self._clause_open = False
        head = self.spoken.pop()
        verdict = self.sentence(text)
        if verdict.speak:
            self.spoken[-1] = f"{head} {self.spoken[-1]}"
        else:
            self.spoken.append(head)
        return verdict

    def finish(self) -> str | None:
        """At the end of the reply: ``None`` if something speakable was said, else
        ``"empty"`` (the fallback must be said instead)."""
        said = _words(" ".join(_MARKER.sub(" ", s) for s in self.spoken))
        return None if said else "empty"

    def _drop(self, text: str, reason: str, stop: bool) -> Verdict:
        self.dropped.append(text)
        return Verdict("", stop=stop, reason=reason)
