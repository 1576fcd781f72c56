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

from ..media.codecs import resample_all
from .echo_guard import EchoGuard
from .failures import in_thread
from .reply import ReplyMixin
from .turns import UNFINISHED_WORDS, AgentFrame, AgentUtterance, CallLeg, Speculation, sentence_state
from .turn_records import TurnRecorder

__all__ = ["FRAME_MS", "FRAME_SAMPLES", "UNFINISHED_WORDS", "AgentFrame", "AgentUtterance", "CallLeg", "Conversation", "sentence_state"]

log = logging.getLogger("bridge.conversation")

FRAME_SAMPLES = 160  # 20 ms at 8000 Hz
FRAME_MS = 20
#: Longest wait for the mark that confirms the last words were heard (Media Streams), seconds.
HEARD_TIMEOUT_S = 3.0


class Conversation(ReplyMixin):
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
        self._spec: Speculation | None = None
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
                self.barge_in()
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
        future = asyncio.get_running_loop().run_in_executor(None, self.engines.asr.transcribe, pcm)
        future.add_done_callback(lambda f: self._interim_done(f, started_in))

    def _interim_done(self, future: asyncio.Future, utterance_id: int) -> None:
        self._interim_running = False
        if future.cancelled() or future.exception() is not None or utterance_id != self._utterance_id:
            return
        self.interim_text = future.result().strip()
        self.interims.append(self.interim_text)
        del self.interims[:-20]
        log.debug("interim call=%s %r", self.leg.call_id, self.interim_text)

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
            future = asyncio.get_running_loop().run_in_executor(None, self.engines.asr.transcribe, pcm)
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
        if enough_speech:
            times = {"speech_end": self._last_voiced_at, "endpoint": now}
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
        self._in_speech = False
        self._utterance = []

    def pull_frame(self, now: float | None = None) -> np.ndarray | None:
        """The agent frame for the current 20 ms send slot (PCM16 8 kHz, 160 samples) or ``None``."""
        item = self.pull_item(now)
        return item.pcm if item is not None else None

    def mark_played(self, owner: AgentUtterance, offset: int) -> None:
        """The leg learned that ``owner`` was played up to sample ``offset`` (Media Streams marks)."""
        owner.played = max(owner.played, offset)
        if self.records is not None:
            self.records.progressed(owner)
        waiting = self._heard_wait
        if waiting is not None and waiting[0] is owner and owner.played >= sum(owner.samples):
            self._heard_wait = None
            waiting[2].cancel()
            asyncio.get_running_loop().call_soon(waiting[1])

    def _when_heard(self, owner: AgentUtterance | None, action: Callable[[], None]) -> None:
        """Run ``action`` (hang up, transfer) once the caller has heard ``owner`` to its end.

        On RTP handing a frame out is sending it: the last packet has just gone, so
        at once. On a leg that reports playback (Media Streams), once the mark after
        the last frame comes back, or after ``HEARD_TIMEOUT_S`` if it never does.
        """
        loop = asyncio.get_running_loop()
        if not self.played_by_leg or owner is None or owner.played >= sum(owner.samples):
            loop.call_soon(action)
            return

        def timed_out() -> None:
            if self._heard_wait is not None and self._heard_wait[1] is action:
                self._heard_wait = None
                log.info("call=%s: no mark for the last words within %.0f s, going on", self.leg.call_id, HEARD_TIMEOUT_S)
                action()

        self._heard_wait = (owner, action, loop.call_later(HEARD_TIMEOUT_S, timed_out))

    def pull_item(self, now: float | None = None) -> AgentFrame | None:
        """Like :meth:`pull_frame`, with the frame's owner and sentence boundary.

        With ``played_by_leg`` set, handing a frame out does not count it as
        played: the leg reports playback with :meth:`mark_played`."""
        if not self._playout:
            if self.echo_guard is not None:
                self.echo_guard.note_sent(None)
            return None
        if len(self._playout) == 1:
            self._last_activity = self.clock()  # the agent stops talking now
        item = self._playout.popleft()
        if self.echo_guard is not None:
            self.echo_guard.note_sent(item.pcm)
        if not self.played_by_leg:
            item.owner.played += FRAME_SAMPLES
            if self.records is not None:
                self.records.progressed(item.owner)
        times = self._times
        if times is not None and item.owner is self._current and "first_packet" not in times and "speech_end" in times:
            times["first_packet"] = self.clock()
            self._log_latency(times)
            if self.metrics:
                self.metrics.observe_turn(times)
        if not self._playout and self._after_playout is not None and (self._reply_task is None or self._reply_task.done()):
            action, self._after_playout = self._after_playout, None
            self._when_heard(item.owner, action)
        return item

    @property
    def agent_active(self) -> bool:
        """Whether the agent is speaking or preparing a reply."""
        return bool(self._playout) or (self._reply_task is not None and not self._reply_task.done())

    def barge_in(self) -> None:
        """Stop the agent now: drop queued audio, cancel LLM/TTS, truncate history."""
        log.info("barge-in call=%s played=%r", self.leg.call_id, self._current.played_text() if self._current else "")
        if self.metrics:
            self.metrics.barge_ins.inc()
        self._stop_agent(interrupted=True)

    async def close(self) -> None:
        """Cancel everything in flight (idempotent)."""
        self._closed = True
        if self._digits_timer is not None:
            self._digits_timer.cancel()
        self._stop_agent(interrupted=False)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
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
        self._playout.clear()
        self.leg.clear_playout()
        self._cancel.set()
        if self._reply_task is not None and not self._reply_task.done():
            self._reply_task.cancel()
        if self._current is not None:
            self._current.interrupted = interrupted
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

    def _after_playout_do(self, action: Callable[[], None]) -> None:
        if self._playout:
            self._after_playout = action
        else:
            self._when_heard(self._current, action)

    async def _speak_sentence(self, text: str, utt: AgentUtterance, times: dict | None, cancel: threading.Event, fixed: bool = False) -> None:
        """Synthesize ``text`` (``fixed``: from the phrase cache) and queue it as 20 ms frames of ``utt``.

        Raises:
            EngineError: TTS failed (stage ``tts``).
        """
        phrases = getattr(self.engines, "phrases", None)
        if fixed and phrases is not None:
            pcm = phrases.peek(text)
            if pcm is None:
                pcm = await in_thread("tts", phrases.get, text, lambda t: self._synthesize(t, None))
        else:
            pcm = await in_thread("tts", self._synthesize, text, times)
        if cancel.is_set():
            return
        n = int(np.ceil(len(pcm) / FRAME_SAMPLES)) * FRAME_SAMPLES
        pcm = np.pad(pcm, (0, n - len(pcm)))
        utt.sentences.append(text)
        utt.samples.append(n)
        base = sum(utt.samples[:-1])
        for i in range(0, n, FRAME_SAMPLES):
            self._playout.append(AgentFrame(pcm[i : i + FRAME_SAMPLES], utt, i + FRAME_SAMPLES >= n, base + i + FRAME_SAMPLES))

    def _synthesize(self, text: str, times: dict | None) -> np.ndarray:
        """Worker thread: text -> PCM16 8 kHz via Piper and FFmpeg resampling."""
        chunks = []
        for chunk in self.engines.tts.synthesize(text):
            if times is not None and "tts_first_audio" not in times:
                times["tts_first_audio"] = self.clock()
            chunks.append(chunk)
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        return resample_all(np.concatenate(chunks), self.engines.tts.sample_rate, 8000)

    def _log_latency(self, times: dict[str, float]) -> None:
        start = times["speech_end"]
        rel = {k: round(v - start, 3) for k, v in times.items() if k != "speech_end"}
        self.latencies.append(rel)
        log.info(
            "latency call=%s voice_to_voice=%s endpoint=%s asr_final=%s llm_first_token=%s first_sentence=%s tts_first_audio=%s",
            self.leg.call_id,
            rel.get("first_packet"),
            rel.get("endpoint"),
            rel.get("asr_final"),
            rel.get("llm_first_token"),
            rel.get("first_sentence"),
            rel.get("tts_first_audio"),
        )
