"""What turn-taking asks the conversation to do: a small, closed set of frozen actions
(:class:`~.turntaking.TurnTaking` returns lists of them; the conversation carries them out).
Times are monotonic seconds; audio is PCM16 mono 8000 Hz."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Action:
    """Something the owner must do. Every action names the utterance it is about
    (``utterance``: a counter, 1 for the first utterance of the call; 0: none)."""

    utterance: int


@dataclass(frozen=True)
class UtteranceStarted(Action):
    """The caller started speaking (``agent_active``: over the agent). The owner may
    evaluate the LLM prompt up to the caller's coming line meanwhile."""

    agent_active: bool = False


@dataclass(frozen=True)
class Speculate(Action):
    """Transcribe the utterance so far, score whether it is a finished turn, and report
    with :meth:`TurnTaking.speculated`. ``prepare``: also prepare the reply to it,
    unheard until :class:`EndOfTurn`.

    ``pcm`` (PCM16 8 kHz) is the audio to transcribe: all of the utterance, or, when
    the caller went on after a pause whose transcript is known (``heard``), only what
    came after that pause; the transcript is then ``heard`` joined with that of ``pcm``
    (:func:`.turns.joined`; Whisper, given a long pause inside the audio, tends to drop
    what follows it). ``utterance_pcm`` is all of it (for the end-of-turn model)."""

    pcm: np.ndarray | None = field(repr=False, default=None)
    frames: int = 0
    prepare: bool = True
    heard: str = ""
    utterance_pcm: np.ndarray | None = field(repr=False, default=None)


@dataclass(frozen=True)
class Discard(Action):
    """The caller went on: what was prepared for the utterance so far is stale."""


@dataclass(frozen=True)
class Transcribe(Action):
    """Transcribe ``pcm`` and report with :meth:`TurnTaking.heard`. ``purpose``:
    ``interim`` (the caller is speaking over the agent), ``judge`` (a pause reached
    ``barge_in_confirm_ms``) or ``final`` (a barge-in utterance ended unheard)."""

    purpose: str = "interim"
    pcm: np.ndarray | None = field(repr=False, default=None)


@dataclass(frozen=True)
class PauseAgent(Action):
    """Caller speech over the agent: stop playout at the next packet, drop nothing."""


@dataclass(frozen=True)
class ResumeAgent(Action):
    """The utterance that paused the agent was a backchannel or no words: play on."""

    heard: str = ""


@dataclass(frozen=True)
class Interrupt(Action):
    """A barge-in for good: drop what is queued, cancel the reply, keep what was played."""

    words: str = ""


@dataclass(frozen=True)
class EndOfTurn(Action):
    """The caller's turn is over: answer it.

    ``pcm``: the utterance (PCM16 8 kHz); ``text``: its transcript when known (the
    speculative pass covered all of it), else ``None``; ``prepared``: a reply to exactly
    this audio was asked for (:class:`Speculate` with ``prepare``); ``times``: monotonic
    seconds of ``speech_end`` (last voiced frame), ``endpoint`` and, with a text,
    ``asr_final``; ``rule``: ``finished``, ``unfinished`` or ``unknown`` (which threshold
    ended it); ``reason``: the signal that called it unfinished, if any."""

    pcm: np.ndarray | None = field(repr=False, default=None)
    text: str | None = None
    prepared: bool = False
    times: dict[str, float] = field(default_factory=dict)
    rule: str = "unknown"
    reason: str = ""
    #: The end-of-turn scores it was judged on (``p_text``, ``p_audio``; for the logs).
    scores: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Reprompt(Action):
    """Silence on both sides for ``reprompt_after_s``: ask whether the caller is there."""


@dataclass(frozen=True)
class GiveUp(Action):
    """No answer to ``max_reprompts`` reprompts: say goodbye and hang up."""


# ------------------------------------------------------------------ state
