"""The SIP+RTP leg: INVITE to answered call, re-INVITE, REFER, outbound dials.

:class:`SipCalls` receives the events of every listening transport's sans-IO core
(:mod:`bridge.sip.core`) and turns them into calls: admission (the SIP policy, then
the rules both legs share in :class:`~bridge.calls.registry.CallRegistry`), the
called number's route, the SDP answer (RFC 3264), an RTP port and stream, the agent,
the 200. A failure inside one call's setup answers that INVITE 500 and ends nothing
else (RFC 3261 section 21.5.1).
"""

from __future__ import annotations

import asyncio
import logging

from sipmessage import URI, Address

from ..agents import build_agent
from ..config import Settings
from ..media import sdp
from ..media.srtp import SrtpContext, new_crypto
from ..media.stream import PortAllocator, RtpStream
from ..observability.metrics import Metrics
from ..records.calls import header, number_of
from ..routing import Router
from ..sip import events as ev
from ..sip.addressing import WILDCARDS
from ..sip.core import SipUsageError
from ..sip.policy import AdmissionPolicy
from .dialing import report_unanswered
from .host import CallHost
from .registry import CallRegistry
from .sip_leg import Listener, SipCallLeg

log = logging.getLogger("bridge.calls")


class SipCalls:
    """The SIP leg's calls on every listener: see the module docstring.

    Args:
        host: the server (ends calls, runs tasks, holds the records).
        settings, engines, metrics: the server's.
        registry: every live call of both legs.
        router: called number -> agent profile.
        policy: the SIP admission rules (allowlist, rate, accounts, digest).
        ports: the RTP port pool; ``rtp_bind_host``: the address RTP sockets bind.
    """

    def __init__(
        self,
        host: CallHost,
        settings: Settings,
        engines,
        metrics: Metrics,
        registry: CallRegistry,
        router: Router,
        policy: AdmissionPolicy,
        ports: PortAllocator,
        rtp_bind_host: str,
    ) -> None:
        self.host = host
        self.settings = settings
        self.engines = engines
        self.metrics = metrics
        self.registry = registry
        self.router = router
        self.policy = policy
        self.ports = ports
        self.rtp_bind_host = rtp_bind_host
        self._pending_dials: dict[str, tuple[SipCallLeg, object]] = {}
        self._setup_errors_logged: set[str] = set()
        #: Why outbound calls failed before an answer: Call-ID -> "rejected 486", "timeout 408"...
        self.dial_failures: dict[str, str] = {}

    @property
    def dialing(self) -> int:
        """Outbound calls sent and not yet answered or failed."""
        return len(self._pending_dials)

    def _leg(self, call_id: str, listener: Listener, media_host: str, caller: str, meta: dict) -> SipCallLeg:
        return SipCallLeg(self.host, self.ports, self.metrics, call_id, listener, media_host, caller, meta)

    # ------------------------------------------------------------- events

    def on_event(self, listener: Listener, event: ev.Event) -> None:
        """One event from ``listener``'s core."""
        if isinstance(event, ev.IncomingCall):
            self._on_incoming(listener, event)
        elif isinstance(event, ev.CallConfirmed):
            log.info("call %s: confirmed (ACK)", event.call_id)
        elif isinstance(event, ev.SessionUpdate):
            self._on_session_update(listener, event)
        elif isinstance(event, ev.TransferProgress):
            self._on_transfer_progress(event)
        elif isinstance(event, ev.CallAnswered):
            self._on_dial_answered(event)
        elif isinstance(event, ev.CallProgress):
            log.info("call %s: %d", event.call_id, event.status)
        elif isinstance(event, ev.CallEnded):
            pending = self._pending_dials.pop(event.call_id, None)
            if pending is not None:
                self._release_socket(pending[1])
                leg = pending[0]
                report_unanswered(
                    self.host.records,
                    self.metrics,
                    self.settings.outbound.caller_id,
                    number_of(leg.meta.get("to")),
                    leg.listener.name,
                    leg.dial,
                    event.call_id,
                    event.reason,
                    event.status,
                )
                self.dial_failures[event.call_id] = f"{event.reason} {event.status}" if event.status else event.reason
                while len(self.dial_failures) > 1000:  # bounded: the oldest go first
                    del self.dial_failures[next(iter(self.dial_failures))]
                log.info("call %s: outbound call failed (%s %s)", event.call_id, event.reason, event.status or "")
            log.info(
                "call %s: ended by SIP (%s%s)", event.call_id, event.reason, f" {event.status}" if event.status else ""
            )
            self.host.end_call(event.call_id, event.reason)

    @staticmethod
    def caller_of(event: ev.IncomingCall) -> str:
        """The caller's identity for per-caller caps: P-Asserted-Identity's user, else From's."""
        pai = header(event.headers, "P-Asserted-Identity")
        candidates = []
        if pai:
            try:
                candidates.append(Address.parse(pai).uri)
            except ValueError:
                pass
        try:
            candidates.append(URI.parse(event.from_uri))
        except ValueError:
            pass
        for uri in candidates:
            if uri.user or uri.host:
                return uri.user or uri.host
        return event.source[0]

    def _reject(self, listener: Listener, call_id: str, status: int, reason: str, headers=None) -> None:
        log.info("call %s: rejected %d (%s)", call_id, status, reason)
        listener.core.reject(call_id, status, listener.io.now(), extra_headers=headers)
        self.metrics.calls.labels(f"rejected_{reason}").inc()

    def _admission(self, listener: Listener, event: ev.IncomingCall, caller: str, now: float) -> bool:
        """Whether the INVITE may become a call; if not, it has been answered."""
        shared = self.registry.refusal(event.call_id, caller)
        decision = self.policy.check(event.source, event.headers, event.authorization, now, event.request_uri, shared)
        if decision is not None:
            self._reject(listener, event.call_id, decision.status, decision.reason, decision.headers)
            return False
        return True

    def _on_incoming(self, listener: Listener, event: ev.IncomingCall) -> None:
        now = listener.io.now()
        caller = self.caller_of(event)
        log.info(
            "call %s: INVITE over %s from %s:%s caller=%s %s -> %s %s",
            event.call_id,
            listener.name,
            event.source[0],
            event.source[1],
            caller,
            event.from_uri,
            event.to_uri,
            " ".join(f"{k}={v}" for k, v in event.headers.items()),
        )
        if not self._admission(listener, event, caller, now):
            return
        called = number_of(event.request_uri) or number_of(event.to_uri)
        profile = self.router.route(called)
        if profile is None:
            self._reject(listener, event.call_id, self.settings.routes.reject_status, "no_route")
            return
        try:
            params = sdp.negotiate(event.offer, self.settings.media.srtp)
        except sdp.SdpError as exc:
            warning = exc.warning_header()
            self._reject(listener, event.call_id, exc.status, f"sdp: {exc}", [warning] if warning else None)
            return
        try:
            sock = self.ports.bind(self.rtp_bind_host)
        except OSError:
            self._reject(
                listener, event.call_id, 503, "no_rtp_port", [("Retry-After", str(self.settings.access.retry_after))]
            )
            return
        leg = self._leg(
            event.call_id,
            listener,
            listener.advertiser.fallback(),
            caller,
            {"from": event.from_uri, "to": event.to_uri, **event.headers},
        )
        try:
            leg.media_host = self._media_host(listener, params, event.source)
            self._setup_media(leg, sock, params, profile=profile)
            answer = leg.answer_sdp(params)
        except Exception as exc:  # noqa: BLE001 - one call's failed setup must not leak or stop the server
            self._abort_setup(listener, leg, sock, exc)
            return
        self.registry.open(
            leg,
            caller=caller,
            called=called,
            route=profile.name,
            call_sid=header(event.headers, "X-Twilio-CallSid"),
            account_sid=header(event.headers, "X-Twilio-AccountSid"),
            codec=params.codec,
            transport=listener.name,
            srtp=params.secure,
        )
        delay = self.settings.sip.answer_delay
        if delay > 0:
            # Ringing says something only when the answer is not immediate: a 180 sent just
            # before the 200 tells the caller nothing, and a proxy may forward it after the 200.
            if self.settings.sip.send_ringing:
                listener.core.ringing(event.call_id, now)
            asyncio.get_running_loop().call_later(delay, self._answer, leg, answer)
        else:
            self._answer(leg, answer)

    def _media_host(self, listener: Listener, params: sdp.MediaParams, source: tuple[str, int]) -> str:
        """The address for our SDP ``c=``: the one the peer's media address (else its
        signalling address, e.g. on hold) reaches us on.

        Raises:
            OSError: no route to the peer (wildcard bind without ``public_host``).
        """
        host = params.remote_addr[0]
        return listener.advertiser.for_peer(source[0] if host in WILDCARDS else host)

    def _abort_setup(self, listener: Listener, leg: SipCallLeg, sock, exc: Exception) -> None:
        """A call failed after its RTP port was bound: release the port and socket,
        answer the INVITE 500 (RFC 3261 21.5.1), log once per reason, count it."""
        reason = f"{exc.__class__.__name__}: {exc}"
        if reason not in self._setup_errors_logged and len(self._setup_errors_logged) < 100:
            self._setup_errors_logged.add(reason)
            log.warning("call %s: setup failed, port %d released: %s", leg.call_id, sock.getsockname()[1], reason)
        else:
            log.info("call %s: setup failed: %s", leg.call_id, reason)
        self._release_socket(sock)
        leg.setup_failed()
        try:
            self._reject(listener, leg.call_id, 500, "setup_error")
        except SipUsageError:
            pass

    def _release_socket(self, sock) -> None:
        """Close an RTP socket that never got a stream, and give its port back."""
        port = sock.getsockname()[1]
        sock.close()
        self.ports.release(port)

    def _setup_media(self, leg: SipCallLeg, sock, params: sdp.MediaParams, local_crypto=None, profile=None) -> None:
        """RTP stream and agent for a negotiated call. ``local_crypto``: our SDES key when we
        sent it in our offer (outbound); else a new one for our answer."""
        media = self.settings.media
        leg.params = params
        leg.local_crypto = local_crypto or sdp.answer_crypto(params)
        srtp = SrtpContext(leg.local_crypto, params.remote_crypto) if params.secure else None
        leg.stream = RtpStream(
            sock,
            params,
            leg,
            leg.on_audio,
            leg.on_dtmf,
            leg.on_rtp_timeout,
            on_source_error=leg.on_source_error,
            rtp_timeout=media.rtp_timeout,
            latch=media.latch,
            send_silence=media.send_silence,
            srtp=srtp,
        )
        leg.stream.on_hold = params.hold
        leg.profile = profile or self.router.default
        if leg.dial is not None:
            from .dialing import agent_for_dial

            leg.conversation = agent_for_dial(self.settings, self.engines, leg, self.metrics, leg.profile)
        else:
            leg.conversation = build_agent(self.settings, self.engines, leg, self.metrics, leg.profile)

    def _answer(self, leg: SipCallLeg, answer: bytes) -> None:
        core = leg.listener.core
        if leg.ended or not core.has_call(leg.call_id):
            return  # cancelled while ringing
        core.answer(leg.call_id, answer, leg.now())
        leg.listener.io.flush()
        self.metrics.calls.labels("answered").inc()
        self.registry.answered(leg)
        p = leg.params
        log.info(
            "call %s: answered %s/8000 pt=%d dtmf_pt=%s %s rtp %s:%d <-> %s:%d",
            leg.call_id,
            p.codec,
            p.payload_type,
            p.dtmf_payload_type,
            "SRTP" if p.secure else "RTP",
            leg.media_host,
            leg.stream.local_port,
            *p.remote_addr,
        )
        self.host.spawn(self._start_media(leg))

    async def _start_media(self, leg: SipCallLeg) -> None:
        try:
            await leg.stream.start()
            leg.conversation.start()
        except Exception:  # noqa: BLE001 - one call's failure ends that call only
            log.exception("call %s: media start failed", leg.call_id)
            leg.hangup("media_error")

    def _on_session_update(self, listener: Listener, event: ev.SessionUpdate) -> None:
        leg = self.registry.live.get(event.call_id)
        now = listener.io.now()
        if not isinstance(leg, SipCallLeg) or leg.params is None:
            listener.core.reject_update(event.call_id, 500, now)
            return
        if not event.offer:
            # Offerless re-INVITE (RFC 3261 section 14.2): our answer is an offer of the same media.
            listener.core.answer_update(event.call_id, leg.answer_sdp(leg.params), now)
            return
        try:
            params = sdp.negotiate(event.offer, self.settings.media.srtp)
        except sdp.SdpError as exc:
            log.info("call %s: %s offer refused %d: %s", event.call_id, event.method, exc.status, exc)
            listener.core.reject_update(event.call_id, 488, now)
            return
        listener.core.answer_update(event.call_id, leg.reoffer(params, event.method), now)

    def _on_transfer_progress(self, event: ev.TransferProgress) -> None:
        leg = self.registry.live.get(event.call_id)
        log.info("call %s: transfer progress %d%s", event.call_id, event.status, " (final)" if event.final else "")
        if not isinstance(leg, SipCallLeg) or not event.final:
            return
        self.host.records.transfer(
            event.call_id, leg.transfer_target, "completed" if 200 <= event.status < 300 else f"failed {event.status}"
        )
        if 200 <= event.status < 300:
            self.metrics.calls.labels("transferred").inc()
            # The transferor hangs up once the target answered (RFC 5589 section 6.1;
            # Twilio's trunk bridges the caller to the REFER target itself).
            leg.hangup("transferred")
        else:
            leg.conversation.transfer_failed()

    # ------------------------------------------------------------- outbound

    def dial(
        self, listener: Listener, number: str, target: str, dest: tuple[str, int], media_host: str, options=None
    ) -> str:
        """Send an INVITE for ``target`` to ``dest`` through ``outbound.*``'s identity and
        credentials; the call becomes live when answered. Returns the Call-ID.

        Raises:
            OSError: no RTP port free.
            ValueError: the offer or the INVITE cannot be built.
        """
        out = self.settings.outbound
        sock = self.ports.bind(self.rtp_bind_host)
        port = sock.getsockname()[1]
        crypto = new_crypto(1) if self.settings.media.srtp == "required" else None
        try:
            offer = sdp.build_offer(media_host, port, crypto=crypto)
            credentials = (out.username, out.password) if out.username else None
            call_id = listener.core.invite(
                target,
                dest,
                offer,
                listener.io.now(),
                from_user=out.caller_id,
                credentials=credentials,
                extra_headers=[("Supported", "timer")],
            )
        except ValueError:
            self._release_socket(sock)
            raise
        leg = self._leg(call_id, listener, media_host, number, {"to": target})
        leg.local_crypto = crypto
        leg.dial = options
        self._pending_dials[call_id] = (leg, sock)
        listener.io.flush()
        if options is not None and options.ring_timeout_s > 0:
            asyncio.get_running_loop().call_later(options.ring_timeout_s, self._ring_timeout, listener, call_id)
        return call_id

    def _ring_timeout(self, listener: Listener, call_id: str) -> None:
        """Nobody answered in time: CANCEL the INVITE (RFC 3261 section 9.1)."""
        if call_id in self._pending_dials and listener.core.has_call(call_id):
            log.info("call %s: no answer within the ring timeout: cancelling", call_id)
            listener.core.hangup(call_id, listener.io.now())
            listener.io.flush()

    def _on_dial_answered(self, event: ev.CallAnswered) -> None:
        pending = self._pending_dials.pop(event.call_id, None)
        if pending is None:
            return
        leg, sock = pending
        try:
            params = sdp.parse_answer(event.answer, self.settings.media.srtp)
        except sdp.SdpError as exc:
            log.warning("call %s: unusable SDP answer: %s", event.call_id, exc)
            self._release_socket(sock)
            leg.listener.core.hangup(event.call_id, leg.now())
            return
        self._setup_media(leg, sock, params, leg.local_crypto)
        self.metrics.calls.labels("outbound_answered").inc()
        self.registry.open(
            leg,
            caller=self.settings.outbound.caller_id,
            called=number_of(leg.meta.get("to")),
            codec=params.codec,
            transport=leg.listener.name,
            srtp=params.secure,
            campaign=leg.dial.campaign if leg.dial else None,
        )
        self.registry.answered(leg)
        log.info(
            "call %s: outbound call answered, %s rtp %d <-> %s:%d",
            event.call_id,
            params.codec,
            leg.stream.local_port,
            *params.remote_addr,
        )
        self.host.spawn(self._start_media(leg))
