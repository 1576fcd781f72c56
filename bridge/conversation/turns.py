"""The call brain's vocabulary: the leg interface, what the agent says and how
much of it was heard, agent frames, and end-of-sentence reading of transcripts.

Split out of :mod:`bridge.conversation.engine`; the engine re-exports
these names.
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class CallLeg(Protocol):
    """What a conversation needs from its call leg."""

    call_id: str

    def hangup(self, reason: str) -> None:
        """End the call (SIP: BYE; Media Streams: end the stream/call)."""

    def clear_playout(self) -> None:
        """Drop agent audio queued below the conversation (Media Streams: send ``clear``)."""

    def transfer(self, target: str) -> None:
        """Blind-transfer the caller to ``target`` (SIP: REFER). The leg reports a
        failure back through :meth:`Conversation.transfer_failed`."""


@dataclass
class AgentUtterance:
    """One thing the agent says, and how much of it reached the caller.

    ``sentences[i]`` was synthesized to ``samples[i]`` samples (8000 Hz);
    ``played`` counts samples handed to the leg for sending.
    """

    sentences: list[str] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)
    played: int = 0
    interrupted: bool = False

    def played_text(self) -> str:
        """The words the caller actually heard.

        Whole sentences fully played, plus the played fraction of the current
        sentence's words (rounded down): what the caller heard, and all the history keeps.
        """
        out: list[str] = []
        left = self.played
        for text, n in zip(self.sentences, self.samples):
            if left >= n:
                out.append(text)
                left -= n
                continue
            words = text.split()
            k = int(len(words) * left / n) if n else 0
            if k:
                out.append(" ".join(words[:k]) + "...")
            break
        return " ".join(out)


#: Last words after which a sentence is not over (endpointing waits longer): conjunctions,
#: prepositions, articles, possessives, fillers. Words that often end a finished sentence
#: ("Thank you.", "Where is it?", "I'd like that.") are not here; the language model's
#: end-of-line probability judges those (bridge/conversation/turntaking.py).
UNFINISHED_WORDS = frozenset(
    "and or but so um uh er erm hmm the a an to because like with of for my your our their "
    "if then which who when where i we".split()
)


def joined(heard: str, more: str) -> str:
    """A transcript of an utterance heard in two passes: ``heard`` (up to a pause, its
    final punctuation dropped, and the dash or comma Whisper writes where speech breaks
    off: "Is it okay if I bring-") and ``more`` (what came after the pause)."""
    head = " ".join(heard.strip().rstrip(".?!…,;:-–— ").split())
    return f"{head} {more.strip()}".strip() if head else more.strip()


def sentence_state(text: str) -> str:
    """``finished``, ``unfinished`` or ``unknown`` for a (partial) caller transcript.

    Whisper punctuates: a final ``.``, ``?`` or ``!`` reads as finished unless
    the last word is a conjunction/filler/article (``and``, ``um``, ``the``...)
    or the text trails off with ``...``.
    """
    text = text.strip()
    if not text:
        return "unknown"
    words = re.findall(r"[a-z']+", text.lower())
    if text.endswith(("...", "…", ",", "-")) or (words and words[-1] in UNFINISHED_WORDS):
        return "unfinished"
    if text.endswith((".", "?", "!")):
        return "finished"
    return "unknown"


class EitherEvent:
    """Set when either event is set: what the LLM adapters poll (``is_set()``) to stop."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


def probe_text(text: str) -> str:
    """A transcript without its final punctuation (Whisper writes "." or "?" after a
    fragment too), for asking the language model whether the line ends there."""
    return " ".join(text.strip().rstrip(".?!,;:…-– ").split())


@dataclass(eq=False)
class Reply:
    """A reply to one caller utterance, prepared while the end of the turn is judged.

    It is generated (LLM, guards, TTS) as soon as the utterance's speculative transcript
    is known, into :attr:`stash`; nothing of it is heard, in the history or in the call
    record until it is *released* at the end of the turn. If the caller goes on first it
    is dropped, and nothing of it ever existed for the call.

    ``utterance``/``frames``: the utterance and how much of it the transcript covers;
    ``times``: the turn's latency clock readings (monotonic seconds).
    """

    utterance: int
    frames: int
    cancel: threading.Event
    times: dict = field(default_factory=dict)
    text: str | None = None
    utt: AgentUtterance | None = None
    rule: str = "unknown"
    reason: str = ""
    scores: dict = field(default_factory=dict)
    stash: list = field(default_factory=list)
    task: asyncio.Task | None = None
    failure: Exception | None = None
    asr_done: float | None = None
    release_asked: bool = False
    released: bool = False
    dropped: bool = False
    released_event: asyncio.Event = field(default_factory=asyncio.Event)
    #: Resolved with the LLM's end-of-line probability from the reply's own prompt
    #: evaluation (``None``: none came); ``None`` when not asked for.
    probed: asyncio.Future | None = None


@dataclass
class AgentFrame:
    """One 20 ms frame of agent audio (PCM16 8 kHz, 160 samples) and whose it is.

    ``sentence_end`` marks the last frame of a sentence (Media Streams sends a
    ``mark`` there); ``offset`` is the owner's played-sample count once this
    frame has been played.
    """

    pcm: np.ndarray
    owner: AgentUtterance
    sentence_end: bool = False
    offset: int = 0
