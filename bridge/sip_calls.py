"""A SIP call as the server holds it: the transport its signalling uses, its RTP
stream and its agent (``bridge serve`` glue, split out of :mod:`bridge.app`)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .media import sdp
from .media.stream import RtpStream
from .sip.addressing import Advertiser
from .sip.core import SipCore, SipUsageError

if TYPE_CHECKING:
    from .app import BridgeServer

log = logging.getLogger("bridge.app")


class Listener:
    """One SIP transport: its sans-IO core and the asyncio transport driving it."""

    def __init__(self, core: SipCore, transport, advertiser: Advertiser) -> None:
        self.core = core
        self.transport = transport
        self.advertiser = advertiser

    @property
    def name(self) -> str:
        return self.core.transport


class SipCallLeg:
    """A SIP+RTP call leg as the conversation sees it (:class:`bridge.conversation.engine.CallLeg`).

    Attributes:
        call_id: the SIP Call-ID.
        listener: the transport the call's signalling uses.
        caller: the caller identity used for per-caller caps (user part).
        meta: call metadata for the logs (numbers, ``X-Twilio-*``).
    """

    def __init__(self, server: "BridgeServer", call_id: str, listener: Listener, caller: str = "", meta: dict | None = None) -> None:
        self.server = server
        self.call_id = call_id
        self.listener = listener
        self.caller = caller
        self.meta = meta or {}
        self.stream: RtpStream | None = None
        self.agent = None
        #: The agent profile that answers (:class:`bridge.routing.Profile`).
        self.profile = None
        self.params: sdp.MediaParams | None = None
        self.local_crypto = None
        #: The address in our SDP ``c=`` (the route's source towards the peer's media address).
        self.media_host = server.public_host
        self.sdp_version = 0
        self.session_id = int(time.time())
        self.ended = False
        self.started = time.monotonic()
        #: The call's recording (:class:`bridge.records.recording.CallRecording`), when on.
        self.recording = None
        #: Where the last REFER sent the caller ("" = never transferred).
        self.transfer_target = ""

    @property
    def conversation(self):
        return self.agent

    def _now(self) -> float:
        return self.listener.transport.now()

    def hangup(self, reason: str) -> None:
        """Send BYE (or a final response before answer) and tear the call down."""
        if self.ended:
            return
        log.info("call %s: hanging up (%s)", self.call_id, reason)
        self.server.end_call(self.call_id, reason)  # first, so that the reason recorded is ours
        core = self.listener.core
        if core.has_call(self.call_id):
            try:
                core.hangup(self.call_id, self._now())
            except SipUsageError:
                pass
            self.listener.transport.flush()

    def clear_playout(self) -> None:
        """Nothing is queued below the conversation on an RTP leg: the pacer pulls per packet."""

    def transfer(self, target: str) -> None:
        """Blind transfer with REFER (RFC 3515); progress comes back as TransferProgress."""
        log.info("call %s: REFER to %s", self.call_id, target)
        self.transfer_target = target
        self.server.records.transfer(self.call_id, target, "requested")
        try:
            self.listener.core.refer(self.call_id, target, self._now())
        except (SipUsageError, ValueError) as exc:
            log.warning("call %s: cannot transfer: %s", self.call_id, exc)
            if self.agent is not None:
                self.agent.transfer_failed()
            return
        self.listener.transport.flush()

    def answer_sdp(self, params: sdp.MediaParams) -> bytes:
        """Our SDP answer for ``params``, bumping the o= version each time (RFC 3264 section 8)."""
        self.sdp_version += 1
        return sdp.build_answer(params, self.media_host, self.stream.local_port, self.session_id, self.local_crypto, self.session_id + self.sdp_version)

    # RtpStream callbacks
    def on_audio(self, frame, now: float) -> None:
        if self.agent is not None:
            self.agent.feed_audio(frame)
        if self.recording is not None:
            self.recording.caller(frame)

    def on_dtmf(self, event) -> None:
        if self.agent is not None:
            self.agent.feed_dtmf(event.digit)

    def on_rtp_timeout(self) -> None:
        self.hangup("rtp_timeout")

    def pull_frame(self, now: float):
        """The agent's frame for this RTP send slot (``None``: silence); one recording slot."""
        frame = self.agent.pull_frame(now) if self.agent is not None else None
        if self.recording is not None:
            if frame is not None:
                self.recording.agent(frame)
            self.recording.tick()
        return frame
