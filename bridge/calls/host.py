"""What a call leg and the server promise each other, as typed protocols.

A leg (:class:`bridge.calls.sip_leg.SipCallLeg`, :class:`bridge.mediastreams.leg.MediaStreamLeg`,
:class:`bridge.webrtc.leg.WebRtcCallLeg`) reaches the server only through a :class:`CallHost`: it ends its call, runs a task,
and reports to the call records. The registry (:class:`bridge.calls.registry.CallRegistry`)
sees a leg only as a :class:`Leg`.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Protocol

from ..records.calls import CallRecords


class CallHost(Protocol):
    """The server as a leg sees it."""

    #: The call records sink (transfers are recorded by the leg that makes them).
    records: CallRecords

    def end_call(self, call_id: str, reason: str) -> None:
        """The call is over (idempotent): tear it down, with ``reason`` as its end reason."""

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a task the server keeps and waits for on stop."""


class Leg(Protocol):
    """A call leg as the registry sees it.

    Attributes:
        kind: ``sip`` or ``mediastreams`` (the call record's ``leg``).
        call_id: the SIP Call-ID or Twilio Call SID.
        caller: the caller's identity for per-caller caps.
        conversation: the conversation (or echo agent) on the call, ``None`` once torn
            down. (``agent`` names an agent's settings, never the running conversation.)
        recording: the call's recording, when on.
        started: monotonic seconds when the call arrived.
        ended: set once the call ended.
    """

    kind: str
    call_id: str
    caller: str
    conversation: Any
    recording: Any
    started: float
    ended: bool

    def hangup(self, reason: str) -> None:
        """End the call from our side, in the leg's protocol (BYE; REST and close)."""

    def mark_ended(self) -> None:
        """The call layer ended this call; :attr:`ended` is true from now on."""

    def release_agent(self) -> None:
        """Let go of the agent once the teardown is done (:attr:`conversation` is ``None``)."""

    async def close_media(self) -> None:
        """Release what carries the call's media (RTP socket and port); called once, by
        the teardown, after the conversation is closed."""
