"""Turn-taking: who speaks when. A sans-IO state machine fed 20 ms frames and a clock.

:class:`TurnTaking` owns no task, thread, model or socket. Its owner (the
:class:`~bridge.conversation.engine.Conversation`) feeds it every caller frame with the
VAD's verdict (:meth:`TurnTaking.frame`), the results of the work it asked for
(:meth:`TurnTaking.speculated`, :meth:`TurnTaking.heard`) and the time (``now``,
monotonic seconds, in every call), and carries out the :class:`Action` objects each call
returns. Tests drive it with a fake clock and no models (``tests/test_turntaking.py``).

**End of turn.** When the caller falls silent for ``speculate_after_ms``, the owner is
asked to :class:`Speculate`: transcribe the utterance, score how likely it is to be
finished, and start preparing a reply that nobody hears yet. Three signals say whether
the turn is over:

- the transcript's last words (:func:`.turns.sentence_state`: "...for", "...because",
  "um" are not the end of anything);
- the language model: the probability that the caller's line ends where the transcript
  stops (:meth:`bridge.engines.llm.LlamaCppLlm.end_probability`, under
  ``turn_text_threshold``: unfinished);
- the end-of-turn model on the audio (Smart Turn v3, :mod:`bridge.engines.turn`, under
  ``turn_audio_threshold``: unfinished).

A turn every signal calls finished ends after ``endpoint_fast_ms`` of silence; one that
any signal calls unfinished waits up to ``endpoint_slow_ms`` (a long silence still ends
it). A line whose end-of-line probability lies between ``turn_text_threshold`` and
``turn_text_sure`` (the model is not sure either way) is a short answer when it has at
most ``turn_short_words`` words ("Mornings.", "No, thanks.": answered fast), and waits
the long silence when longer ("Is it okay if I ... bring my dog?" heard at its pause as
"Is it okay if I buy?"). While the signals are not in, the turn ends after
``endpoint_silence_ms``. At the end
(:class:`EndOfTurn`) the prepared reply is released; if the caller speaks again first,
the speculation is dropped (:class:`Discard`) and the turn goes on.

**Barge-in**, in two steps (:mod:`.backchannel`): ``barge_in_min_speech_ms`` of caller
speech while the agent is active :class:`PauseAgent`; words that are not a backchannel
(an interim transcript, the pass at ``barge_in_confirm_ms`` of speech, or the final
transcript) :class:`Interrupt` it for good, and a backchannel or no words
:class:`ResumeAgent`. ``barge_in_confirm_ms = 0`` interrupts at once.

**Silence**: ``reprompt_after_s`` of silence on both sides :class:`Reprompt`; after
``max_reprompts`` unanswered, :class:`GiveUp`.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from ..audio.wire import FRAME_MS
from ..config import AgentSettings

# The actions are re-exported: callers read them as turntaking.EndOfTurn and so on.
from .actions import (  # noqa: F401
    Action,
    Discard,
    EndOfTurn,
    GiveUp,
    Interrupt,
    PauseAgent,
    Reprompt,
    ResumeAgent,
    Speculate,
    Transcribe,
    UtteranceStarted,
)
from .backchannel import BACKCHANNEL_WORDS, is_backchannel, words_of
from .endpointing import SilenceWatch, endpoint_threshold, unsure


@dataclass
class _Speculation:
    utterance: int
    frames: int
    prepare: bool
    text: str | None = None
    logprob: float | None = None
    p_text: float | None = None
    p_audio: float | None = None
    done_at: float | None = None
    failed: bool = False


@dataclass
class _Settling:
    """A barge-in utterance that ended: waiting for its transcript to decide."""

    utterance: int
    pcm: np.ndarray | None
    times: dict[str, float]
    rule: str


def _half(ms: int) -> int:
    """Half of ``ms``, at least one 20 ms frame."""
    return max(FRAME_MS, ms // 2)


class TurnTaking:
    """The turn-taking state of one call. See the module docstring.

    Args:
        agent: :class:`bridge.config.AgentSettings` (the thresholds named above).
        now: the call's start, monotonic seconds.
        asr_prompt: the recognizer's initial prompt: a transcript of only its words, heard
            over the agent, is Whisper's noise, no interruption (:func:`.backchannel.is_backchannel`).
    """

    def __init__(self, agent: AgentSettings, now: float, asr_prompt: str | None = None) -> None:
        self.agent = agent
        self._preroll: collections.deque[np.ndarray] = collections.deque(maxlen=max(1, agent.preroll_ms // FRAME_MS))
        self._backchannel_words = frozenset(w.lower() for w in agent.backchannel_words) or BACKCHANNEL_WORDS
        self._prompt_words = frozenset(words_of(asr_prompt or ""))
        self.in_speech = False
        self.utterance = 0
        self._frames: list[np.ndarray] = []
        self._voiced = 0
        self._silence = 0
        self._last_voiced_at = 0.0
        self._spec: _Speculation | None = None
        #: (frames, transcript) of the utterance up to a pause the caller went on after.
        self._heard: tuple[int, str] | None = None
        self._interim_running = False
        self._interim_frames = 0
        self.interim_text = ""
        self._barged = False
        self.paused: int | None = None
        self._withdrawn: int | None = None
        self._judging = False
        #: Speech (ms) of the utterance at which the next judging pass runs.
        self._judge_at_ms = 0
        self._confirmed: int | None = None
        self._settling: _Settling | None = None
        self._silence_watch = SilenceWatch(agent, now)

    # ----------------------------------------------------------- inputs

    def frame(
        self, pcm: np.ndarray, voiced: bool, now: float, agent_active: bool, asr_pass_s: float = 0.0
    ) -> list[Action]:
        """One 20 ms caller frame (PCM16 8 kHz, 160 samples) and whether it is speech
        (the VAD's verdict, the agent's own echo already taken out). ``agent_active``:
        the agent is speaking or answering (a barge-in would interrupt it).
        ``asr_pass_s``: seconds an ASR pass takes now; interim passes are skipped while
        it is more than half their interval."""
        out: list[Action] = []
        a = self.agent
        if voiced:
            self._silence_watch.caller_spoke(now)
            if not self.in_speech:
                self.in_speech = True
                self.utterance += 1
                self._frames = list(self._preroll)
                self._voiced = 0
                self._silence = 0
                self._barged = False
                self._judge_at_ms = a.barge_in_confirm_ms
                self._interim_frames = 0
                self.interim_text = ""
                self._heard = None
                out.append(UtteranceStarted(self.utterance, agent_active))
            self._frames.append(pcm)
            self._voiced += 1
            self._silence = 0
            self._last_voiced_at = now
            if self._spec is not None:
                out.append(Discard(self._spec.utterance))  # the caller went on
                if self._spec.text:
                    self._heard = (self._spec.frames, self._spec.text)
                self._spec = None
            speech_ms = self._voiced * FRAME_MS
            if not self._barged and agent_active and speech_ms >= a.barge_in_min_speech_ms:
                self._barged = True
                if a.barge_in_confirm_ms > 0:
                    self.paused = self.utterance
                    out.append(PauseAgent(self.utterance))
                else:
                    out.append(Interrupt(self.utterance))
            elif self.paused == self.utterance and not self._judging and speech_ms >= self._judge_at_ms:
                self._judging = True
                out.append(Transcribe(self.utterance, "judge", self._window()))
            out += self._maybe_interim(asr_pass_s)
            return out
        if not self.in_speech:
            self._preroll.append(pcm)
            return out
        self._frames.append(pcm)
        self._silence += 1
        silence_ms = self._silence * FRAME_MS
        if self._spec is None and self._enough_speech() and silence_ms >= a.speculate_after_ms:
            over_agent = self.utterance in (self.paused, self._withdrawn)
            self._spec = _Speculation(self.utterance, len(self._frames), prepare=not over_agent and not agent_active)
            everything = np.concatenate(self._frames)
            done, heard = self._heard or (0, "")
            out.append(
                Speculate(
                    self.utterance,
                    np.concatenate(self._frames[done:]),
                    len(self._frames),
                    self._spec.prepare,
                    heard,
                    everything,
                )
            )
        return out + self._check_endpoint(now, agent_active)

    def speculated(
        self,
        utterance: int,
        frames: int,
        text: str | None,
        p_text: float | None,
        p_audio: float | None,
        now: float,
        agent_active: bool,
        heard_at: float | None = None,
        logprob: float | None = None,
    ) -> list[Action]:
        """The result of :class:`Speculate` for ``utterance`` at ``frames``: its transcript
        (``None``: ASR failed; ``heard_at``: when it came, default ``now``; ``logprob``:
        the recognizer's average log probability for it, ``None`` when not known) and the
        end-of-turn scores (``None``: not available)."""
        spec = self._spec
        if spec is None or spec.utterance != utterance or spec.frames != frames:
            return self._settled_by(utterance, text, now, agent_active, logprob=logprob) if text is not None else []
        spec.text = text.strip() if text is not None else None
        spec.logprob = logprob
        spec.failed = text is None
        spec.p_text, spec.p_audio, spec.done_at = p_text, p_audio, now if heard_at is None else heard_at
        out = (
            self._settled_by(utterance, spec.text, now, agent_active, logprob=logprob) if spec.text is not None else []
        )
        if self.paused == utterance and spec.text is not None and self._backchannel(spec.text, logprob):
            # "Mm-hmm" over the agent: resume now, not at the end of the turn ("hmm" reads
            # as unfinished); words that follow may still interrupt.
            self._withdrawn = utterance
            out += self._resume(utterance, spec.text)
        if self.in_speech and self.utterance == utterance:
            out += self._check_endpoint(now, agent_active)
        return out

    def heard(
        self,
        utterance: int,
        purpose: str,
        text: str | None,
        now: float,
        agent_active: bool,
        logprob: float | None = None,
    ) -> list[Action]:
        """The result of a :class:`Transcribe` (``text`` ``None``: ASR failed; ``logprob``:
        the recognizer's average log probability for it, ``None`` when not known)."""
        if purpose == "interim":
            self._interim_running = False
            if utterance != self.utterance or text is None:
                return []
            self.interim_text = text.strip()
            if (
                utterance in (self.paused, self._withdrawn)
                and agent_active
                and not self._backchannel(self.interim_text, logprob)
            ):
                return self._confirm(utterance, self.interim_text)
            return []
        if purpose == "judge":
            self._judging = False
            if self.paused != utterance:
                return []  # decided meanwhile (the utterance ended and was settled, or another paused)
            if text is None:
                return self._confirm(utterance, "")  # ASR failed: the caller may have said something
            if (
                unsure(self.agent, text, logprob, self._voiced * FRAME_MS / 1000)
                and not is_backchannel(text, self._backchannel_words, self._prompt_words)
                and self.in_speech
                and self.utterance == utterance
            ):
                # Words Whisper was unsure of, and the caller is still speaking: the start
                # of a real interruption often reads that way ("Arry to interrupt"). Stay
                # paused; judge again on more speech, or on the whole utterance at its end.
                self._judge_at_ms = self._voiced * FRAME_MS + _half(self.agent.barge_in_confirm_ms)
                return []
            if self._backchannel(text, logprob):
                self._withdrawn = utterance  # its later words may still interrupt
                return self._resume(utterance, text.strip())
            return self._confirm(utterance, text.strip())
        return self._settled_by(
            utterance, text if text is not None else "", now, agent_active, failed=text is None, logprob=logprob
        )

    def tick(self, now: float, agent_active: bool, waiting: bool = False) -> list[Action]:
        """Time passes (call it a few times a second). ``waiting``: something else keeps
        the line busy (hold, a digit collection): silence does not count then."""
        return self._silence_watch.tick(now, waiting or agent_active or self.in_speech, self.utterance)

    def agent_quiet(self, now: float) -> None:
        """The agent stopped speaking: the silence clock starts now."""
        self._silence_watch.agent_quiet(now)

    def reset(self) -> None:
        """Forget the utterance in progress (the call went on hold)."""
        self.paused = None
        self.in_speech = False
        self._frames = []
        self._spec = None
        self._heard = None
        self._settling = None

    def clear(self) -> None:
        """Drop the audio held (the call ended); the counters stay for inspection."""
        self._preroll.clear()
        self._frames = []

    @property
    def barge_in_pending(self) -> bool:
        """Whether caller speech has paused the agent and is not yet judged."""
        return self.paused is not None

    def agent_stopped(self) -> None:
        """The agent was stopped from outside (hang-up, transfer, a new reply): no
        barge-in is pending any more."""
        self.paused = None

    # ------------------------------------------------------------ internals

    def _enough_speech(self) -> bool:
        return self._voiced * FRAME_MS >= self.agent.min_utterance_ms

    def _window(self) -> np.ndarray:
        window = int(self.agent.interim_window_s * 1000 // FRAME_MS)
        return np.concatenate(self._frames[-window:])

    def _maybe_interim(self, asr_pass_s: float) -> list[Action]:
        """An interim pass while the caller speaks over the agent (its words may confirm
        the barge-in): one per ``interim_interval_ms`` of new audio, one in flight, none
        where a pass takes more than half the interval. A caller speaking to a quiet agent
        gets none: the speculative pass at the first silence is what ends that turn, and
        an interim pass in flight would only hold it back."""
        a = self.agent
        interval = a.interim_interval_ms // FRAME_MS
        if (
            not interval
            or self._interim_running
            or (self.utterance not in (self.paused, self._withdrawn) and not a.interim_always)
        ):
            return []
        if len(self._frames) - self._interim_frames < interval or asr_pass_s > a.interim_interval_ms / 2000:
            return []
        self._interim_frames = len(self._frames)
        self._interim_running = True
        return [Transcribe(self.utterance, "interim", self._window())]

    def _check_endpoint(self, now: float, agent_active: bool) -> list[Action]:
        if not self.in_speech:
            return []
        silence_ms = self._silence * FRAME_MS
        spec = self._spec
        signals = (spec.text, spec.p_text, spec.p_audio) if spec is not None else (None, None, None)
        threshold, rule, reason = endpoint_threshold(self.agent, *signals, self.interim_text)
        if silence_ms < threshold:
            return []
        self.in_speech = False
        pcm = np.concatenate(self._frames)
        enough = self._enough_speech()
        self._frames = []
        self._preroll.clear()
        self._heard = None
        spec, self._spec = self._spec, None
        utterance = self.utterance
        times = {"speech_end": self._last_voiced_at, "endpoint": now}
        covered = spec is not None and spec.frames <= len(pcm) // 160 and spec.text is not None
        text = spec.text if covered and spec is not None else None
        logprob = spec.logprob if text is not None and spec is not None else None
        if text is not None and spec is not None:
            times["asr_final"] = spec.done_at if spec.done_at is not None else now
        if utterance in (self.paused, self._withdrawn):
            # The utterance that paused the agent is over: resume, or interrupt and answer it.
            self._settling = _Settling(utterance, pcm if enough else None, times, rule)
            if text is not None or not enough:
                return self._settled_by(utterance, text or "", now, agent_active, logprob=logprob)
            if spec is None or spec.failed:
                return [Transcribe(utterance, "final", pcm)]
            return []  # its speculative pass is running: speculated() settles it
        if not enough:
            return [Discard(utterance)] if spec is not None else []
        prepared = spec is not None and spec.prepare and spec.utterance == utterance
        if spec is not None and spec.text is None and spec.failed:
            prepared = False
        scores = {"p_text": spec.p_text, "p_audio": spec.p_audio} if spec is not None else {}
        return [EndOfTurn(utterance, pcm, text, prepared, times, rule, reason, scores)]

    def _settled_by(
        self,
        utterance: int,
        text: str,
        now: float,
        agent_active: bool,
        failed: bool = False,
        logprob: float | None = None,
    ) -> list[Action]:
        """A transcript of a barge-in utterance that has ended: resume, or interrupt and answer."""
        s = self._settling
        if s is None or s.utterance != utterance:
            return []
        self._settling = None
        if failed:
            confirmed = self._confirm(utterance, "") if self.paused == utterance else []
            return (
                confirmed + [EndOfTurn(utterance, s.pcm, None, False, s.times, s.rule)]
                if s.pcm is not None
                else confirmed
            )
        s.times.setdefault("asr_final", now)
        if utterance == self._confirmed:
            # Its words interrupted the agent while it was being settled: answer it.
            return [EndOfTurn(utterance, s.pcm, text, False, s.times, s.rule)] if s.pcm is not None else []
        if utterance not in (self.paused, self._withdrawn):
            return []  # decided meanwhile: the caller spoke again
        if s.pcm is None or self._backchannel(text, logprob):
            return self._resume(utterance, text) if self.paused == utterance else []
        out: list[Action] = []
        if agent_active:
            out += self._confirm(utterance, text)
        self.paused = None
        return out + [EndOfTurn(utterance, s.pcm, text, False, s.times, s.rule)]

    def _backchannel(self, text: str, logprob: float | None) -> bool:
        """Whether ``text``, heard over the agent, is no interruption: a backchannel, no
        words, or words Whisper was unsure of (its average log probability under
        ``barge_in_min_logprob``: a hum heard as "Amanda.", a cough as "Pup.")."""
        return unsure(self.agent, text, logprob, self._voiced * FRAME_MS / 1000) or is_backchannel(
            text, self._backchannel_words, self._prompt_words
        )

    def _confirm(self, utterance: int, words: str) -> list[Action]:
        self._confirmed = utterance
        self.paused = None
        return [Interrupt(utterance, words)]

    def _resume(self, utterance: int, heard: str) -> list[Action]:
        self.paused = None
        return [ResumeAgent(utterance, heard)]
