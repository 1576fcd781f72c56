"""The speculative pass and the prepared reply: working ahead of the end of the turn.

At the caller's first silence turn-taking asks for a :class:`~.turntaking.Speculate`:
the utterance is transcribed; then, at the same time, the end of the turn is scored
(Smart Turn on the audio, the language model's end-of-line probability read from the
evaluation of the reply's own prompt: :class:`EndOfTurnScores`) and the reply is
generated unheard into a :class:`~.turns.Reply`. Turn-taking gets the transcript and the
scores back (:meth:`~.turntaking.TurnTaking.speculated`) and decides: at
:class:`~.turntaking.EndOfTurn` the prepared reply is released to playout
(:meth:`Speculator.take`), and if the caller goes on it is thrown away
(:meth:`Speculator.drop`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass

import numpy as np

from . import turntaking as tt
from .failures import EngineError
from .sources import ReplySource, Transcript
from .turns import Reply, joined
from .work import WorkerThreads

log = logging.getLogger("bridge.conversation")


async def _score(job: asyncio.Future | None) -> float | None:
    """The result of an end-of-turn score in a worker thread; ``None`` when there is none
    or it failed (a score not known does not hold the turn)."""
    if job is None:
        return None
    try:
        return await job
    except Exception as exc:  # noqa: BLE001
        log.debug("end-of-turn score failed: %s", exc)
        return None


class EndOfTurnScores:
    """How likely the caller's turn is over: Smart Turn on the audio
    (``agent.turn_audio_threshold`` > 0 and a model loaded) and the reply source's
    end-of-line probability for the words (``agent.turn_text_threshold`` > 0 and a source
    that gives it). Each runs in a worker thread; ``None`` where off or failed.

    Args:
        agent: :class:`bridge.config.AgentSettings`.
        turn_model: Smart Turn (:class:`bridge.engines.turn.SmartTurn`) or ``None``.
        source: the call's :class:`~.sources.ReplySource`.
        threads: the call's :class:`~.work.WorkerThreads`.
    """

    def __init__(self, agent, turn_model, source: ReplySource, threads: WorkerThreads) -> None:
        self._turn_model = turn_model if agent.turn_audio_threshold > 0 else None
        self._source = source
        self._threads = threads

    @property
    def wants_text(self) -> bool:
        """Whether the source is asked how likely the caller's line ends where it stops."""
        return self._source.scores_end

    def audio(self, pcm: np.ndarray) -> asyncio.Future | None:
        """Smart Turn's end-of-turn probability of ``pcm`` (PCM16 8 kHz), in a worker thread (``None``: off)."""
        if self._turn_model is None:
            return None
        return self._threads.run(self._turn_model.probability, pcm)

    async def text(self, text: str, transcript: Transcript) -> float | None:
        """The end-of-line probability of the caller's ``text`` on its own, after
        ``transcript`` (a caller speaking over the agent: no reply is prepared to read it from)."""
        if not self.wants_text:
            return None
        return await _score(self._threads.run(self._source.end_probability, transcript, text))


@dataclass(frozen=True)
class Speculated:
    """What a speculative pass found, for :meth:`~.turntaking.TurnTaking.speculated`: the
    ``reply`` it ran for (its ``utterance``, ``frames`` and ``asr_done``), the transcript
    ``text`` (``None``: ASR failed) with the recognizer's ``logprob``, and the scores."""

    reply: Reply
    text: str | None
    logprob: float | None
    p_text: float | None
    p_audio: float | None


class Speculator:
    """The speculative passes of one call and the reply prepared by the last of them.

    Args:
        asr: the recognizer (:class:`bridge.engines.Asr`).
        threads: the call's :class:`~.work.WorkerThreads`.
        clock: monotonic clock in seconds.
        scores: the call's :class:`EndOfTurnScores`.
        spawn: starts a task the conversation owns (cancelled when it closes).
        generate: starts writing ``reply`` to the caller's ``text`` unheard; returns its task.
        report: hands a pass's :class:`Speculated` to turn-taking.
        failed: an engine failure of a reply whose release was asked for.
        transcript: the transcript so far (for the end-of-line score of an unprepared pass).
        call_id: the call, for the logs.
    """

    def __init__(
        self,
        asr,
        threads: WorkerThreads,
        clock: Callable[[], float],
        scores: EndOfTurnScores,
        spawn: Callable[[Coroutine], asyncio.Task],
        generate: Callable[[Reply, str], asyncio.Task],
        report: Callable[[Speculated], None],
        failed: Callable[[EngineError], None],
        transcript: Callable[[], Transcript],
        call_id: str,
    ) -> None:
        self._asr = asr
        self._threads = threads
        self._clock = clock
        self._scores = scores
        self._spawn = spawn
        self._generate = generate
        self._report = report
        self._failed = failed
        self._transcript = transcript
        self._call_id = call_id
        #: The reply prepared for the utterance being judged (not heard until released).
        self._prepared: Reply | None = None

    @property
    def preparing(self) -> bool:
        """Whether a prepared reply waits for the end of its turn."""
        return self._prepared is not None

    def start(self, action: tt.Speculate, prepare: bool) -> None:
        """The caller fell silent: transcribe, score the end of the turn, and (``prepare``
        and ``action.prepare``) prepare the reply unheard."""
        self.drop()
        prepare = prepare and action.prepare
        reply = Reply(action.utterance, action.frames, cancel=threading.Event())
        if prepare:
            self._prepared = reply
        reply.task = self._spawn(self._pass(reply, action.pcm, prepare, action.heard, action.utterance_pcm))

    def take(self, action: tt.EndOfTurn) -> Reply | None:
        """The prepared reply for the turn ``action`` ended (no longer prepared: the
        caller owns it now), or ``None`` when there is none for it (any other is dropped)."""
        reply = self._prepared
        if action.prepared and reply is not None and reply.utterance == action.utterance and not reply.dropped:
            self._prepared = None
            return reply
        self.drop()
        return None

    def drop(self, utterance: int | None = None) -> None:
        """Throw away the prepared reply (of ``utterance``, or any): the caller went on."""
        reply = self._prepared
        if reply is None or (utterance is not None and reply.utterance != utterance):
            return
        self._prepared = None
        reply.dropped = True
        reply.cancel.set()
        if reply.task is not None and not reply.task.done():
            reply.task.cancel()

    async def _pass(
        self, reply: Reply, pcm: np.ndarray, prepare: bool, heard: str = "", utterance_pcm: np.ndarray | None = None
    ) -> None:
        """Transcribe the utterance; then, at the same time, score the end of the turn
        (Smart Turn on the audio; the end-of-line probability, read from the very
        evaluation of the reply's prompt) and generate the reply into its stash; report
        the transcript and the scores to turn-taking, which may release the reply."""
        text = logprob = None
        try:
            if heard:  # the caller went on after a pause: the rest, conditioned on what was heard
                rest = await self._threads.call("asr", self._asr.hear, pcm, heard)
                text = joined(heard, rest.text)  # two passes: no one log probability for the whole
            else:
                whole = await self._threads.call("asr", self._asr.hear, pcm)
                text, logprob = whole.text.strip(), whole.avg_logprob
        except EngineError as exc:
            reply.failure = exc
        reply.asr_done = self._clock()
        # The turn's ASR time, also when its end came first (turn-taking's EndOfTurn then
        # carried none: the transcript was still running).
        reply.times.setdefault("asr_final", reply.asr_done)
        reply.text = text
        pcm = pcm if utterance_pcm is None else utterance_pcm
        if reply.failure is not None and reply.release_asked:
            self._failed(reply.failure)
        generate = prepare and bool(text) and not reply.dropped
        if generate and self._scores.wants_text:
            reply.probed = asyncio.get_running_loop().create_future()
        audio_score = self._scores.audio(pcm) if text else None
        if generate:
            generation = self._generate(reply, text)
            p_text = await reply.probed if reply.probed is not None else None
        else:
            generation = None
            p_text = (await self._scores.text(text, self._transcript())) if text else None
        p_audio = await _score(audio_score)
        self._report(Speculated(reply, text, logprob, p_text, p_audio))
        if reply.release_asked and text == "" and reply.failure is None:
            log.info("turn call=%s: no words recognized in %.2f s of audio", self._call_id, len(pcm) / 8000)
        if generation is not None:
            await asyncio.shield(generation)
