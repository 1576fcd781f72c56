"""The agent's side of the conversation: what it says, when, and what the call then does.

:class:`AgentTurns` owns the history and the call's turn log, starts a reply for each
caller turn (or releases the one prepared during the pause: :mod:`.speculation`), speaks
fixed phrases (greeting, reprompt, goodbye, apology), stops the agent on barge-in, and
carries out what call control decided (:mod:`.control`) once the caller has heard the
last words. What the agent says now is stopped by one event, replaced only by
:meth:`AgentTurns.speech`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine

import numpy as np

from ..engines.tools import ToolCall, digits_in
from .control import CallControl, Decision
from .digits import DigitCollector
from .failures import EngineError
from .playout import Playout
from .reply import ReplyWriter, Written, resolve_probe
from .turn_records import TurnRecorder
from .turns import AgentFrame, AgentUtterance, CallLeg, Reply
from .work import WorkerThreads

log = logging.getLogger("bridge.conversation")


class AgentTurns:
    """The agent's turns in one call (see the module docstring).

    Args:
        agent: :class:`bridge.config.AgentSettings`.
        leg: the call leg (hang up, transfer, ``clear_playout``).
        asr: the recognizer (:class:`bridge.engines.Asr`) for turns heard only at their end.
        playout: the call's :class:`~.playout.Playout`.
        writer: the call's :class:`~.reply.ReplyWriter`.
        control: the call's :class:`~.control.CallControl`.
        threads: the call's :class:`~.work.WorkerThreads`.
        clock: monotonic clock in seconds.
        spawn: starts a task the conversation owns (cancelled when it closes).
        stopped: called when the agent is stopped (turn-taking's ``agent_stopped``).
        metrics: a :class:`bridge.observability.metrics.Metrics` or ``None``.
        transfer: :class:`bridge.config.TransferSettings` or ``None`` (no transfer).
        transfer_unavailable: what the agent says on a leg that cannot transfer (a
            browser call), or empty.
    """

    def __init__(
        self,
        agent,
        leg: CallLeg,
        asr,
        playout: Playout,
        writer: ReplyWriter,
        control: CallControl,
        threads: WorkerThreads,
        clock: Callable[[], float],
        spawn: Callable[[Coroutine], asyncio.Task],
        stopped: Callable[[], None],
        metrics=None,
        transfer=None,
        transfer_unavailable: str = "",
    ) -> None:
        self._agent = agent
        self._leg = leg
        self._asr = asr
        self._playout = playout
        self._writer = writer
        self._control = control
        self._threads = threads
        self._clock = clock
        self._spawn = spawn
        self._stopped = stopped
        self._metrics = metrics
        self._transfer = transfer
        self._unavailable = transfer_unavailable
        self._records: TurnRecorder | None = None
        self.digits = DigitCollector(leg.call_id, agent.digits_timeout_s, self._digits_done)
        self.history: list[tuple[str, object]] = []  # ("caller", str) | ("agent", AgentUtterance)
        self.turn_log: list[dict] = []
        #: Caller turns handed to the agent so far (endpoint, text or digits).
        self.started = 0
        self._cancel = threading.Event()
        self._reply_task: asyncio.Task | None = None
        self._failed_stages: set[str] = set()
        self._closed = False

    def attach_records(self, records: TurnRecorder | None) -> None:
        """Write the turns to ``records`` from now on."""
        self._records = records

    @property
    def active(self) -> bool:
        """Whether the agent is speaking or answering (a reply released to the caller)."""
        return self._playout.playing or self.replying()

    def replying(self) -> bool:
        """Whether a reply released to the caller is still being written."""
        return self._reply_task is not None and not self._reply_task.done()

    def transcript(self) -> list[tuple[str, str]]:
        """The history as ``(role, text)``, agent turns reduced to what was played."""
        out = []
        for role, item in self.history:
            text = item.played_text() if isinstance(item, AgentUtterance) else str(item)
            if text:
                out.append((role, text))
        return out

    def speech(self, cancel: threading.Event | None = None) -> threading.Event:
        """What the agent says next is stopped by ``cancel`` (a new event by default),
        which :meth:`stop` sets. Returns it."""
        self._cancel = cancel if cancel is not None else threading.Event()
        return self._cancel

    def say(self, text: str, then: Callable[[], None] | None = None, cancel: threading.Event | None = None) -> None:
        """Speak fixed ``text`` (from the phrase cache, no LLM), stopped by ``cancel``
        (default: what stops the agent now), then run ``then`` once it has been heard."""
        self._spawn(self._say(text, self._cancel if cancel is None else cancel, then))

    def stop(self, interrupted: bool) -> None:
        """Stop the agent now: queued audio dropped (below the conversation too), the reply
        being written cancelled; ``interrupted``: the caller cut it short (barge-in)."""
        self._stopped()
        self._playout.stop()
        self._leg.clear_playout()
        self._cancel.set()
        if self._reply_task is not None and not self._reply_task.done():
            self._reply_task.cancel()
        current = self._playout.current
        if current is not None:
            # Once interrupted, always: closing the call later must not clear the flag.
            current.interrupted = current.interrupted or interrupted
        if self._records is not None:
            self._records.stopped(current)

    def close(self) -> None:
        """The call is ending: no apology, no digit timeout."""
        self._closed = True
        self.digits.cancel()

    def start_reply(
        self, pcm: np.ndarray | None, times: dict[str, float], rule: str = "unknown", text: str | None = None
    ) -> None:
        """Answer a caller turn: ``text``, or the ASR of ``pcm`` (PCM16 8 kHz); ``times``:
        its latency readings; ``rule``: what ended it."""
        self.started += 1
        if self.active:
            self.stop(interrupted=True)
        cancel = self.speech()
        self._reply_task = self._spawn(self._reply(pcm, times, cancel, rule=rule, text=text))

    def generate(self, reply: Reply, text: str) -> asyncio.Task:
        """Start writing the prepared ``reply`` to the caller's ``text``, unheard until released."""
        return self._spawn(self._reply(None, reply.times, reply.cancel, text=text, reply=reply))

    def release_prepared(self, reply: Reply, pcm: np.ndarray) -> None:
        """The turn of the prepared ``reply`` ended (its end-of-turn fields set): it is
        heard from now on, or its failure apologized for. ``pcm``: the turn's audio."""
        self.started += 1
        if self.active:
            self.stop(interrupted=True)
        reply.release_asked = True
        self.speech(reply.cancel)
        self._reply_task = reply.task
        if reply.failure is not None:
            self.engine_failed(reply.failure)
        elif reply.text == "":
            log.info("turn call=%s: no words recognized in %.2f s of audio", self._leg.call_id, len(pcm) / 8000)
        else:
            self._release(reply)

    def transfer(self) -> None:
        """Stop, say the transfer announcement, then ask the leg to transfer; on a leg that
        cannot transfer, say so instead."""
        t = self._transfer
        if t is None or not t.target:
            return
        self.stop(interrupted=True)
        cancel = self.speech()
        if self._unavailable:
            log.info("transfer call=%s: not available on this leg", self._leg.call_id)
            self.say(self._unavailable, cancel=cancel)
            return
        log.info("transfer call=%s to %s", self._leg.call_id, t.target)
        self.say(t.announce, then=lambda: self._leg.transfer(t.target), cancel=cancel)

    def transfer_failed(self) -> None:
        """The leg could not transfer: tell the caller (``transfer.failed``) and carry on."""
        self.stop(interrupted=False)
        cancel = self.speech()
        if self._transfer is not None and self._transfer.failed:
            self.say(self._transfer.failed, cancel=cancel)

    def engine_failed(self, exc: EngineError) -> None:
        """Count and log the failure (once per call and stage), apologize, then
        continue, transfer or hang up as ``agent.on_engine_error`` says."""
        if self._metrics:
            self._metrics.engine_errors.labels(exc.stage).inc()
        if exc.stage not in self._failed_stages:
            self._failed_stages.add(exc.stage)
            log.warning(
                "engine failure call=%s stage=%s: %s (apologizing, then %s)",
                self._leg.call_id,
                exc.stage,
                exc,
                self._agent.on_engine_error,
            )
        if self._closed:
            return
        action = self._agent.on_engine_error
        target = self._transfer.target if self._transfer is not None else ""
        then = None
        if action == "end_call":
            then = self.hangup
        elif action == "transfer" and target:
            then = lambda: self._leg.transfer(target)  # noqa: E731
        self._spawn(self._apologize(then, self.speech()))

    def hangup(self) -> None:
        """End the call (the agent's end reason)."""
        self._leg.hangup("agent")

    # ------------------------------------------------------------ a reply

    async def _reply(
        self,
        pcm: np.ndarray | None,
        times: dict[str, float],
        cancel: threading.Event,
        rule: str = "unknown",
        text: str | None = None,
        reply: Reply | None = None,
    ) -> None:
        """One agent turn: the caller's words (``text``, or ASR of ``pcm``) -> reply -> playout.
        ``reply``: a prepared reply (heard once released), else one heard at once. An
        engine failure on the way becomes the apology (:mod:`bridge.conversation.failures`),
        for a prepared reply once it is released."""
        try:
            await self._turn(pcm, times, cancel, rule, text, reply)
        except EngineError as exc:
            if reply is None or reply.release_asked:
                self.engine_failed(exc)
            else:
                reply.failure = exc
        finally:
            if reply is not None:
                resolve_probe(reply)

    async def _turn(
        self,
        pcm: np.ndarray | None,
        times: dict[str, float],
        cancel: threading.Event,
        rule: str,
        text: str | None,
        reply: Reply | None,
    ) -> None:
        if text is None:
            text = (await self._threads.call("asr", self._asr.transcribe, pcm)).strip()
            times["asr_final"] = self._clock()
            if not text or cancel.is_set():
                log.info("turn call=%s: no words recognized in %.2f s of audio", self._leg.call_id, len(pcm) / 8000)
                return
            if self.digits.waiting:
                self.digits.add(digits_in(text))  # collect_digits: spoken digits count like keyed ones
                return
        if reply is None:
            reply = Reply(0, 0, cancel, times=times, rule=rule, release_asked=True)
        before = self.transcript()  # the history this turn answers (without its own lines)
        utt = AgentUtterance()
        reply.text, reply.utt = text, utt
        if reply.release_asked:
            self._release(reply)
        decision = self._control.answer_in_code(text, before)
        if decision is not None:  # leave-taking, a request for a person: no model asked
            await self._writer.speak(decision.phrase, utt, None, cancel, reply=reply, fixed=True)
            await reply.released_event.wait()
            self._log_turn(text, utt, reply.rule, [ToolCall(decision.tool)], reason=reply.reason)
            self._carry_out(decision)
            return
        written = Written()
        try:
            await self._writer.write(text, before, utt, reply, cancel, written)
        finally:
            if reply.released:
                self._log_turn(text, utt, reply.rule, written.calls, written.dropped, reply.reason, reply.scores)
        if not reply.released:
            await reply.released_event.wait()
            self._log_turn(text, utt, reply.rule, written.calls, written.dropped, reply.reason, reply.scores)
        self._carry_out(self._control.after_reply(written.calls, " ".join(utt.sentences), text, before))

    def deliver(self, frames: list[AgentFrame], reply: Reply | None) -> None:
        """A sentence's frames: to playout, or to ``reply``'s stash while that prepared
        reply is not released (:class:`~.turns.Reply`)."""
        if reply is None or reply.released:
            self._playout.extend(frames)
        else:
            reply.stash.extend(frames)

    def _release(self, reply: Reply) -> None:
        """The end of the turn: ``reply`` is heard from now on. Its caller line and utterance
        enter the history and the call record, and what it has synthesized so far goes to
        playout. Asked before the reply has begun (its transcript still running), the
        reply releases itself when it begins."""
        reply.release_asked = True
        if reply.utt is None or reply.released:
            return
        reply.released = True
        self.history.append(("caller", reply.text))
        self.history.append(("agent", reply.utt))
        self._playout.begin(reply.utt, reply.times)
        if self._records is not None:
            self._records.begin(reply.text, reply.utt, reply.times)
        self._playout.extend(reply.stash)
        reply.stash.clear()
        reply.released_event.set()

    def _carry_out(self, decision: Decision | None) -> None:
        """Do what call control decided, once the agent's words have been heard."""
        if decision is None:
            return
        if decision.effect == "hangup":
            self._playout.after_playout(self.hangup)
        elif decision.effect == "transfer":
            target = decision.target
            self._playout.after_playout(lambda: self._leg.transfer(target))
        elif decision.effect == "collect":
            self.digits.start(decision.count)

    def _digits_done(self, digits: str | None) -> None:
        """A ``collect_digits`` request ended: the agent answers what was entered."""
        said = f"(entered {' '.join(digits)})" if digits else "(entered nothing)"
        self.start_reply(None, {}, text=said)

    async def _apologize(self, then: Callable[[], None] | None, cancel: threading.Event) -> None:
        try:
            if self._agent.error_apology:
                await self._say(self._agent.error_apology, cancel)
        except EngineError as exc:  # TTS itself is down: nothing can be said
            log.warning("call=%s: cannot say the apology: %s", self._leg.call_id, exc)
        if then is not None:
            self._playout.after_playout(then)

    async def _say(self, text: str, cancel: threading.Event, then: Callable[[], None] | None = None) -> None:
        """Speak fixed text (greeting, goodbye) without the LLM, synthesized once per
        process (:class:`bridge.engines.phrases.PhraseCache`); ``cancel`` stops it;
        ``then`` runs once it has been heard."""
        utt = AgentUtterance()
        self._playout.begin(utt, None)
        self.history.append(("agent", utt))
        if self._records is not None:
            self._records.begin(None, utt, None)
        await self._writer.speak(text, utt, None, cancel, fixed=True)
        if self._records is not None:
            self._records.generated(utt, None, [])
        if then is not None:
            self._playout.after_playout(then)

    def _log_turn(
        self,
        caller: str,
        utt: AgentUtterance,
        rule: str,
        calls: list[ToolCall] | None = None,
        dropped: list[str] | None = None,
        reason: str = "",
        scores: dict | None = None,
    ) -> None:
        agent = " ".join(utt.sentences)
        tools = [c.name for c in calls or []]
        if self._records is not None:
            self._records.generated(utt, rule, tools)
        self.turn_log.append(
            {
                "caller": caller,
                "agent": agent,
                "interrupted": utt.interrupted,
                "endpoint_rule": rule,
                "endpoint_reason": reason,
                "end_scores": dict(scores or {}),
                "tools": tools,
                "dropped": list(dropped or []),
            }
        )
        log.info(
            "turn call=%s caller=%r agent=%r endpoint_rule=%s%s%s",
            self._leg.call_id,
            caller,
            agent,
            rule,
            f" ({reason})" if reason else "",
            " (interrupted)" if utt.interrupted else "",
        )
