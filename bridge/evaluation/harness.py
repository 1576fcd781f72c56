"""One evaluation conversation through the real pipeline, in process.

The caller's audio (already through G.711, :mod:`.voices`) is fed to a real
:class:`~bridge.conversation.engine.Conversation` 20 ms frame by 20 ms frame,
as an RTP leg would: VAD endpointing, speculative and final ASR, the prompt, the
LLM, tool parsing and TTS all run as in a call. The leg is
:class:`RecordingLeg`, which records hang-ups, transfers and what was played.

Pacing: the caller's speech and the silence after it are fed in real time, so
every latency figure is what a caller would see (``first_packet`` is the first
agent frame handed to the leg, polled every 5 ms). The agent's reply is then
drained as fast as it is produced: the clock given to the conversation jumps
20 ms per frame drained, so a 3 s reply costs the benchmark no 3 s of waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..audio.wire import FRAME_SAMPLES
from ..conversation.engine import Conversation
from .evalset import EvalConversation
from .scoring import TurnScore, score_turn

log = logging.getLogger("bridge.evaluation")

#: Leading silence before each caller turn, seconds.
LEAD_S = 0.4
#: How long to wait for the end of the turn after the caller stopped, seconds.
ENDPOINT_WAIT_S = 4.0
#: Longest agent reply to wait for, seconds of wall-clock time.
REPLY_WAIT_S = 30.0


class JumpClock:
    """``time.monotonic()`` plus the time skipped by fast-forwarding (seconds)."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped


@dataclass
class RecordingLeg:
    """A call leg that does what it is asked on paper: :class:`~bridge.conversation.engine.CallLeg`."""

    call_id: str
    hangups: list[str] = field(default_factory=list)
    transfers: list[str] = field(default_factory=list)

    def hangup(self, reason: str) -> None:
        self.hangups.append(reason)

    def clear_playout(self) -> None:
        pass

    def transfer(self, target: str) -> None:
        self.transfers.append(target)


async def _drain(conv: Conversation, clock: JumpClock, first_within: float = 0.0) -> None:
    """Hand out agent frames until the agent is done: the first one as soon as it
    exists, the rest fast-forwarded. ``first_within``: wait this long for a first
    frame even while nothing is under way yet (the greeting is synthesized by a
    task that is not a reply)."""
    deadline = time.monotonic() + REPLY_WAIT_S
    wait_first = time.monotonic() + first_within
    started = False
    while time.monotonic() < deadline:
        item = conv.pull_item()
        if item is not None:
            started = True
            clock.skipped += 0.02
            await asyncio.sleep(0)
            continue
        if not conv.agent_active and (started or time.monotonic() > wait_first):
            break
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.02)  # actions queued after the last frame (hang-up, transfer) run now


def _frames(pcm: np.ndarray) -> list[np.ndarray]:
    n = len(pcm) // FRAME_SAMPLES
    return [pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] for i in range(n)]


async def _speak(conv: Conversation, clock: JumpClock, pcm: np.ndarray) -> None:
    """Feed lead silence, ``pcm`` and trailing silence in real time until the turn ends."""
    silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
    turns_before = conv.turns_started
    frames = [silence] * int(LEAD_S / 0.02) + _frames(pcm)
    frames += [silence] * int(ENDPOINT_WAIT_S / 0.02)
    start = time.monotonic()
    for i, frame in enumerate(frames):
        conv.feed_audio(frame)
        if i >= int(LEAD_S / 0.02) + len(pcm) // FRAME_SAMPLES and conv.turns_started != turns_before:
            return  # the endpoint fired: the agent's turn has begun
        delay = start + (i + 1) * 0.02 - time.monotonic()
        await asyncio.sleep(max(0.0, delay))


async def run_conversation(
    engines, settings, conversation: EvalConversation, speak: Callable[[str], np.ndarray] | None, metrics=None
) -> list[TurnScore]:
    """Hold ``conversation`` with the agent of ``settings`` and score every turn.

    Args:
        engines: loaded :class:`bridge.engines.Engines`.
        settings: :class:`bridge.config.Settings` (agent and transfer).
        speak: text -> 8 kHz telephone PCM16 (:func:`.voices.voice`); ``None``
            gives the agent the text itself (no VAD or ASR: isolates the LLM).
    """
    clock = JumpClock()
    leg = RecordingLeg(f"eval-{conversation.id}")
    agent = settings.agent.model_copy(update={"reprompt_after_s": 0, "max_call_seconds": 0})
    transfer = settings.transfer
    if not transfer.target:
        transfer = transfer.model_copy(update={"target": "sip:frontdesk@127.0.0.1"})
    conv = Conversation(engines, agent, leg, metrics=metrics, clock=clock, transfer=transfer)
    conv.start()
    await _drain(conv, clock, first_within=10.0 if agent.greeting else 0.0)
    scores = []
    try:
        for item in conversation.turns:
            if leg.hangups or leg.transfers:
                scores.append(score_turn(item, None, "", [], asr=speak is not None, after_end=True))
                continue
            logged, latencies = len(conv.turn_log), len(conv.latencies)
            hangups, transfers = len(leg.hangups), len(leg.transfers)
            if speak is None:
                conv.caller_said(item.say)
            else:
                await _speak(conv, clock, speak(item.say))
            await asyncio.sleep(0.01)
            await _drain(conv, clock)
            tools = ["end_call"] * (len(leg.hangups) - hangups) + ["transfer"] * (len(leg.transfers) - transfers)
            if conv.collecting_digits:
                tools.append("collect_digits")
            turn = conv.turn_log[logged] if len(conv.turn_log) > logged else None
            latency = conv.latencies[latencies] if len(conv.latencies) > latencies else {}
            score = score_turn(
                item,
                turn["caller"] if turn else None,
                turn["agent"] if turn else "",
                tools,
                latency,
                asr=speak is not None,
            )
            score.fallback = bool(agent.fallback and turn and agent.fallback.strip() in turn["agent"])
            scores.append(score)
            log.info(
                "eval %s heard=%r reply=%r tools=%s %s",
                item.id,
                score.heard,
                score.reply,
                tools,
                "ok" if score.correct else "WRONG",
            )
    finally:
        await conv.close()
    return scores
