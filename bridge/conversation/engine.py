"""The call brain, independent of the call leg: wires turn-taking, the reply path and playout.

A leg (SIP+RTP, or a Media Streams WebSocket) drives a :class:`Conversation`:

- :meth:`Conversation.feed_audio`: each 20 ms frame of caller audio
  (PCM16 mono 8000 Hz, 160 samples);
- :meth:`Conversation.feed_dtmf`: each DTMF digit;
- :meth:`Conversation.pull_frame`: once per 20 ms send slot, the agent frame
  that goes on the wire now (or ``None``);

and implements :class:`CallLeg` so the conversation can hang up or flush
audio queued below it. This package never imports ``sip``, ``media`` or
``mediastreams`` (docs/architecture.md, Layers).

Who speaks when is decided by :class:`~.turntaking.TurnTaking`, a sans-IO state
machine; this module carries out its actions with the engines: the VAD and the echo
guard on each frame, the speculative pass at the caller's first silence (ASR, then the
end-of-turn scores of the language model and of Smart Turn, then a reply prepared in
the background: :mod:`.speculation`), and at the end of the turn the release of that
reply to playout (:mod:`.reply`, :mod:`.playout`). Inference runs in worker threads,
never on the event loop.

Barge-in (RFC-free, but exact): caller speech over the agent pauses it at the next
packet; words that are not a backchannel stop it for good, cancel LLM and TTS, and keep
in the history only what was played (:mod:`.backchannel`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import threading
import time
from collections.abc import Callable

import numpy as np

from ..audio.wire import FRAME_MS, FRAME_SAMPLES
from . import turntaking as tt
from .echo_guard import EchoGuard
from .playout import HEARD_TIMEOUT_S, PlayoutMixin
from .reply import ReplyMixin
from .speculation import SpeculationMixin
from .turn_records import TurnRecorder
from .turns import UNFINISHED_WORDS, AgentFrame, AgentUtterance, CallLeg, Reply, sentence_state
from .work import WorkerThreads

__all__ = ["FRAME_MS", "FRAME_SAMPLES", "HEARD_TIMEOUT_S", "UNFINISHED_WORDS", "AgentFrame", "AgentUtterance", "CallLeg", "Conversation", "sentence_state"]

log = logging.getLogger("bridge.conversation")


#: Longest wait at the end of a call for its engine calls still in worker threads, seconds.
CLOSE_WAIT_S = 5.0


class Conversation(SpeculationMixin, PlayoutMixin, ReplyMixin):
    """One call's conversation. See the module docstring.

    Args:
        engines: the shared :class:`bridge.engines.Engines`.
        agent: :class:`bridge.config.AgentSettings`.
        leg: the call leg (:class:`CallLeg`).
        metrics: a :class:`bridge.observability.metrics.Metrics` or ``None``.
        clock: monotonic clock in seconds (injected for tests).
        transfer: :class:`bridge.config.TransferSettings` or ``None`` (no transfer).
    """

    def __init__(self, engines, agent, leg: CallLeg, metrics=None, clock: Callable[[], float] = time.monotonic, transfer=None) -> None:
        self.engines = engines
        self.agent = agent
        self.leg = leg
        self.metrics = metrics
        self.clock = clock
        self.vad = engines.vad_factory()
        self.turns = tt.TurnTaking(agent, clock(), getattr(engines.asr, "initial_prompt", None))
        self.history: list[tuple[str, object]] = []  # ("caller", str) | ("agent", AgentUtterance)
        self.dtmf_digits: list[str] = []
        self.turn_log: list[dict] = []
        #: Turn records for the call record (:mod:`.turn_records`), set by the leg's owner.
        self.records: TurnRecorder | None = None
        self.latencies: list[dict[str, float]] = []
        self._playout: collections.deque[AgentFrame] = collections.deque()
        self._reply_task: asyncio.Task | None = None
        #: The reply prepared for the utterance being judged (not heard until released).
        self._prepared: Reply | None = None
        self._cancel = threading.Event()
        self._current: AgentUtterance | None = None
        self._times: dict[str, float] | None = None
        self.transfer_settings = transfer
        #: True when the leg reports what was played (:meth:`mark_played`) rather
        #: than every frame handed out counting as played (RTP).
        self.played_by_leg = False
        self.on_hold = False
        self._after_playout: Callable[[], None] | None = None
        #: (utterance, action, timer): an action waiting for the utterance's last mark.
        self._heard_wait: tuple | None = None
        self._closed = False
        self._end_call_re = re.compile(agent.end_call_pattern, re.I) if agent.end_call_pattern else None
        #: Utterances heard over the agent that did not interrupt it (bounded), for inspection.
        self.backchannels: list[str] = []
        #: The prompt prefix last handed to the LLM to evaluate ahead of a turn.
        self._primed = ""
        #: The last interim transcripts (bounded), for inspection.
        self.interims: list[str] = []
        self._collecting: dict | None = None
        self._digits_timer: asyncio.TimerHandle | None = None
        #: Digit strings gathered by collect_digits (DTMF or spoken), in order.
        self.collected_digits: list[str] = []
        self.echo_guard = EchoGuard(agent.echo_max_delay_ms, threshold=agent.echo_threshold) if agent.echo_guard else None
        #: Frames the VAD called speech that were the agent's own echo.
        self.echo_frames = 0
        self._tasks: set[asyncio.Task] = set()
        self.threads = WorkerThreads()  # engine calls in worker threads, waited for by close()
        self._failed_stages: set[str] = set()
        #: Caller turns handed to the agent so far (endpoint, text or digits).
        self.turns_started = 0

    # ----------------------------------------------------------- leg -> us

    def start(self) -> None:
        """Speak the greeting; start the max-duration timer and the silence watch if configured."""
        if self.agent.greeting:
            self._spawn(self._say(self.agent.greeting))
        if self.agent.max_call_seconds > 0:
            self._spawn(self._max_duration())
        if self.agent.reprompt_after_s > 0:
            self._spawn(self._watch_silence())

    def say_then(self, text: str, action: Callable[[], None]) -> None:
        """Speak fixed ``text`` now (from the phrase cache, no LLM), then run ``action`` once
        it has been played out (a voicemail message, then the hang-up)."""
        self._spawn(self._say_then(text, action))

    async def prepare_phrase(self, text: str) -> None:
        """Synthesize fixed ``text`` into the phrase cache now, so that :meth:`start` or
        :meth:`say_then` plays it without waiting for TTS.

        Raises:
            EngineError: TTS failed (stage ``tts``).
        """
        phrases = getattr(self.engines, "phrases", None)
        if phrases is not None and text:
            await self.threads.call("tts", phrases.get, text, lambda t: self._synthesize(t, None))

    def feed_audio(self, frame: np.ndarray, now: float | None = None) -> None:
        """One 20 ms caller frame: PCM16 mono 8000 Hz, 160 samples. Cheap; runs on the loop."""
        if self._closed or self.on_hold or len(frame) != FRAME_SAMPLES:
            return
        now = self.clock() if now is None else now
        voiced = self.vad.is_speech(frame)
        guard = self.echo_guard
        if guard is not None:
            guard.note_received(frame)
            if voiced and guard.active and guard.is_echo():
                voiced = False  # our own voice coming back, not the caller
                self.echo_frames += 1
                if self.metrics:
                    self.metrics.echo_frames.inc()
        self.turns.asr_pass_s = getattr(self.engines.asr, "pass_seconds", 0.0)
        self._apply(self.turns.frame(frame, voiced, now, self.agent_active))

    def feed_dtmf(self, digit: str) -> None:
        """A DTMF digit from the caller (RFC 4733 or Media Streams ``dtmf``)."""
        self.dtmf_digits.append(digit)
        if self.records is not None:
            self.records.dtmf(digit)
        if self.metrics:
            self.metrics.dtmf.inc()
        log.info("dtmf call=%s digit=%s", self.leg.call_id, digit)
        if self._collecting is not None:
            if digit.isdigit():
                self._add_digits(digit)
            elif digit == "#":  # end of entry
                self._finish_collecting(self._collecting["digits"] or None)
            return
        t = self.transfer_settings
        if t is not None and t.target and t.dtmf and digit == t.dtmf:
            self.request_transfer()

    def request_transfer(self) -> None:
        """Stop, say the transfer announcement, then ask the leg to transfer; on a leg whose
        ``transfer_unavailable`` sentence is set, say that instead."""
        t = self.transfer_settings
        if t is None or not t.target:
            return
        unavailable = getattr(self.leg, "transfer_unavailable", "")
        self._stop_agent(interrupted=True)
        self._cancel = threading.Event()
        if unavailable:  # a leg that cannot transfer (a browser call) says so instead
            log.info("transfer call=%s: not available on this leg", self.leg.call_id)
            self._spawn(self._say(unavailable))
            return
        log.info("transfer call=%s to %s", self.leg.call_id, t.target)
        self._spawn(self._say_then(t.announce, lambda: self.leg.transfer(t.target)))

    def transfer_failed(self) -> None:
        """The leg could not transfer: tell the caller and carry on."""
        t = self.transfer_settings
        self._stop_agent(interrupted=False)
        self._cancel = threading.Event()
        if t is not None and t.failed:
            self._spawn(self._say(t.failed))

    def set_hold(self, held: bool) -> None:
        """The peer put the call on hold (``True``) or took it off (``False``).

        On hold, caller audio is ignored (music on hold is not speech) and the
        leg sends nothing, so playout pauses where it is and resumes after.
        """
        if held != self.on_hold:
            log.info("call=%s %s", self.leg.call_id, "on hold" if held else "off hold")
        self.on_hold = held
        self._drop_prepared()
        self.turns.reset()  # playout pauses with the hold anyway, and goes on after it

    def caller_said(self, text: str) -> None:
        """A caller turn given as text instead of audio (``bridge bench answers --voices text``,
        tests): the agent replies as if ASR had heard ``text``."""
        self._start_reply(None, {}, text=text)

    @property
    def agent_active(self) -> bool:
        """Whether the agent is speaking or answering (a reply released to the caller)."""
        return bool(self._playout) or (self._reply_task is not None and not self._reply_task.done())

    @property
    def barge_in_pending(self) -> bool:
        """Whether caller speech has paused the agent and is not yet judged (:mod:`.backchannel`)."""
        return self.turns.paused is not None

    @property
    def _paused(self) -> int | None:
        """The utterance that paused the agent (playout hands nothing out meanwhile)."""
        return self.turns.paused

    @property
    def interim_text(self) -> str:
        """The latest interim transcript of the caller's current utterance."""
        return self.turns.interim_text

    @property
    def collecting_digits(self) -> bool:
        """Whether a ``collect_digits`` request is waiting for the caller's digits."""
        return self._collecting is not None

    def barge_in(self) -> None:
        """Stop the agent now: drop queued audio, cancel LLM/TTS, truncate history."""
        log.info("barge-in call=%s played=%r", self.leg.call_id, self._current.played_text() if self._current else "")
        if self.metrics:
            self.metrics.barge_ins.inc()
        self._stop_agent(interrupted=True)

    async def close(self) -> None:
        """Cancel everything in flight and wait (up to :data:`CLOSE_WAIT_S`) until the
        engine calls already in worker threads have returned, so that the end of the
        call frees their memory too (:mod:`.work`). Idempotent."""
        self._closed = True
        if self._digits_timer is not None:
            self._digits_timer.cancel()
        self._drop_prepared()
        self._stop_agent(interrupted=False)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.threads.settle(CLOSE_WAIT_S)
        # Keep the record (history, turns, latencies), drop the audio: a finished
        # call must not pin tens of KB of frames (a soak run's RSS grew with them).
        self.turns.clear()
        if self.echo_guard is not None:
            self.echo_guard.clear()

    def transcript(self) -> list[tuple[str, str]]:
        """The history as ``(role, text)``, agent turns reduced to what was played."""
        out = []
        for role, item in self.history:
            text = item.played_text() if isinstance(item, AgentUtterance) else str(item)
            if text:
                out.append((role, text))
        return out

    # ------------------------------------------------ turn-taking actions

    def _apply(self, actions: list[tt.Action]) -> None:
        """Carry out what :class:`~.turntaking.TurnTaking` asked for."""
        for action in actions:
            if isinstance(action, tt.UtteranceStarted):
                if not action.agent_active:
                    self._prime_llm()
            elif isinstance(action, tt.Speculate):
                self._speculate(action)
            elif isinstance(action, tt.Discard):
                self._drop_prepared(action.utterance)
            elif isinstance(action, tt.Transcribe):
                self._transcribe(action)
            elif isinstance(action, tt.PauseAgent):
                log.info("barge-in call=%s pending: agent paused at %r", self.leg.call_id, self._current.played_text() if self._current else "")
            elif isinstance(action, tt.ResumeAgent):
                self.backchannels.append(action.heard)
                del self.backchannels[:-20]
                if self.metrics:
                    self.metrics.barge_ins_resumed.inc()
                log.info("barge-in call=%s withdrawn: %r is a backchannel or no words; the agent resumes", self.leg.call_id, action.heard)
            elif isinstance(action, tt.Interrupt):
                if action.words:
                    log.info("barge-in call=%s confirmed by the words %r", self.leg.call_id, action.words)
                if self.agent_active:
                    self.barge_in()
            elif isinstance(action, tt.EndOfTurn):
                self._end_of_turn(action)
            elif isinstance(action, tt.Reprompt):
                log.info("call=%s: silence for %.0f s, reprompt", self.leg.call_id, self.agent.reprompt_after_s)
                self._cancel = threading.Event()
                self._spawn(self._say(self.agent.reprompt))
            elif isinstance(action, tt.GiveUp):
                log.info("call=%s: no answer to %d reprompts, ending the call", self.leg.call_id, self.agent.max_reprompts)
                self._cancel = threading.Event()
                self._spawn(self._say_then(self.agent.goodbye, self._hangup))

    def _transcribe(self, action: tt.Transcribe) -> None:
        future = self.threads.run(self.engines.asr.transcribe, action.pcm)

        def done(f: asyncio.Future) -> None:
            if self._closed or f.cancelled():
                return
            text = f.result().strip() if f.exception() is None else None
            if action.purpose == "interim" and text is not None:
                self.interims.append(text)
                del self.interims[:-20]
                log.debug("interim call=%s %r", self.leg.call_id, text)
            self._apply(self.turns.heard(action.utterance, action.purpose, text, self.clock(), self.agent_active))

        future.add_done_callback(done)

    # ------------------------------------------------------------ internals

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("conversation task failed call=%s", self.leg.call_id, exc_info=task.exception())

    def _stop_agent(self, interrupted: bool) -> None:
        self.turns.agent_stopped()
        self._playout.clear()
        self.leg.clear_playout()
        self._cancel.set()
        if self._reply_task is not None and not self._reply_task.done():
            self._reply_task.cancel()
        if self._current is not None:
            # Once interrupted, always: closing the call later must not clear the flag.
            self._current.interrupted = self._current.interrupted or interrupted
        if self.records is not None:
            self.records.stopped(self._current)
        self._after_playout = None
        if self._heard_wait is not None:
            self._heard_wait[2].cancel()
            self._heard_wait = None

    def _start_reply(self, pcm: np.ndarray | None, times: dict[str, float], rule: str = "unknown", text: str | None = None) -> None:
        self.turns_started += 1
        if self.agent_active:
            self._stop_agent(interrupted=True)
        self._cancel = threading.Event()
        self._reply_task = self._spawn(self._reply(pcm, times, self._cancel, rule=rule, text=text))

    async def _say(self, text: str) -> None:
        """Speak fixed text (greeting, goodbye) without the LLM, synthesized once per
        process (:class:`bridge.engines.phrases.PhraseCache`)."""
        utt = AgentUtterance()
        self._current = utt
        self._times = None
        self.history.append(("agent", utt))
        if self.records is not None:
            self.records.begin(None, utt, None)
        await self._speak_sentence(text, utt, None, self._cancel, fixed=True)
        if self.records is not None:
            self.records.generated(utt, None, [])

    async def _watch_silence(self) -> None:
        """Reprompts: :meth:`~.turntaking.TurnTaking.tick` four times a second."""
        while not self._closed:
            await asyncio.sleep(0.25)
            waiting = self.on_hold or self._collecting is not None or self._prepared is not None
            self._apply(self.turns.tick(self.clock(), self.agent_active, waiting))

    async def _max_duration(self) -> None:
        await asyncio.sleep(self.agent.max_call_seconds)
        log.info("call=%s reached max_call_seconds=%s", self.leg.call_id, self.agent.max_call_seconds)
        self._stop_agent(interrupted=False)
        self._cancel = threading.Event()
        await self._say_then(self.agent.goodbye, self._hangup)

    def _hangup(self) -> None:
        self.leg.hangup("agent")

    async def _say_then(self, text: str, action: Callable[[], None]) -> None:
        """Say ``text``, then run ``action`` once it has been played out."""
        await self._say(text)
        self._after_playout_do(action)
