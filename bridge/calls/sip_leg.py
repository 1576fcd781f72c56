"""The SIP+RTP call leg: one call's signalling (its listener's sans-IO core) and media (an
:class:`~bridge.media.stream.RtpStream`) as the conversation and the call layer see it."""

from __future__ import annotations

import logging
import time

from ..media import sdp
from ..media.srtp import SrtpContext
from ..media.stream import PortAllocator, RtpStream
from ..observability.metrics import Metrics
from ..sip.addressing import Advertiser
from ..sip.core import SipCore, SipUsageError
from .host import CallHost

log = logging.getLogger("bridge.calls")


class Listener:
    """One SIP transport: its sans-IO core and the asyncio transport driving it.

    Attributes:
        core: the :class:`~bridge.sip.core.SipCore`.
        io: the asyncio transport (:class:`~bridge.sip.transport.SipUdpTransport` or
            :class:`~bridge.sip.transport.SipStreamTransport`).
        advertiser: which of our addresses a peer is told (:mod:`bridge.sip.addressing`).
    """

    def __init__(self, core: SipCore, io, advertiser: Advertiser) -> None:
        self.core = core
        self.io = io
        self.advertiser = advertiser

    @property
    def name(self) -> str:
        """``UDP``, ``TCP`` or ``TLS``."""
        return self.core.transport


class SipCallLeg:
    """A SIP+RTP call as the conversation sees it (:class:`bridge.conversation.engine.CallLeg`).

    Attributes:
        call_id: the SIP Call-ID.
        listener: the transport the call's signalling uses.
        caller: the caller identity used for per-caller caps (user part).
        meta: call metadata for the logs (numbers, ``X-Twilio-*``).
        stream: the call's :class:`~bridge.media.stream.RtpStream`.
        conversation: the conversation (or echo agent) on the call.
    """

    kind = "sip"

    def __init__(
        self,
        host: CallHost,
        ports: PortAllocator,
        metrics: Metrics,
        call_id: str,
        listener: Listener,
        media_host: str,
        caller: str = "",
        meta: dict | None = None,
    ) -> None:
        self.host = host
        self.ports = ports
        self.metrics = metrics
        self.call_id = call_id
        self.listener = listener
        self.caller = caller
        self.meta = meta or {}
        self.stream: RtpStream | None = None
        self.conversation = None
        #: The agent profile that answers (:class:`bridge.routing.Profile`).
        self.profile = None
        self.params: sdp.MediaParams | None = None
        self.local_crypto = None
        #: The address in our SDP ``c=`` (the route's source towards the peer's media address).
        self.media_host = media_host
        self.sdp_version = 0
        self.session_id = int(time.time())
        self.ended = False
        self.started = time.monotonic()
        #: The call's recording (:class:`bridge.records.recording.CallRecording`), when on.
        self.recording = None
        #: Where the last REFER sent the caller ("" = never transferred).
        self.transfer_target = ""
        #: An outbound call's :class:`bridge.calls.dialing.DialOptions` (``None``: inbound).
        self.dial = None

    def now(self) -> float:
        """The listener's clock, monotonic seconds (what the SIP core is fed)."""
        return self.listener.io.now()

    def hangup(self, reason: str) -> None:
        """Send BYE (or a final response before the answer) and tear the call down."""
        if self.ended:
            return
        log.info("call %s: hanging up (%s)", self.call_id, reason)
        self.host.end_call(self.call_id, reason)  # first, so that the reason recorded is ours
        core = self.listener.core
        if core.has_call(self.call_id):
            try:
                core.hangup(self.call_id, self.now())
            except SipUsageError:
                pass
            self.listener.io.flush()

    def clear_playout(self) -> None:
        """Nothing is queued below the conversation on an RTP leg: the pacer pulls per packet."""

    def transfer(self, target: str) -> None:
        """Blind transfer with REFER (RFC 3515); progress comes back as TransferProgress."""
        log.info("call %s: REFER to %s", self.call_id, target)
        self.transfer_target = target
        self.host.records.transfer(self.call_id, target, "requested")
        try:
            self.listener.core.refer(self.call_id, target, self.now())
        except (SipUsageError, ValueError) as exc:
            log.warning("call %s: cannot transfer: %s", self.call_id, exc)
            if self.conversation is not None:
                self.conversation.transfer_failed()
            return
        self.listener.io.flush()

    def answer_sdp(self, params: sdp.MediaParams) -> bytes:
        """Our SDP answer for ``params``, bumping the o= version each time (RFC 3264 section 8)."""
        self.sdp_version += 1
        return sdp.build_answer(
            params,
            self.media_host,
            self.stream.local_port,
            self.session_id,
            self.local_crypto,
            self.session_id + self.sdp_version,
        )

    def reoffer(self, params: sdp.MediaParams, method: str) -> bytes:
        """A re-INVITE or UPDATE (``method``) offered ``params`` (RFC 3264 section 8): the
        codec, the SRTP keys, the profile or the hold may change, and the answer follows the
        offer (never a codec it lacks). The stream and the conversation follow; returns our
        SDP answer."""
        old = self.params
        assert old is not None and self.stream is not None
        if (params.codec, params.payload_type) != (old.codec, old.payload_type):
            log.info(
                "call %s: codec changed %s/%d -> %s/%d",
                self.call_id,
                old.codec,
                old.payload_type,
                params.codec,
                params.payload_type,
            )
        local_crypto = sdp.answer_crypto(params, self.local_crypto)
        srtp = self.stream.srtp
        if not params.secure:
            srtp = None
        elif srtp is None or params.remote_crypto != old.remote_crypto or local_crypto != self.local_crypto:
            srtp = SrtpContext(local_crypto, params.remote_crypto)  # RFC 4568 7.1.4: new keys, new context
            log.info("call %s: SRTP keys changed by %s", self.call_id, method)
        if params.hold != old.hold:
            log.info("call %s: %s", self.call_id, "put on hold" if params.hold else "taken off hold")
        self.local_crypto = local_crypto
        self.stream.update_remote(params, srtp)
        self.params = params
        if self.conversation is not None:
            self.conversation.set_hold(params.hold)
        return self.answer_sdp(params)

    def mark_ended(self) -> None:
        """The call layer ended this call (it left the live set); its teardown follows."""
        self.ended = True

    def release_agent(self) -> None:
        """The teardown is done: let go of the agent (it keeps its leg for inspection), so
        no reference cycle holds the call's memory until the next cyclic GC pass."""
        self.conversation = None

    def setup_failed(self) -> None:
        """The call's setup failed after its RTP socket was bound (the caller released it):
        no stream, no agent."""
        self.stream = None
        self.conversation = None

    async def close_media(self) -> None:
        """Close the RTP stream, give its port back, count what it dropped."""
        stream, self.stream = self.stream, None
        if stream is None:
            return
        await stream.close()
        self.ports.release(stream.local_port)
        log.info(
            "call %s: rtp port %s closed: %d packets received, %d sent (%d with agent audio)",
            self.call_id,
            stream.local_port,
            stream.receiver.valid_packets,
            stream.sent_packets,
            stream.sent_audio,
        )
        for name, count in stream.receiver.counters.items():
            if name not in ("audio", "dtmf", "stun_answered", "unsendable") and count:
                self.metrics.rtp_dropped.labels(name).inc(count)
        if stream.dropped_foreign:
            self.metrics.rtp_dropped.labels("foreign_source").inc(stream.dropped_foreign)

    # RtpStream callbacks
    def on_audio(self, frame, now: float) -> None:
        if self.conversation is not None:
            self.conversation.feed_audio(frame)
        if self.recording is not None:
            self.recording.caller(frame)

    def on_dtmf(self, event) -> None:
        if self.conversation is not None:
            self.conversation.feed_dtmf(event.digit)

    def on_rtp_timeout(self) -> None:
        self.hangup("rtp_timeout")

    def on_source_error(self) -> None:
        """The agent's frame source raised (logged by the stream): an agent failure."""
        self.hangup("agent_error")

    def pull_frame(self, now: float):
        """The agent's frame for this RTP send slot (``None``: silence); one recording slot."""
        frame = self.conversation.pull_frame(now) if self.conversation is not None else None
        if self.recording is not None:
            self.recording.send_slot(frame)
        return frame
