"""The call brain, independent of the call leg: routes turn-taking's actions to the objects
that carry them out.

A leg (SIP+RTP, Media Streams, WebRTC) drives a :class:`Conversation`:

- :meth:`Conversation.feed_audio`: each 20 ms frame of caller audio
  (PCM16 mono 8000 Hz, 160 samples);
- :meth:`Conversation.feed_dtmf`: each DTMF digit;
- :meth:`Conversation.pull_item`: once per 20 ms send slot, the agent frame that goes on
  the wire now (or ``None``);

and implements :class:`CallLeg` so the conversation can hang up, transfer or flush audio
queued below it. This package never imports ``sip``, ``media`` or ``mediastreams``
(docs/architecture.md, Layers).

Who speaks when is decided by :class:`~.turntaking.TurnTaking`, a sans-IO state machine.
The conversation owns no logic of its own beyond routing its actions: it composes
objects that own their state (playout, the voice, the reply writer and its source, the
speculator, the agent's turns, call control, the digit collector, the hearing; the map
is in docs/architecture.md). Inference runs in worker threads, never on the event loop.

Barge-in (RFC-free, but exact): caller speech over the agent pauses it at the next
packet; words that are not a backchannel stop it for good, cancel LLM and TTS, and keep
in the history only what was played (:mod:`.backchannel`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine

import numpy as np

from ..audio.wire import FRAME_SAMPLES
from . import turntaking as tt
from .answering import AgentTurns
from .control import CallControl
from .echo_guard import EchoGuard
from .hearing import Hearing
from .playout import Playout
from .reply import ReplyWriter
from .sources import LlmReplySource
from .speculation import EndOfTurnScores, Speculated, Speculator
from .turn_records import TurnRecorder
from .turns import AgentFrame, AgentUtterance, CallLeg, Reply
from .voice import Voice
from .work import Tasks, WorkerThreads

log = logging.getLogger("bridge.conversation")


#: Longest wait at the end of a call for its engine calls still in worker threads, seconds.
CLOSE_WAIT_S = 5.0


class Conversation:
    """One call's conversation. See the module docstring.

    Args:
        engines: the shared :class:`bridge.engines.Engines`.
        agent: :class:`bridge.config.AgentSettings`.
        leg: the call leg (:class:`CallLeg`; a ``transfer_unavailable`` sentence where
            it cannot transfer).
        metrics: a :class:`bridge.observability.metrics.Metrics` or ``None``.
        clock: monotonic clock in seconds (injected for tests).
        transfer: :class:`bridge.config.TransferSettings` or ``None`` (no transfer).
        played_by_leg: the leg reports what was played (:meth:`mark_played`) rather than
            every frame handed out counting as played (RTP).
    """

    def __init__(
        self,
        engines,
        agent,
        leg: CallLeg,
        metrics=None,
        clock: Callable[[], float] = time.monotonic,
        transfer=None,
        played_by_leg: bool = False,
    ) -> None:
        self.agent = agent
        self.leg = leg
        self.metrics = metrics
        self.clock = clock
        self.vad = engines.vad_factory()
        self._asr = engines.asr
        self._transfer = transfer
        self.turns = tt.TurnTaking(agent, clock(), getattr(engines.asr, "initial_prompt", None))
        self.dtmf_digits: list[str] = []
        #: Utterances heard over the agent that did not interrupt it (bounded), for inspection.
        self.backchannels: list[str] = []
        #: The last interim transcripts (bounded), for inspection.
        self.interims: list[str] = []
        self.on_hold = False
        self.threads = WorkerThreads()  # engine calls in worker threads, waited for by close()
        self.echo_guard = (
            EchoGuard(agent.echo_max_delay_ms, threshold=agent.echo_threshold) if agent.echo_guard else None
        )
        self._hearing = Hearing(self.vad, self.echo_guard, metrics)
        self._records: TurnRecorder | None = None
        self._tasks = Tasks(f"conversation task failed call={leg.call_id}")
        self._closed = False
        source = LlmReplySource(agent, engines.llm)
        self._source = source
        self.playout = Playout(
            leg.call_id,
            clock,
            paused=lambda: self.turns.paused is not None,
            quiet=self.turns.agent_quiet,
            replying=self._replying,
            echo_guard=self.echo_guard,
            metrics=metrics,
            played_by_leg=played_by_leg,
        )
        voice = Voice(engines, self.threads, clock)
        self._voice = voice
        unavailable: str = getattr(leg, "transfer_unavailable", "")  # a browser call cannot be transferred
        control = CallControl(agent, transfer, leg.call_id, metrics, unavailable)
        writer = ReplyWriter(agent, source, voice, self.threads, clock, self._deliver, leg.call_id, metrics)
        self._answers = AgentTurns(
            agent,
            leg,
            engines.asr,
            self.playout,
            writer,
            control,
            self.threads,
            clock,
            self._spawn,
            self.turns.agent_stopped,
            metrics,
            transfer,
            unavailable,
        )
        scores = EndOfTurnScores(agent, getattr(engines, "turn", None), source, self.threads)
        #: ``("caller", str)`` and ``("agent", AgentUtterance)`` entries, in order.
        self.history = self._answers.history
        #: One entry per answered turn: the caller's words, the agent's, how the turn
        #: ended, the tools and what the guards dropped.
        self.turn_log = self._answers.turn_log
        #: Each turn's latencies relative to the end of the caller's speech, seconds.
        self.latencies = self.playout.latencies
        #: Digit strings gathered by ``collect_digits`` (DTMF or spoken), in order.
        self.collected_digits = self._answers.digits.collected
        self._speculator = Speculator(
            engines.asr,
            self.threads,
            clock,
            scores,
            self._spawn,
            self._answers.generate,
            self._speculated,
            self._answers.engine_failed,
            self.transcript,
            leg.call_id,
        )

    # ----------------------------------------------------------- leg -> us

    def attach_records(self, records: TurnRecorder | None) -> None:
        """Write this call's turns to ``records`` (the call layer gives it once the
        call's record is open)."""
        self._records = records
        self.playout.attach_records(records)
        self._answers.attach_records(records)

    @property
    def records(self) -> TurnRecorder | None:
        """The turn recorder given by :meth:`attach_records`, or ``None``."""
        return self._records

    def start(self) -> None:
        """Speak the greeting; start the max-duration timer and the silence watch if configured."""
        if self.agent.greeting:
            self._answers.say(self.agent.greeting)
        if self.agent.max_call_seconds > 0:
            self._spawn(self._max_duration())
        if self.agent.reprompt_after_s > 0:
            self._spawn(self._watch_silence())

    def say_then(self, text: str, action: Callable[[], None]) -> None:
        """Speak fixed ``text`` now (from the phrase cache, no LLM), then run ``action`` once
        it has been played out (a voicemail message, then the hang-up)."""
        self._answers.say(text, then=action)

    async def prepare_phrase(self, text: str) -> None:
        """Synthesize fixed ``text`` into the phrase cache now, so that :meth:`start` or
        :meth:`say_then` plays it without waiting for TTS.

        Raises:
            EngineError: TTS failed (stage ``tts``).
        """
        await self._voice.prepare(text)

    def feed_audio(self, frame: np.ndarray, now: float | None = None) -> None:
        """One 20 ms caller frame: PCM16 mono 8000 Hz, 160 samples. Cheap; runs on the loop."""
        if self._closed or self.on_hold or len(frame) != FRAME_SAMPLES:
            return
        now = self.clock() if now is None else now
        voiced = self._hearing.voiced(frame)
        asr_pass_s = getattr(self._asr, "pass_seconds", 0.0)
        self._apply(self.turns.frame(frame, voiced, now, self.agent_active, asr_pass_s=asr_pass_s))

    def feed_dtmf(self, digit: str) -> None:
        """A DTMF digit from the caller (RFC 4733 or Media Streams ``dtmf``)."""
        self.dtmf_digits.append(digit)
        if self._records is not None:
            self._records.dtmf(digit)
        if self.metrics:
            self.metrics.dtmf.inc()
        log.info("dtmf call=%s digit=%s", self.leg.call_id, digit)
        if self._answers.digits.waiting:
            self._answers.digits.key(digit)
            return
        t = self._transfer
        if t is not None and t.target and t.dtmf and digit == t.dtmf:
            self.request_transfer()

    def pull_item(self, now: float | None = None) -> AgentFrame | None:
        """The agent frame for the current 20 ms send slot (PCM16 8 kHz, 160 samples) with
        its owner and sentence boundary, or ``None`` (:meth:`.playout.Playout.pull`).
        ``now`` is accepted for the :class:`bridge.agents.Agent` interface and not used."""
        return self.playout.pull()

    def pull_frame(self, now: float | None = None) -> np.ndarray | None:
        """Like :meth:`pull_item`, the PCM only."""
        item = self.playout.pull()
        return item.pcm if item is not None else None

    def mark_played(self, owner: AgentUtterance, offset: int) -> None:
        """The leg learned that ``owner`` was played up to sample ``offset`` (Media Streams marks)."""
        self.playout.mark_played(owner, offset)

    def request_transfer(self) -> None:
        """Say the transfer announcement, then ask the leg to transfer
        (:meth:`.answering.AgentTurns.transfer`)."""
        self._answers.transfer()

    def transfer_failed(self) -> None:
        """The leg could not transfer: tell the caller and carry on."""
        self._answers.transfer_failed()

    def set_hold(self, held: bool) -> None:
        """The peer put the call on hold (``True``) or took it off (``False``).

        On hold, caller audio is ignored (music on hold is not speech) and the
        leg sends nothing, so playout pauses where it is and resumes after.
        """
        if held != self.on_hold:
            log.info("call=%s %s", self.leg.call_id, "on hold" if held else "off hold")
        self.on_hold = held
        self._speculator.drop()
        self.turns.reset()  # playout pauses with the hold anyway, and goes on after it

    def caller_said(self, text: str) -> None:
        """A caller turn given as text instead of audio (``bridge bench answers --voices text``,
        tests): the agent replies as if ASR had heard ``text``."""
        self._answers.start_reply(None, {}, text=text)

    @property
    def agent_active(self) -> bool:
        """Whether the agent is speaking or answering (a reply released to the caller)."""
        return self._answers.active

    @property
    def barge_in_pending(self) -> bool:
        """Whether caller speech has paused the agent and is not yet judged (:mod:`.backchannel`)."""
        return self.turns.paused is not None

    @property
    def interim_text(self) -> str:
        """The latest interim transcript of the caller's current utterance."""
        return self.turns.interim_text

    @property
    def collecting_digits(self) -> bool:
        """Whether a ``collect_digits`` request is waiting for the caller's digits."""
        return self._answers.digits.waiting

    @property
    def echo_frames(self) -> int:
        """Frames the VAD called speech that were the agent's own echo."""
        return self._hearing.echo_frames

    @property
    def turns_started(self) -> int:
        """Caller turns handed to the agent so far (endpoint, text or digits)."""
        return self._answers.started

    def barge_in(self) -> None:
        """Stop the agent now: drop queued audio, cancel LLM/TTS, truncate history."""
        current = self.playout.current
        log.info("barge-in call=%s played=%r", self.leg.call_id, current.played_text() if current else "")
        if self.metrics:
            self.metrics.barge_ins.inc()
        self._answers.stop(interrupted=True)

    async def close(self) -> None:
        """Cancel everything in flight and wait (up to :data:`CLOSE_WAIT_S`) until the
        engine calls already in worker threads have returned, so that the end of the
        call frees their memory too (:mod:`.work`). Idempotent."""
        self._closed = True
        self._answers.close()
        self._speculator.drop()
        self._answers.stop(interrupted=False)
        await self._tasks.cancel()
        await self.threads.settle(CLOSE_WAIT_S)
        # Keep the record (history, turns, latencies), drop the audio: a finished
        # call must not pin tens of KB of frames (a soak run's RSS grew with them).
        self.turns.clear()
        if self.echo_guard is not None:
            self.echo_guard.clear()

    def transcript(self) -> list[tuple[str, str]]:
        """The history as ``(role, text)``, agent turns reduced to what was played."""
        return self._answers.transcript()

    # ------------------------------------------------ turn-taking actions

    def _apply(self, actions: list[tt.Action]) -> None:
        """Carry out what :class:`~.turntaking.TurnTaking` asked for."""
        for action in actions:
            if isinstance(action, tt.UtteranceStarted):
                if not action.agent_active:
                    self._ready_source()
            elif isinstance(action, tt.Speculate):
                self._speculator.start(
                    action, prepare=not self._answers.digits.waiting
                )  # spoken digits are no turn to answer
            elif isinstance(action, tt.Discard):
                self._speculator.drop(action.utterance)
            elif isinstance(action, tt.Transcribe):
                self._transcribe(action)
            elif isinstance(action, tt.PauseAgent):
                current = self.playout.current
                log.info(
                    "barge-in call=%s pending: agent paused at %r",
                    self.leg.call_id,
                    current.played_text() if current else "",
                )
            elif isinstance(action, tt.ResumeAgent):
                self.backchannels.append(action.heard)
                del self.backchannels[:-20]
                if self.metrics:
                    self.metrics.barge_ins_resumed.inc()
                log.info(
                    "barge-in call=%s withdrawn: %r is a backchannel or no words; the agent resumes",
                    self.leg.call_id,
                    action.heard,
                )
            elif isinstance(action, tt.Interrupt):
                if action.words:
                    log.info("barge-in call=%s confirmed by the words %r", self.leg.call_id, action.words)
                if self.agent_active:
                    self.barge_in()
            elif isinstance(action, tt.EndOfTurn):
                self._end_of_turn(action)
            elif isinstance(action, tt.Reprompt):
                log.info("call=%s: silence for %.0f s, reprompt", self.leg.call_id, self.agent.reprompt_after_s)
                self._answers.say(self.agent.reprompt, cancel=self._answers.speech())
            elif isinstance(action, tt.GiveUp):
                log.info(
                    "call=%s: no answer to %d reprompts, ending the call", self.leg.call_id, self.agent.max_reprompts
                )
                self._answers.say(self.agent.goodbye, then=self._answers.hangup, cancel=self._answers.speech())

    def _ready_source(self) -> None:
        """The caller started speaking while the agent is quiet: let the reply source ready
        itself for the coming line in a worker thread (:meth:`.sources.ReplySource.ahead`)."""
        work = self._source.ahead(self.transcript())
        if work is not None:
            future = self.threads.run(work)
            future.add_done_callback(
                lambda f: f.cancelled() or f.exception() is None or log.debug("llm: priming failed: %s", f.exception())
            )

    def _transcribe(self, action: tt.Transcribe) -> None:
        future = self.threads.run(self._asr.hear, action.pcm)

        def done(f: asyncio.Future) -> None:
            if self._closed or f.cancelled():
                return
            heard = f.result() if f.exception() is None else None
            text = heard.text.strip() if heard is not None else None
            if action.purpose == "interim" and text is not None:
                self.interims.append(text)
                del self.interims[:-20]
                log.debug("interim call=%s %r", self.leg.call_id, text)
            logprob = heard.avg_logprob if heard is not None else None
            args = (action.utterance, action.purpose, text, self.clock(), self.agent_active)
            self._apply(self.turns.heard(*args, logprob=logprob))

        future.add_done_callback(done)

    def _speculated(self, s: Speculated) -> None:
        """A speculative pass is done: its transcript and scores to turn-taking."""
        r = s.reply
        args = (r.utterance, r.frames, s.text, s.p_text, s.p_audio, self.clock(), self.agent_active)
        self._apply(self.turns.speculated(*args, heard_at=r.asr_done, logprob=s.logprob))

    def _end_of_turn(self, action: tt.EndOfTurn) -> None:
        """The caller's turn is over: release the prepared reply, or start one."""
        if action.reason:
            log.info(
                "turn call=%s: unfinished by its %s, answered after %.2f s of silence",
                self.leg.call_id,
                action.reason,
                action.times["endpoint"] - action.times["speech_end"],
            )
        if action.pcm is None:
            return
        reply = self._speculator.take(action)
        if reply is None:
            self._answers.start_reply(action.pcm, dict(action.times), rule=action.rule, text=action.text)
            return
        reply.times.update(action.times)
        reply.rule, reply.reason, reply.scores = action.rule, action.reason, action.scores
        self._answers.release_prepared(reply, action.pcm)

    # ------------------------------------------------------------ internals

    def _replying(self) -> bool:
        """For playout: whether a reply is still being written (:meth:`.answering.AgentTurns.replying`)."""
        return self._answers.replying()

    def _deliver(self, frames: list[AgentFrame], reply: Reply | None) -> None:
        """For the reply writer: a sentence's frames (:meth:`.answering.AgentTurns.deliver`)."""
        self._answers.deliver(frames, reply)

    def _spawn(self, coro: Coroutine) -> asyncio.Task:
        return self._tasks.spawn(coro)

    async def _watch_silence(self) -> None:
        """Reprompts: :meth:`~.turntaking.TurnTaking.tick` four times a second."""
        while not self._closed:
            await asyncio.sleep(0.25)
            waiting = self.on_hold or self._answers.digits.waiting or self._speculator.preparing
            self._apply(self.turns.tick(self.clock(), self.agent_active, waiting))

    async def _max_duration(self) -> None:
        await asyncio.sleep(self.agent.max_call_seconds)
        log.info("call=%s reached max_call_seconds=%s", self.leg.call_id, self.agent.max_call_seconds)
        self._answers.stop(interrupted=False)
        self._answers.say(self.agent.goodbye, then=self._answers.hangup, cancel=self._answers.speech())
