"""Answering-machine detection, sans-IO: who answered an outbound call, and when a
voicemail is ready for the message.

On Elastic SIP Trunking a person and a voicemail box both answer with the same
``200 OK``; only the audio tells them apart. :class:`AnsweringMachineDetector` is fed
the callee's 20 ms frames (PCM16 mono 8000 Hz, 160 samples) with the VAD's decision,
and the transcripts it asked for; it returns actions and never does I/O. Time is the
call audio's own: 20 ms a frame from the answer, so a test drives it without a clock.

The verdict (:class:`Verdict`) combines three signals:

- **the beep** (:mod:`.tone`): a beep before any verdict is a machine at once;
- **the words** of the greeting: a voicemail greeting's, a carrier message's or a
  call-screening prompt's phrases (:data:`MACHINE_PHRASES`) make it a machine, as soon
  as a transcript carries them (while the greeting is still going on);
- **the speech/silence pattern**, after Asterisk's ``AMD()``: no speech for
  ``initial_silence_s`` is ``unknown`` (silence, or noise that carried no words, or only
  words Whisper was unsure of: average log probability under ``min_logprob``); a
  greeting that ends with ``after_greeting_silence_s`` of silence is a person's when it
  was short (``max_human_greeting_s``) or ends in a question, else a machine's; speech
  without a pause for ``max_greeting_s`` is a machine's.

After a ``machine`` verdict the detector waits for the beep's end and ``beep_quiet_s`` of
quiet after it (:class:`SpeakMessage` ``beep``; a tone followed by more tones or speech,
as a carrier's information tones are, is not the beep), or for ``no_beep_silence_s`` of silence after the greeting (``silence``), or
gives up after ``beep_timeout_s`` (:class:`GiveUp`). It never says to speak while a tone
or the greeting is still going on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..audio.wire import FRAME_SAMPLES, SAMPLE_RATE
from ..config import AmdSettings
from .tone import Beep, ToneDetector

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE

#: Phrases that only a machine says when it answers a call: voicemail greetings, carrier
#: intercepts, call screening and IVRs (lower case, after :func:`normalize`).
MACHINE_PHRASES = (
    "leave a message",
    "leave your message",
    "leave me a message",
    "leave us a message",
    "leave a voicemail",
    "leave your name",
    "leave a brief message",
    "leave a detailed message",
    "leave your number",
    "voicemail",
    "voice mail",
    "mailbox",
    "voice messaging",
    "after the tone",
    "after the beep",
    "at the tone",
    "at the beep",
    "record your message",
    "recording your message",
    "not available",
    "unavailable",
    "can't take your call",
    "cannot take your call",
    "can't take the call",
    "can't come to the phone",
    "cannot come to the phone",
    "can't get to the phone",
    "unable to take your call",
    "unable to answer",
    "you have reached",
    "you've reached",
    "get back to you",
    "return your call",
    "i'll call you back",
    "we'll call you back",
    "not in service",
    "no longer in service",
    "been disconnected",
    "the number you have dialed",
    "the number you dialed",
    "the person you are calling",
    "the person you're calling",
    "the party you are calling",
    "the subscriber",
    "wireless customer",
    "not reachable",
    "try your call again",
    "please try again later",
    "screening service",
    "call screening",
    "say your name",
    "state your name",
    "record your name",
    "reason for your call",
    "reason for calling",
    "why you're calling",
    "what you're calling about",
    "stay on the line",
    "press one",
    "press 1",
    "press two",
    "press 2",
    "press pound",
    "for english",
)

#: What Whisper writes for noise or a breath: no words at all.
_HALLUCINATIONS = {"", "you", "thank you", "thanks for watching", "bye"}


def normalize(text: str) -> str:
    """Lower case, curly apostrophes straight, everything but letters, digits and
    apostrophes a single space."""
    text = text.lower().replace("\u2019", "'")
    return " ".join(re.sub(r"[^a-z0-9']+", " ", text).split())


#: "leave" and, within three words, what one leaves on a machine ("leave me the message",
#: "leave your name and number").
_LEAVE = re.compile(r"\bleave(?: [a-z']+){0,3} (?:message|voicemail|name|number|details)\b")


def machine_phrase(text: str, phrases: tuple[str, ...] | list[str] = MACHINE_PHRASES) -> str | None:
    """The first of ``phrases`` that ``text`` holds on word boundaries (or a "leave ...
    message" of up to three words between), or ``None``."""
    norm = normalize(text)
    padded = f" {norm} "
    for phrase in phrases:
        if f" {phrase} " in padded:
            return phrase
    found = _LEAVE.search(norm)
    return found.group(0) if found else None


@dataclass(frozen=True)
class Transcribe:
    """Transcribe ``pcm`` (PCM16 mono 8000 Hz: the greeting so far, up to ``upto`` seconds
    of call audio) and hand the text to :meth:`AnsweringMachineDetector.transcript` with ``id``."""

    id: int
    pcm: np.ndarray = field(repr=False)
    upto: float


@dataclass(frozen=True)
class Verdict:
    """Who answered: ``human``, ``machine`` or ``unknown``; ``reason`` (``beep``,
    ``words: <phrase>``, ``short greeting``, ``question``, ``long greeting``, ``silence``,
    ``noise``); ``at``: seconds of call audio after the answer; ``greeting_end``: when
    the callee's last speech before the verdict ended (``None``: none)."""

    kind: str
    reason: str
    at: float
    transcript: str = ""
    greeting_end: float | None = None
    #: Whisper's average token log probability of ``transcript`` (``None``: unknown).
    logprob: float | None = None


@dataclass(frozen=True)
class SpeakMessage:
    """Speak the voicemail message now (``at`` seconds of call audio): after the ``beep``
    (``beep`` holds it), or after the greeting and ``silence``."""

    at: float
    how: str
    beep: Beep | None = None


@dataclass(frozen=True)
class GiveUp:
    """No beep and no quiet moment came within ``beep_timeout_s``: hang up."""

    at: float


Action = Transcribe | Verdict | SpeakMessage | GiveUp


class AnsweringMachineDetector:
    """See the module docstring.

    Args:
        settings: :class:`bridge.config.AmdSettings`.

    Attributes:
        verdict: the :class:`Verdict`, once given.
        beeps: every beep heard.
        t: seconds of call audio fed so far.
    """

    MAX_AUDIO_S = 30.0

    def __init__(self, settings: AmdSettings) -> None:
        self.s = settings
        self.phrases = tuple(p.lower() for p in settings.machine_phrases) or MACHINE_PHRASES
        self.tone = ToneDetector(
            settings.beep_min_hz, settings.beep_max_hz, settings.beep_min_ms, settings.beep_max_ms, settings.beep_purity
        )
        self.t = 0.0
        self.verdict: Verdict | None = None
        self.beeps: list[Beep] = []
        self.done = False
        self._frames: list[np.ndarray] = []
        self._audio_start = 0.0  # call time of self._frames[0]
        self._first_speech: float | None = None
        self._last_voiced_end: float | None = None
        self._segment_start = 0.0
        self._speech_s = 0.0
        self._noise = False
        self._next_id = 0
        self._pending: int | None = None
        self._pending_upto = 0.0
        self._asked_at_speech = 0.0
        self._text = ""
        self._text_upto = -1.0
        self._beep: Beep | None = None
        self._logprob: float | None = None

    # ------------------------------------------------------------ inputs

    def feed(self, frame: np.ndarray, voiced: bool) -> list[Action]:
        """One 20 ms frame of the callee (PCM16 mono 8000 Hz, 160 samples) and whether the
        VAD called it speech. Returns the actions it calls for (possibly none)."""
        if self.done:
            return []
        start = self.t
        self.t = round(self.t + FRAME_S, 6)
        beep = self.tone.feed(frame, start)
        rms = float(np.sqrt(np.mean(np.asarray(frame, dtype=np.float64) ** 2))) if len(frame) else 0.0
        voiced = voiced and not self.tone.in_tone and rms >= self.s.min_speech_rms
        if self.verdict is None:
            self._keep(frame)
        if voiced:
            if self._first_speech is None:
                self._first_speech = start
                self._segment_start = start
            elif self._last_voiced_end is not None and start - self._last_voiced_end >= self.s.after_greeting_silence_s:
                self._segment_start = start
            self._last_voiced_end = self.t
            self._speech_s += FRAME_S
        if beep is not None:
            self.beeps.append(beep)
        if self.verdict is None:
            return self._listening(beep, voiced)
        return self._awaiting_beep(beep, voiced)

    def transcript(self, request_id: int, text: str, logprob: float | None = None) -> list[Action]:
        """The text of the :class:`Transcribe` with ``request_id`` (empty: no words) and
        the recognizer's average log probability for it (``None``: not known)."""
        if request_id != self._pending:
            return []
        self._pending = None
        self._text, self._text_upto = text.strip(), self._pending_upto
        self._logprob = logprob
        if self.verdict is not None or self.done:
            return []
        phrase = machine_phrase(self._text, self.phrases)
        if phrase is not None:
            return self._give("machine", f"words: {phrase}")
        if self._greeting_over():
            return self._decide_end()
        return []

    # ------------------------------------------------------------ phases

    def _keep(self, frame: np.ndarray) -> None:
        self._frames.append(np.asarray(frame, dtype=np.int16))
        if len(self._frames) * FRAME_S > self.MAX_AUDIO_S:
            self._frames.pop(0)
            self._audio_start += FRAME_S

    def _silence(self) -> float:
        return self.t - self._last_voiced_end if self._last_voiced_end is not None else self.t

    def _greeting_over(self) -> bool:
        return self._first_speech is not None and self._silence() >= self.s.after_greeting_silence_s

    def _listening(self, beep: Beep | None, voiced: bool) -> list[Action]:
        s = self.s
        if beep is not None:
            return self._give("machine", "beep") + self._awaiting_beep(beep, voiced)
        if self._first_speech is None:
            if self.t >= s.initial_silence_s:
                return self._give("unknown", "noise" if self._noise else "silence")
            return []
        actions: list[Action] = []
        if voiced:
            if self.t - self._segment_start >= s.max_greeting_s:
                return self._give("machine", "long greeting")
            if self._speech_s - self._asked_at_speech >= s.interim_every_s:
                actions += self._ask()
        else:
            covered = self._text_upto >= self._last_voiced_end or (
                self._pending is not None and self._pending_upto >= self._last_voiced_end
            )
            if self._silence() >= s.transcribe_after_s and not covered and self._pending is None:
                actions += self._ask()
            if self._greeting_over() and self._text_upto >= self._last_voiced_end:
                return actions + self._decide_end()
        if self.t >= s.total_analysis_s:
            return actions + self._at_deadline()
        return actions

    def _ask(self) -> list[Action]:
        if self._pending is not None:
            return []
        self._next_id += 1
        self._pending, self._pending_upto = self._next_id, self.t
        self._asked_at_speech = self._speech_s
        lead = max(self._audio_start, (self._first_speech or 0.0) - 0.3)
        first = int(round((lead - self._audio_start) / FRAME_S))
        return [Transcribe(self._next_id, np.concatenate(self._frames[first:]), self.t)]

    def _decide_end(self) -> list[Action]:
        """The greeting ended in silence and its transcript covers it."""
        text = self._text
        unsure = self._logprob is not None and self._logprob < self.s.min_logprob
        if normalize(text) in _HALLUCINATIONS or unsure:
            # Sound without words (noise, a breath): as if nobody had spoken yet.
            self._noise = True
            self._first_speech = self._last_voiced_end = None
            self._speech_s = self._asked_at_speech = 0.0
            if self.t >= self.s.initial_silence_s:
                return self._give("unknown", "noise")
            return []
        if self._speech_s <= self.s.max_human_greeting_s:
            return self._give("human", "short greeting")
        if text.rstrip().endswith("?"):
            return self._give("human", "question")
        return self._give("machine", "long greeting")

    def _at_deadline(self) -> list[Action]:
        phrase = machine_phrase(self._text, self.phrases)
        if phrase is not None:
            return self._give("machine", f"words: {phrase}")
        if self._speech_s > self.s.max_human_greeting_s:
            return self._give("machine", "long greeting")
        return self._give("unknown", "noise" if self._noise or self._speech_s == 0 else "undecided")

    def _give(self, kind: str, reason: str) -> list[Action]:
        self.verdict = Verdict(kind, reason, self.t, self._text, self._last_voiced_end, self._logprob)
        self._frames.clear()
        if kind != "machine":
            self.done = True
        return [self.verdict]

    def _awaiting_beep(self, beep: Beep | None, voiced: bool = False) -> list[Action]:
        s = self.s
        if beep is not None:
            self._beep = beep
        elif voiced or self.tone.in_tone:
            self._beep = None  # more tones (a carrier's three) or speech: that was not the beep
        if self._beep is not None:
            if self.t - self._beep.end >= s.beep_quiet_s:
                self.done = True
                return [SpeakMessage(self.t, "beep", self._beep)]
            return []
        if self.tone.in_tone:
            return []
        quiet_since = max(self._last_voiced_end or 0.0, self.beeps[-1].end if self.beeps else 0.0)
        if s.no_beep_silence_s > 0 and self.t - quiet_since >= s.no_beep_silence_s and self.t - self.verdict.at >= 0:
            self.done = True
            return [SpeakMessage(self.t, "silence")]
        if self.t - self.verdict.at >= s.beep_timeout_s:
            self.done = True
            return [GiveUp(self.t)]
        return []
