"""The speculative pass and the prepared reply: the part of
:class:`bridge.conversation.engine.Conversation` that works ahead of the end of the turn
(split out of engine.py along that seam).

At the caller's first silence turn-taking asks for a :class:`~.turntaking.Speculate`:
the utterance is transcribed; then, at the same time, the end of the turn is scored
(Smart Turn on the audio, the LLM's end-of-line probability read from the evaluation of
the reply's own prompt) and the reply is generated unheard into a
:class:`~.turns.Reply`. Turn-taking gets the transcript and the scores back
(:meth:`~.turntaking.TurnTaking.speculated`) and decides: at
:class:`~.turntaking.EndOfTurn` the prepared reply is released to playout, and if the
caller goes on it is thrown away (:class:`~.turntaking.Discard`).
"""

from __future__ import annotations

import asyncio
import logging
import threading

import numpy as np

from . import turntaking as tt
from .failures import EngineError
from .turns import Reply, joined, probe_text

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


class SpeculationMixin:
    """Working ahead of the end of the turn; see the module docstring. Mixed into
    :class:`~bridge.conversation.engine.Conversation`, whose state it uses (``turns``,
    ``threads``, ``engines``, ``agent``, ``_prepared``)."""

    def _speculate(self, action: tt.Speculate) -> None:
        """The caller fell silent: transcribe, score the end of the turn, and (``prepare``)
        prepare the reply unheard (:meth:`_prepared_turn`)."""
        self._drop_prepared()
        prepare = action.prepare and self._collecting is None  # spoken digits are no turn to answer
        reply = Reply(action.utterance, action.frames, cancel=threading.Event())
        if prepare:
            self._prepared = reply
        reply.task = self._spawn(self._prepared_turn(reply, action.pcm, prepare, action.heard, action.utterance_pcm))

    async def _prepared_turn(self, reply: Reply, pcm: np.ndarray, prepare: bool, heard: str = "", utterance_pcm: np.ndarray | None = None) -> None:
        """Transcribe the utterance; then, at the same time, score the end of the turn
        (Smart Turn on the audio; the LLM's end-of-line probability, read from the very
        evaluation of the reply's prompt) and generate the reply into its stash; report
        the transcript and the scores to turn-taking, which may release the reply."""
        text = None
        try:
            if heard:  # the caller went on after a pause: the rest, conditioned on what was heard
                text = joined(heard, await self.threads.call("asr", self.engines.asr.transcribe, pcm, heard))
            else:
                text = (await self.threads.call("asr", self.engines.asr.transcribe, pcm)).strip()
        except EngineError as exc:
            reply.failure = exc
        reply.asr_done = self.clock()
        reply.text = text
        pcm = pcm if utterance_pcm is None else utterance_pcm
        if reply.failure is not None and reply.release_asked:
            self._engine_failed(reply.failure)
        generate = prepare and bool(text) and not reply.dropped
        if generate and self._wants_text_score():
            reply.probed = asyncio.get_running_loop().create_future()
        audio_score = self._audio_score(pcm) if text else None
        if generate:
            generation = self._spawn(self._reply(None, reply.times, reply.cancel, text=text, reply=reply))
            p_text = await reply.probed if reply.probed is not None else None
        else:
            generation = None
            p_text = (await self._text_score(text)) if text else None
        p_audio = await _score(audio_score)
        self._apply(self.turns.speculated(reply.utterance, reply.frames, text, p_text, p_audio, self.clock(), self.agent_active, heard_at=reply.asr_done))
        if reply.release_asked and text == "" and reply.failure is None:
            log.info("turn call=%s: no words recognized in %.2f s of audio", self.leg.call_id, len(pcm) / 8000)
        if generation is not None:
            await asyncio.shield(generation)

    def _wants_text_score(self) -> bool:
        """Whether the LLM is asked how likely the caller's line ends where it stops."""
        return self.agent.turn_text_threshold > 0 and self.agent.llm_mode == "completion" and hasattr(self.engines.llm, "end_probability")

    def _audio_score(self, pcm: np.ndarray) -> asyncio.Future | None:
        """Smart Turn's end-of-turn probability of ``pcm``, in a worker thread (``None``: off)."""
        model = getattr(self.engines, "turn", None)
        if self.agent.turn_audio_threshold <= 0 or model is None:
            return None
        return self.threads.run(model.probability, pcm)

    async def _text_score(self, text: str) -> float | None:
        """The LLM's end-of-line probability for ``text`` on its own (a caller speaking
        over the agent: no reply is prepared to read it from)."""
        if not self._wants_text_score():
            return None
        from .prompt import completion_prompt_prefix

        prompt = completion_prompt_prefix(self.agent, self.transcript()) + "Caller: " + probe_text(text)
        return await _score(self.threads.run(self.engines.llm.end_probability, prompt))

    def _end_of_turn(self, action: tt.EndOfTurn) -> None:
        """The caller's turn is over: release the prepared reply, or start one."""
        if action.reason:
            log.info("turn call=%s: unfinished by its %s, answered after %.2f s of silence", self.leg.call_id, action.reason, action.times["endpoint"] - action.times["speech_end"])
        if action.pcm is None:
            return
        reply = self._prepared
        if action.prepared and reply is not None and reply.utterance == action.utterance and not reply.dropped:
            self._prepared = None
            self.turns_started += 1
            if self.agent_active:
                self._stop_agent(interrupted=True)
            reply.times.update(action.times)
            reply.rule, reply.reason, reply.scores = action.rule, action.reason, action.scores
            reply.release_asked = True
            self._cancel = reply.cancel
            self._reply_task = reply.task
            if reply.failure is not None:
                self._engine_failed(reply.failure)
            elif reply.text == "":
                log.info("turn call=%s: no words recognized in %.2f s of audio", self.leg.call_id, len(action.pcm) / 8000)
            else:
                self._release(reply)
            return
        self._drop_prepared()
        self._start_reply(action.pcm, dict(action.times), rule=action.rule, text=action.text)

    def _drop_prepared(self, utterance: int | None = None) -> None:
        """Throw away the prepared reply (of ``utterance``, or any): the caller went on."""
        reply = self._prepared
        if reply is None or (utterance is not None and reply.utterance != utterance):
            return
        self._prepared = None
        reply.dropped = True
        reply.cancel.set()
        if reply.task is not None and not reply.task.done():
            reply.task.cancel()
