"""The agent of an outbound call with answering-machine detection.

:class:`AnsweringGate` stands between the leg and the call's
:class:`~bridge.conversation.engine.Conversation` and runs the
:class:`~bridge.outbound.amd.AnsweringMachineDetector` on the callee's audio. Until
there is a verdict the agent says nothing (the leg sends silence) and the conversation
hears nothing. Then:

- ``human`` (or ``unknown`` with ``on_unknown: greet``): the conversation starts; its
  greeting was synthesized while the detector listened, so it plays at once;
- ``machine``: the detector keeps listening for the beep; at its end (or after the
  greeting and ``no_beep_silence_s`` of silence) the voicemail message, also synthesized
  ahead, is spoken, and the agent hangs up once it has been played;
- ``unknown`` with ``on_unknown: hangup``, or no beep within ``beep_timeout_s``: hang up.

The verdict, its reason and time go into the call record (``amd_verdict``,
``amd_reason``, ``amd_seconds``) and ``/metrics``; when the call ends its outcome
(:func:`outcome_of`) goes into the record's ``outcome``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np

from ..audio.wire import FRAME_SAMPLES
from ..config import OutboundSettings
from ..engines.asr_batch import Transcript
from ..outbound.amd import AnsweringMachineDetector, GiveUp, SpeakMessage, Transcribe, Verdict

log = logging.getLogger("bridge.outbound")


def outcome_of(verdict: Verdict | None, message_how: str | None, message_played: bool, caller_turns: int) -> str:
    """The outcome of an answered call: ``voicemail_left`` (the message was played to the
    end after a beep), ``machine_no_beep`` (a machine, and no beep was heard, or the
    message was cut), ``human`` (a person, or an unsure answer that then spoke to the
    agent), ``no_answer`` (an unsure answer that never said anything)."""
    if verdict is None or verdict.kind == "human":
        return "human"
    if verdict.kind == "machine":
        return "voicemail_left" if message_how == "beep" and message_played else "machine_no_beep"
    return "human" if caller_turns else "no_answer"


class AnsweringGate:
    """See the module docstring. Implements :class:`bridge.agents.Agent`; every other
    attribute is the conversation's.

    Args:
        conversation: the call's conversation (its agent settings carry the outbound greeting).
        engines: the engines (a VAD per call, ASR for the greeting's words).
        outbound: :class:`bridge.config.OutboundSettings` (``amd``, ``voicemail_message``).
        leg: the call leg (``call_id``, ``hangup``, ``host.records``).
        message: the voicemail message with the callee's variables filled in.
        metrics: a :class:`bridge.observability.metrics.Metrics` or ``None``.
        on_outcome: called once with ``(outcome, None)`` when the call ends.
        detect: run the detector (else the agent starts at once, and the gate only
            reports the outcome).
    """

    def __init__(
        self,
        conversation,
        engines,
        outbound: OutboundSettings,
        leg,
        message: str,
        metrics=None,
        on_outcome: Callable[[str, int | None], None] | None = None,
        detect: bool = True,
    ) -> None:
        self.conversation = conversation
        self.engines = engines
        self.settings = outbound.amd
        self.leg = leg
        self.message = message
        self.metrics = metrics
        self.on_outcome = on_outcome
        self.detect = detect
        self.detector = AnsweringMachineDetector(outbound.amd)
        self.vad = engines.vad_factory() if detect else None
        #: ``detecting`` -> ``conversation`` | ``voicemail`` -> ``message`` | ``ended``.
        self.state = "detecting"
        self.verdict: Verdict | None = None
        self.message_how: str | None = None
        self.message_played = False
        #: Seconds of call audio when the message (or the greeting) began.
        self.spoke_at: float | None = None
        self.outcome: str | None = None
        self._tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------ the Agent interface

    def attach_records(self, records) -> None:
        """The conversation's turns go to ``records`` (:class:`bridge.conversation.turn_records.TurnRecorder`)."""
        attach = getattr(self.conversation, "attach_records", None)
        if attach is not None:
            attach(records)

    def __getattr__(self, name: str):
        return getattr(self.conversation, name)

    def start(self) -> None:
        """The call is answered: listen; synthesize the greeting and the message meanwhile.
        Without detection: the agent starts at once."""
        if not self.detect:
            self.state = "conversation"
            self.spoke_at = 0.0
            self.conversation.start()
            return
        log.info("call %s: answering-machine detection started", self.leg.call_id)
        for text in (self.conversation.agent.greeting, self.message):
            if text:
                self._spawn(self.conversation.prepare_phrase(text))

    def feed_audio(self, frame: np.ndarray, now: float | None = None) -> None:
        """One 20 ms callee frame: PCM16 mono 8000 Hz, 160 samples."""
        if self.state == "conversation":
            self.conversation.feed_audio(frame, now)
            return
        if self.state not in ("detecting", "voicemail") or len(frame) != FRAME_SAMPLES:
            return
        self._apply(self.detector.feed(frame, self.vad.is_speech(frame)))

    def feed_dtmf(self, digit: str) -> None:
        if self.state == "conversation":
            self.conversation.feed_dtmf(digit)

    def pull_frame(self, now: float | None = None):
        if self.state in ("conversation", "message"):
            return self.conversation.pull_frame(now)
        return None

    def pull_item(self, now: float | None = None):
        if self.state in ("conversation", "message"):
            return self.conversation.pull_item(now)
        return None

    def mark_played(self, owner, offset: int) -> None:
        self.conversation.mark_played(owner, offset)

    def set_hold(self, held: bool) -> None:
        self.conversation.set_hold(held)

    def transfer_failed(self) -> None:
        self.conversation.transfer_failed()

    def transcript(self) -> list[tuple[str, str]]:
        return self.conversation.transcript()

    async def close(self) -> None:
        """Stop the detector's work and the conversation; record the outcome (once)."""
        for task in list(self._tasks):
            task.cancel()
        await self.conversation.close()
        if self.state != "ended":
            self.state = "ended"
            turns = sum(1 for t in getattr(self.conversation, "turn_log", []) if t.get("caller"))
            self.outcome = outcome_of(self.verdict, self.message_how, self.message_played, turns)
            log.info("call %s: outcome %s", self.leg.call_id, self.outcome)
            self.leg.host.records.update(self.leg.call_id, outcome=self.outcome)
            if self.metrics is not None:
                self.metrics.outbound_outcomes.labels(self.outcome).inc()
            if self.on_outcome is not None:
                self.on_outcome(self.outcome, None)

    # ------------------------------------------------------------ actions

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("call %s: answering-machine detection task failed: %s", self.leg.call_id, task.exception())

    def _apply(self, actions) -> None:
        for action in actions:
            if isinstance(action, Transcribe):
                self._spawn(self._transcribe(action))
            elif isinstance(action, Verdict):
                self._on_verdict(action)
            elif isinstance(action, SpeakMessage):
                self._speak_message(action)
            elif isinstance(action, GiveUp):
                log.info("call %s: no beep within %.0f s: hanging up", self.leg.call_id, self.settings.beep_timeout_s)
                self.state = "ended_wait"
                self.leg.hangup("amd_no_beep")

    async def _transcribe(self, action: Transcribe) -> None:
        try:
            heard = await self.conversation.threads.call("asr", self.engines.asr.hear, action.pcm)
        except Exception as exc:  # noqa: BLE001 - no words: the pattern alone decides
            log.warning("call %s: greeting transcription failed: %s", self.leg.call_id, exc)
            heard = Transcript("")
        if self.state in ("detecting", "voicemail"):
            self._apply(self.detector.transcript(action.id, heard.text, heard.avg_logprob))

    def _on_verdict(self, verdict: Verdict) -> None:
        self.verdict = verdict
        log.info(
            "call %s: answered by %s (%s) after %.2f s: %r",
            self.leg.call_id,
            verdict.kind,
            verdict.reason,
            verdict.at,
            verdict.transcript,
        )
        self.leg.host.records.update(
            self.leg.call_id, amd_verdict=verdict.kind, amd_reason=verdict.reason[:64], amd_seconds=round(verdict.at, 3)
        )
        if self.metrics is not None:
            self.metrics.amd_verdicts.labels(verdict.kind, verdict.reason.split(":")[0]).inc()
            self.metrics.amd_seconds.observe(verdict.at)
        if verdict.kind == "machine":
            self.state = "voicemail"
        elif verdict.kind == "unknown" and self.settings.on_unknown == "hangup":
            self.state = "ended_wait"
            self.leg.hangup("amd_unknown")
        else:
            self.state = "conversation"
            self.spoke_at = verdict.at
            self.conversation.start()

    def _speak_message(self, action: SpeakMessage) -> None:
        self.state = "message"
        self.message_how = action.how
        self.spoke_at = action.at
        if action.beep is not None:
            log.info(
                "call %s: beep %d Hz, %d ms, ended at %.2f s: leaving the message",
                self.leg.call_id,
                action.beep.hz,
                action.beep.ms,
                action.beep.end,
            )
        else:
            log.info(
                "call %s: no beep; %.1f s of silence after the greeting: leaving the message",
                self.leg.call_id,
                self.settings.no_beep_silence_s,
            )
        if self.metrics is not None:
            self.metrics.voicemail_messages.labels(action.how).inc()

        def played() -> None:
            self.message_played = True
            self.leg.hangup("voicemail_left")

        self.conversation.say_then(self.message, played)
