"""The call brain: turn-taking, barge-in and the agent, independent of the call leg.

A leg (SIP+RTP, or a Media Streams WebSocket) drives a :class:`Conversation`:

- :meth:`Conversation.feed_audio`: each 20 ms frame of caller audio
  (PCM16 mono 8000 Hz, 160 samples);
- :meth:`Conversation.feed_dtmf`: each DTMF digit;
- :meth:`Conversation.pull_frame`: once per 20 ms send slot, the agent frame
  that goes on the wire now (or ``None``);

and implements :class:`CallLeg` so the conversation can hang up or flush
audio queued below it. This module never imports ``sip``, ``media`` or
``mediastreams`` (DESIGN.md, Layers).

Turn pipeline: webrtcvad endpointing -> ASR on the utterance -> LLM tokens
-> sentence splitter -> TTS per sentence -> 20 ms frames -> playout queue.
Inference runs in worker threads, never on the event loop.

Barge-in (DESIGN.md): caller speech of at least ``barge_in_min_speech_ms``
while the agent speaks or prepares a reply stops playout at the next packet,
cancels LLM and TTS, keeps in the history only what was played, and the
caller's turn continues with the audio already captured.
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

from .backchannel import BACKCHANNEL_WORDS, is_backchannel
from .echo_guard import EchoGuard
from .failures import EngineError, awaited
from .playout import HEARD_TIMEOUT_S, PlayoutMixin
from .reply import ReplyMixin
from .turns import UNFINISHED_WORDS, AgentFrame, AgentUtterance, CallLeg, Speculation, sentence_state
from .turn_records import TurnRecorder
from .work import WorkerThreads

__all__ = ["FRAME_MS", "FRAME_SAMPLES", "HEARD_TIMEOUT_S", "UNFINISHED_WORDS", "AgentFrame", "AgentUtterance", "CallLeg", "Conversation", "sentence_state"]

log = logging.getLogger("bridge.conversation")

FRAME_SAMPLES = 160  # 20 ms at 8000 Hz
FRAME_MS = 20
#: Longest wait at the end of a call for its engine calls still in worker threads, seconds.
CLOSE_WAIT_S = 5.0


class Conversation(PlayoutMixin, ReplyMixin):
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
        self.history: list[tuple[str, object]] = []  # ("caller", str) | ("agent", AgentUtterance)
        self.dtmf_digits: list[str] = []
        self.turn_log: list[dict] = []
        #: Turn records for the call record (:mod:`.turn_records`), set by the leg's owner.
        self.records: TurnRecorder | None = None
        self.latencies: list[dict[str, float]] = []
        self._playout: collections.deque[AgentFrame] = collections.deque()
        self._reply_task: asyncio.Task | None = None
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
        self._started_at = clock()
        self._end_call_re = re.compile(agent.end_call_pattern, re.I) if agent.end_call_pattern else None
        # endpointing state
        self._preroll: collections.deque[np.ndarray] = collections.deque(maxlen=max(1, agent.preroll_ms // FRAME_MS))
        self._in_speech = False
        self._utterance: list[np.ndarray] = []
        self._voiced = 0
        self._silence = 0
        self._last_voiced_at = 0.0
        self._barged = False
        #: The utterance (its id) that paused the agent, while its barge-in is pending.
        self._paused: int | None = None
        #: The utterance whose pause was withdrawn while it went on (it may still interrupt).
        self._withdrawn: int | None = None
        self._judging = False
        #: The utterance whose words confirmed a barge-in (interim or judging pass): if it
        #: had already ended, its settling turns it into the caller's turn.
        self._confirmed: int | None = None
        #: Utterances heard over the agent that did not interrupt it (bounded), for inspection.
        self.backchannels: list[str] = []
        self._backchannel_words = frozenset(w.lower() for w in agent.backchannel_words) or BACKCHANNEL_WORDS
        self._spec: Speculation | None = None
        #: The prompt prefix last handed to the LLM to evaluate ahead of a turn.
        self._primed = ""
        #: The latest interim transcript of the caller's current utterance.
        self.interim_text = ""
        #: The last interim transcripts (bounded), for inspection.
        self.interims: list[str] = []
        self._interim_running = False
        self._interim_frames = 0
        self._utterance_id = 0
        self._collecting: dict | None = None
        self._last_activity = clock()
        self._reprompts = 0
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
        """Speak the greeting; start the max-duration timer if configured."""
        if self.agent.greeting:
            self._spawn(self._say(self.agent.greeting))
        if self.agent.max_call_seconds > 0:
            self._spawn(self._max_duration())
        if self.agent.reprompt_after_s > 0:
            self._spawn(self._watch_silence())

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
        if voiced:
            if not self._in_speech:
                self._in_speech = True
                self._utterance_id += 1
                self._interim_frames = 0
                self.interim_text = ""
                self._utterance = list(self._preroll)
                self._voiced = 0
                self._barged = False
                if not self.agent_active:
                    self._prime_llm()
            self._utterance.append(frame)
            self._voiced += 1
            self._silence = 0
            self._last_voiced_at = now
            self._last_activity = now
            self._reprompts = 0
            if self._spec is not None:
                self._spec = None  # the caller went on: the speculative pass is stale
            self._maybe_interim()
            if not self._barged and self._voiced * FRAME_MS >= self.agent.barge_in_min_speech_ms and self.agent_active:
                self._barged = True
                if self.agent.barge_in_confirm_ms > 0:
                    self._pause()
                else:
                    self.barge_in()
            elif self._paused == self._utterance_id and not self._judging and self._voiced * FRAME_MS >= self.agent.barge_in_confirm_ms:
                self._judge()
            return
        if not self._in_speech:
            self._preroll.append(frame)
            return
        self._utterance.append(frame)
        self._silence += 1
        self._check_endpoint(now)

    def _maybe_interim(self) -> None:
        """Start an interim ASR pass over the utterance so far (streaming ASR).

        Bounded: at most one pass in flight, one per ``interim_interval_ms`` of
        new audio, over at most the last ``interim_window_s`` seconds. Skipped
        where ASR is slow: when a pass takes more than half the interval (tiny.en
        takes about 1 s on some 2-core machines), an interim pass running as the
        caller stops would hold the final pass back by up to that long (issue 9
        measured +0.9 s on asr_final); the speculative pass still runs.
        """
        interval = self.agent.interim_interval_ms // FRAME_MS
        if not interval or self._interim_running or len(self._utterance) - self._interim_frames < interval:
            return
        if getattr(self.engines.asr, "pass_seconds", 0.0) > self.agent.interim_interval_ms / 2000:
            return
        self._interim_frames = len(self._utterance)
        window = int(self.agent.interim_window_s * 1000 // FRAME_MS)
        pcm = np.concatenate(self._utterance[-window:])
        self._interim_running = True
        started_in = self._utterance_id
        future = self.threads.run(self.engines.asr.transcribe, pcm)
        future.add_done_callback(lambda f: self._interim_done(f, started_in))

    def _interim_done(self, future: asyncio.Future, utterance_id: int) -> None:
        self._interim_running = False
        if future.cancelled() or future.exception() is not None or utterance_id != self._utterance_id:
            return
        self.interim_text = future.result().strip()
        self.interims.append(self.interim_text)
        del self.interims[:-20]
        log.debug("interim call=%s %r", self.leg.call_id, self.interim_text)
        if utterance_id in (self._paused, self._withdrawn) and self.agent_active and not is_backchannel(self.interim_text, self._backchannel_words):
            self._confirm(utterance_id, self.interim_text)

    def _check_endpoint(self, now: float) -> None:
        """Speculate at the first silence, and end the turn once the silence is long enough.

        The threshold depends on the speculative transcript (:func:`sentence_state`):
        ``endpoint_fast_ms`` for a finished sentence, ``endpoint_slow_ms`` for an
        unfinished one, ``endpoint_silence_ms`` while unknown or still running.
        """
        silence_ms = self._silence * FRAME_MS
        enough_speech = self._voiced * FRAME_MS >= self.agent.min_utterance_ms
        if self._spec is None and enough_speech and silence_ms >= self.agent.speculate_after_ms:
            pcm = np.concatenate(self._utterance)
            future = self.threads.run(self.engines.asr.transcribe, pcm)
            spec = self._spec = Speculation(len(self._utterance), future, self.clock())
            future.add_done_callback(lambda f, spec=spec: self._speculation_done(spec, f))
        if self._spec is not None and self._spec.text is not None:
            state = sentence_state(self._spec.text)
        elif self.interim_text and sentence_state(self.interim_text) == "unfinished":
            state = "unfinished"  # the interim transcript already ends on "and"/"um": be patient
        else:
            state = "unknown"
        threshold = {"finished": self.agent.endpoint_fast_ms, "unfinished": self.agent.endpoint_slow_ms}.get(state, self.agent.endpoint_silence_ms)
        if silence_ms < threshold:
            return
        self._in_speech = False
        pcm = np.concatenate(self._utterance)
        self._utterance = []
        self._preroll.clear()
        spec, self._spec = self._spec, None
        times = {"speech_end": self._last_voiced_at, "endpoint": now}
        if self._utterance_id in (self._paused, self._withdrawn):
            # The utterance that paused the agent is over: resume, or interrupt and answer it.
            self._spawn(self._settle(self._utterance_id, pcm if enough_speech else None, times, spec, state))
        elif enough_speech:
            self._start_reply(pcm, times, spec, state)

    def _speculation_done(self, spec: Speculation, future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        spec.text = future.result().strip()
        spec.done_at = self.clock()
        if spec is self._spec and self._in_speech:
            self._check_endpoint(self.clock())  # a finished sentence may end the turn now

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
        """Stop, say the transfer announcement, then ask the leg to transfer."""
        t = self.transfer_settings
        if t is None or not t.target:
            return
        log.info("transfer call=%s to %s", self.leg.call_id, t.target)
        self._stop_agent(interrupted=True)
        self._cancel = threading.Event()
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
        self._paused = None  # playout pauses with the hold anyway, and goes on after it
        self._in_speech = False
        self._utterance = []

    @property
    def agent_active(self) -> bool:
        """Whether the agent is speaking or preparing a reply."""
        return bool(self._playout) or (self._reply_task is not None and not self._reply_task.done())

    @property
    def barge_in_pending(self) -> bool:
        """Whether caller speech has paused the agent and is not yet judged (:mod:`.backchannel`)."""
        return self._paused is not None

    def _pause(self) -> None:
        """The first step of a barge-in (:mod:`.backchannel`): playout stops at the next
        packet; the queue, the LLM and TTS are kept until the utterance is judged."""
        self._paused = self._utterance_id
        log.info("barge-in call=%s pending: agent paused at %r", self.leg.call_id, self._current.played_text() if self._current else "")

    def _judge(self) -> None:
        """``barge_in_confirm_ms`` of speech while paused: transcribe the utterance so
        far; words that are not a backchannel interrupt for good, anything else resumes
        (a long "okay, right", or steady noise the VAD calls speech)."""
        self._judging = True
        utterance = self._utterance_id
        pcm = np.concatenate(self._utterance[-int(self.agent.interim_window_s * 1000 // FRAME_MS):])
        future = self.threads.run(self.engines.asr.transcribe, pcm)
        future.add_done_callback(lambda f: self._judged(f, utterance))

    def _judged(self, future: asyncio.Future, utterance: int) -> None:
        self._judging = False
        if self._paused != utterance or self._closed:
            return  # decided meanwhile (the utterance ended and was settled, or a new one paused)
        if future.cancelled() or future.exception() is not None:
            self.barge_in()  # ASR failed: the caller may have said something
            return
        text = future.result().strip()
        if is_backchannel(text, self._backchannel_words):
            self._resume(text)
            self._withdrawn = utterance  # its later words (interim, final) may still interrupt
        else:
            self._confirm(utterance, text)

    def _confirm(self, utterance: int, words: str) -> None:
        """Words that are not a backchannel (interim or judging pass) interrupt for good;
        ``utterance`` is remembered, so that its settling answers it if it has ended."""
        log.info("barge-in call=%s confirmed by the words %r", self.leg.call_id, words)
        self._confirmed = utterance
        self.barge_in()

    def _resume(self, heard: str) -> None:
        """The utterance that paused the agent was no interruption: play on from where it stopped."""
        self._paused = None
        self.backchannels.append(heard)
        del self.backchannels[:-20]
        if self.metrics:
            self.metrics.barge_ins_resumed.inc()
        log.info("barge-in call=%s withdrawn: %r is a backchannel or no words; the agent resumes", self.leg.call_id, heard)

    async def _settle(self, utterance: int, pcm: np.ndarray | None, times: dict[str, float], spec: Speculation | None, rule: str) -> None:
        """Judge the utterance that paused the agent once it has ended: transcribe it
        (the speculative pass when there is one), then resume the agent after a
        backchannel or no words, else interrupt it and answer the utterance as a turn.

        An ASR failure interrupts (the caller may have said something) and becomes the
        engine-failure apology.
        """
        text = ""
        try:
            if spec is not None:
                text = (await awaited("asr", spec.future)).strip()
                times["asr_final"] = spec.done_at or self.clock()
            elif pcm is not None:
                text = (await self.threads.call("asr", self.engines.asr.transcribe, pcm)).strip()
                times["asr_final"] = self.clock()
        except EngineError as exc:
            if self._paused == utterance:
                self.barge_in()
            self._engine_failed(exc)
            return
        if self._closed:
            return
        if utterance == self._confirmed:
            # Its words confirmed the barge-in while it was being settled (the judging
            # pass finished after the caller stopped): the agent has stopped; answer it.
            if pcm is not None:
                self._start_reply(pcm, times, rule=rule, text=text or None)
            return
        if utterance not in (self._paused, self._withdrawn):
            return  # decided meanwhile: the caller spoke again
        if pcm is None or is_backchannel(text, self._backchannel_words):
            if self._paused == utterance:
                self._resume(text)
            return
        log.info("barge-in call=%s confirmed by the words %r", self.leg.call_id, text)
        if self.agent_active:
            self.barge_in()
        self._start_reply(pcm, times, rule=rule, text=text)

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
        self._stop_agent(interrupted=False)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.threads.settle(CLOSE_WAIT_S)
        # Keep the record (history, turns, latencies), drop the audio: a finished
        # call must not pin tens of KB of frames (issue 8's soak: RSS grew with them).
        self._preroll.clear()
        self._utterance = []
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
        self._paused = None
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

    def caller_said(self, text: str) -> None:
        """A caller turn given as text instead of audio (``bridge bench answers --voices text``,
        tests): the agent replies as if ASR had heard ``text``."""
        self._start_reply(None, {}, text=text)

    @property
    def collecting_digits(self) -> bool:
        """Whether a ``collect_digits`` request is waiting for the caller's digits."""
        return self._collecting is not None

    def _start_reply(self, pcm: np.ndarray | None, times: dict[str, float], spec: Speculation | None = None, rule: str = "unknown", text: str | None = None) -> None:
        self.turns_started += 1
        if self.agent_active:
            self._stop_agent(interrupted=True)
        self._cancel = threading.Event()
        self._reply_task = self._spawn(self._reply(pcm, times, self._cancel, spec, rule, text))

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
        """Silence on both sides for ``reprompt_after_s``: ask if the caller is there;
        after ``max_reprompts`` unanswered, say goodbye and hang up."""
        agent = self.agent
        while not self._closed:
            await asyncio.sleep(0.25)
            if self.on_hold or self.agent_active or self._in_speech or self._collecting is not None:
                self._last_activity = self.clock()  # the clock runs only while both sides are quiet
                continue
            if self.clock() - self._last_activity < agent.reprompt_after_s:
                continue
            self._last_activity = self.clock()
            if self._reprompts >= agent.max_reprompts:
                log.info("call=%s: no answer to %d reprompts, ending the call", self.leg.call_id, self._reprompts)
                self._cancel = threading.Event()
                await self._say_then(agent.goodbye, self._hangup)
                return
            self._reprompts += 1
            log.info("call=%s: silence for %.0f s, reprompt %d", self.leg.call_id, agent.reprompt_after_s, self._reprompts)
            self._cancel = threading.Event()
            await self._say(agent.reprompt)

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
