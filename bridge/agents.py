"""The agent a call leg talks to, behind one interface for every leg and both kinds.

Both :class:`bridge.conversation.engine.Conversation` (``agent.kind: llm``) and
:class:`bridge.conversation.echo.EchoAgent` (``agent.kind: echo``) implement
:class:`Agent`; the SIP+RTP, Media Streams and browser (WebRTC) legs use only these
methods, so either agent runs on any leg.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .conversation.echo import EchoAgent
from .conversation.engine import Conversation
from .conversation.turns import AgentFrame


class Agent(Protocol):
    """What a call leg may call on its agent."""

    def start(self) -> None:
        """The call is up: greet, start timers."""

    def feed_audio(self, frame: np.ndarray, now: float | None = None) -> None:
        """One caller frame: PCM16 mono 8000 Hz, 160 samples (20 ms)."""

    def feed_dtmf(self, digit: str) -> None:
        """One DTMF digit (``0``-``9``, ``*``, ``#``, ``A``-``D``)."""

    def pull_frame(self, now: float | None = None) -> np.ndarray | None:
        """The frame for this 20 ms send slot (PCM16 8 kHz, 160 samples), or ``None``."""

    def pull_item(self, now: float | None = None) -> AgentFrame | None:
        """Like ``pull_frame``, with the frame's owner and sentence boundary (Media Streams marks)."""

    def mark_played(self, owner, offset: int) -> None:
        """The leg learned that ``owner`` was played up to sample ``offset``."""

    def set_hold(self, held: bool) -> None:
        """The peer put the call on hold (``True``) or took it off."""

    def transfer_failed(self) -> None:
        """The transfer the agent asked for failed."""

    def transcript(self) -> list[tuple[str, str]]:
        """``(role, text)`` turns, agent turns as played."""

    async def close(self) -> None:
        """Stop everything in flight (idempotent)."""


def build_agent(settings, engines, leg, metrics, profile=None, played_by_leg: bool = False) -> Agent:
    """The agent for a new call on ``leg``, by the agent kind of ``profile`` (a
    :class:`bridge.routing.Profile`, with its own settings and engines) or, without
    one, of ``settings.agent`` with ``engines``. ``played_by_leg``: the leg reports what
    was played (Media Streams marks) rather than every frame handed out counting."""
    agent, transfer = settings.agent, settings.transfer
    if profile is not None:
        agent, transfer, engines = profile.agent, profile.transfer, profile.engines
    if agent.kind == "echo":
        return EchoAgent(leg)
    return Conversation(engines, agent, leg, metrics, transfer=transfer, played_by_leg=played_by_leg)
