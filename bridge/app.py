"""``bridge serve`` / ``bridge dial``: SIP + RTP + conversation, wired together.

One :class:`BridgeServer` per process: a sans-IO SIP core per listening
transport (UDP, TCP, TLS), a pool of RTP ports, the models loaded once, an
admission policy, and per call a :class:`SipCallLeg` holding its RTP stream
and its agent (:class:`bridge.conversation.engine.Conversation`, or the echo
agent). A failure inside one call is logged and ends that call only.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import signal
import ssl
import time

from sipmessage import URI, Address

from . import memory
from .agents import build_agent
from .config import DEFAULT_CONFIG, ConfigError, Settings, parse_hostport, parse_port_range
from .media import sdp
from .media.srtp import SrtpContext, new_crypto
from .media.stream import PortAllocator, RtpStream
from .observability.metrics import Metrics
from .sip import events as ev
from .sip.addressing import WILDCARDS, Advertiser
from .sip.core import SipCore, SipUsageError, Timers
from .sip.policy import AdmissionPolicy
from .sip.transport import SipStreamTransport, SipUdpTransport
from .sip_calls import Listener, SipCallLeg
from .privacy import Redactor
from .records.calls import CallRecords, header, number_of
from .routing import Router
from .records.store import RecordStore, default_node
from .stream_calls import StreamCalls

log = logging.getLogger("bridge.app")

#: Finished agents a server keeps for inspection (BridgeServer.finished).
FINISHED_KEPT = 4


def _server_ssl(settings: Settings) -> ssl.SSLContext:
    """The TLS server context.

    Raises:
        ConfigError: the certificate or key cannot be loaded.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # Twilio: TLS 1.2 or later
    try:
        ctx.load_cert_chain(settings.sip.tls_cert, settings.sip.tls_key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError("sip.tls_cert", f"cannot load the certificate/key pair ({exc.__class__.__name__}: {exc})") from None
    return ctx


def _client_ssl(settings: Settings) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=settings.sip.tls_ca or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class BridgeServer:
    """The server. ``engines`` are loaded by the caller (they take seconds); ``None``
    is fine for ``agent.kind: echo``."""

    def __init__(self, settings: Settings, engines, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.engines = engines
        self.metrics = metrics or Metrics()
        storage = settings.storage
        node = storage.node or default_node(settings.sip.listen)
        self.store = RecordStore(storage.url, storage.spool_dir, node, self.metrics) if storage.url else None
        self.router = Router(settings, engines)
        self.records = CallRecords(self.store, node, Redactor(settings.privacy.redact) if settings.privacy.redact else None, settings.recording)
        host, _ = parse_hostport(settings.sip.listen, 5060)
        #: The address used where no peer is known yet: ``sip.public_host``, the listen
        #: address, or the first non-loopback one. Calls get theirs per peer from their
        #: listener's :class:`Advertiser` (:mod:`bridge.sip.addressing`).
        self.public_host = Advertiser(settings.sip.public_host, host).fallback()
        self.rtp_bind_host = host
        self.listeners: list[Listener] = []
        for kind, address, default_port in (("UDP", settings.sip.listen, 5060), ("TCP", settings.sip.tcp_listen, 5060), ("TLS", settings.sip.tls_listen, 5061)):
            if not address:
                continue
            bind = parse_hostport(address, default_port)
            advertiser = Advertiser(settings.sip.public_host, bind[0])
            core = SipCore(
                bind, public_host=advertiser.fallback(), user_agent=settings.sip.user_agent, timers=Timers(t1=settings.sip.t1),
                max_message_size=settings.sip.max_message_size, transport=kind,
                session_expires=settings.sip.session_expires, min_se=settings.sip.min_se,
                host_for=(lambda peer, adv=advertiser: adv.for_peer(peer[0])) if advertiser.per_peer else None,
            )
            listener = Listener(core, None, advertiser)
            handler = lambda event, listener=listener: self._on_event(listener, event)  # noqa: E731
            if kind == "UDP":
                listener.transport = SipUdpTransport(core, handler)
            else:
                listener.transport = SipStreamTransport(
                    core, handler, server_ssl=_server_ssl(settings) if kind == "TLS" else None, client_ssl=_client_ssl(settings) if kind == "TLS" else None
                )
            self.metrics.watch_sip(core.counters, kind.lower())
            self.listeners.append(listener)
        self.ports = PortAllocator(*parse_port_range(settings.media.rtp_ports))
        self.policy = AdmissionPolicy(settings.access, base=DEFAULT_CONFIG.parent.parent)
        self.calls: dict[str, SipCallLeg] = {}
        #: The last few calls' agents after they ended (their audio released), for
        #: inspection by tests and ``bridge dial``; few, so that what a finished call
        #: keeps (history, transcript, timings) is not held for 20 calls.
        self.finished: collections.deque = collections.deque(maxlen=FINISHED_KEPT)
        #: Why the last calls ended: (call_id, reason), bounded, for inspection.
        self.end_reasons: collections.deque = collections.deque(maxlen=100)
        self._tasks: set[asyncio.Task] = set()
        self._background: list[asyncio.Task] = []
        self._pending_dials: dict[str, tuple[SipCallLeg, object]] = {}
        self._setup_errors_logged: set[str] = set()
        #: Why outbound calls failed before an answer: Call-ID -> "rejected 486", "timeout 408"...
        self.dial_failures: dict[str, str] = {}
        self.streams = StreamCalls(self)  # Media Streams legs by Call SID
        self.twilio_control = None
        self._http = None
        self._http_task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = asyncio.Event()
        self._all_ended = asyncio.Event()
        self._all_ended.set()
        self.metrics.watch_resource("rtp_ports", lambda: self.ports.in_use)
        self.metrics.watch_resource("calls", lambda: len(self.calls) + len(self.streams))
        self.metrics.watch_resource("sip_dialogs", lambda: sum(listener.core.active_calls for listener in self.listeners))
        self.metrics.watch_resource("sip_transactions", lambda: sum(listener.core.transaction_count for listener in self.listeners))
        self.metrics.watch_resource("tasks", self._task_count)

    def _task_count(self) -> int:
        """asyncio tasks alive on the server's loop (read from the metrics thread)."""
        loop = self._loop
        if loop is None:
            return 0
        for _ in range(3):
            try:
                return len(asyncio.all_tasks(loop))
            except RuntimeError:  # the set changed while the other thread read it
                continue
        return -1

    @property
    def core(self) -> SipCore:
        """The first listener's core (UDP unless UDP is off)."""
        return self.listeners[0].core

    @property
    def transport(self):
        return self.listeners[0].transport

    def listener(self, kind: str) -> Listener:
        """The listener for ``UDP``, ``TCP`` or ``TLS``.

        Raises:
            KeyError: that transport is not configured.
        """
        for listener in self.listeners:
            if listener.name == kind.upper():
                return listener
        raise KeyError(kind)

    async def start(self) -> list[tuple[str, int]]:
        """Bind every configured transport; returns their bound addresses."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.router.load)
        if self.store is not None:
            await asyncio.to_thread(self.store.open)
            if self.settings.records.retention_days or self.settings.recording.retention_days:
                self._spawn_forever(self._retention())
        bound = []
        for listener in self.listeners:
            addr = await listener.transport.start()
            described, loopback_only = listener.advertiser.describe()
            log.info("sip: listening on %s %s:%s, advertising %s", listener.name.lower(), addr[0], addr[1], described)
            if loopback_only:
                log.warning("sip: only loopback addresses exist: peers on other machines cannot reach this server (set sip.public_host)")
            bound.append(addr)
        if self.settings.mediastreams.http_listen:
            await self._start_http()
        memory.freeze()  # models and libraries are loaded: the GC pass after each call skips them
        return bound

    # ------------------------------------------------------- Media Streams mode

    async def _start_http(self) -> None:
        import uvicorn

        from .mediastreams.http import build_app

        ms = self.settings.mediastreams
        if ms.account_sid and ms.auth_token:
            from .mediastreams.leg import TwilioCallControl

            self.twilio_control = TwilioCallControl(ms.account_sid, ms.auth_token, ms.api_base_url)
        host, port = parse_hostport(ms.http_listen, 8080)

        class _Server(uvicorn.Server):
            def capture_signals(self):  # the bridge owns SIGTERM (drain) and SIGINT
                import contextlib

                return contextlib.nullcontext()

        config = uvicorn.Config(build_app(self), host=host, port=port, log_level="warning", lifespan="off", ws="websockets-sansio")
        self._http = _Server(config)
        self._http_task = asyncio.create_task(self._http.serve())
        while not self._http.started:
            if self._http_task.done():
                self._http_task.result()  # raises the bind error
            await asyncio.sleep(0.02)
        log.info("media streams: listening on http %s:%d (public %s)", host, port, ms.public_url or "from X-Forwarded-*")

    def start_stream(self, leg):
        """A Media Streams session sent ``start``; see :class:`bridge.stream_calls.StreamCalls`."""
        return self.streams.start(leg)

    def end_stream(self, leg, reason: str) -> None:
        """A Media Streams session ended (idempotent per leg)."""
        self.streams.end(leg, reason)

    # ------------------------------------------------ calls of both legs

    def active_calls(self) -> int:
        """Calls in progress on both legs (SIP and Media Streams)."""
        return len(self.calls) + len(self.streams)

    def caller_calls(self, caller: str) -> int:
        """Calls in progress from ``caller`` on both legs (per-caller caps)."""
        return sum(1 for leg in list(self.calls.values()) + list(self.streams.values()) if leg.caller == caller)

    def call_started(self) -> None:
        """Book-keeping for a new call on either leg."""
        self._all_ended.clear()
        self.metrics.active_calls.inc()

    def call_ended(self, call_id: str, reason: str) -> None:
        """Book-keeping for a call that ended on either leg."""
        self.end_reasons.append((call_id, reason))
        self.metrics.active_calls.dec()
        if not self.calls and not self.streams:
            self._all_ended.set()

    def spawn(self, coro) -> None:
        """Run ``coro`` as a task the server keeps (and awaits on stop)."""
        self._spawn(coro)

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------- SIP events

    def _on_event(self, listener: Listener, event: ev.Event) -> None:
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
                self.dial_failures[event.call_id] = f"{event.reason} {event.status}" if event.status else event.reason
                while len(self.dial_failures) > 1000:  # bounded: the oldest go first
                    del self.dial_failures[next(iter(self.dial_failures))]
                log.info("call %s: outbound call failed (%s %s)", event.call_id, event.reason, event.status or "")
            log.info("call %s: ended by SIP (%s%s)", event.call_id, event.reason, f" {event.status}" if event.status else "")
            self.end_call(event.call_id, event.reason)

    @staticmethod
    def _caller_of(event: ev.IncomingCall) -> str:
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
        listener.core.reject(call_id, status, listener.transport.now(), extra_headers=headers)
        self.metrics.calls.labels(f"rejected_{reason}").inc()

    def _on_incoming(self, listener: Listener, event: ev.IncomingCall) -> None:
        now = listener.transport.now()
        caller = self._caller_of(event)
        log.info(
            "call %s: INVITE over %s from %s:%s caller=%s %s -> %s %s",
            event.call_id, listener.name, event.source[0], event.source[1], caller, event.from_uri, event.to_uri,
            " ".join(f"{k}={v}" for k, v in event.headers.items()),
        )
        caller_calls = self.caller_calls(caller)
        decision = self.policy.check(event.source, event.headers, event.authorization, now, self.active_calls(), caller_calls, event.request_uri)
        if decision is not None:
            self._reject(listener, event.call_id, decision.status, decision.reason, decision.headers)
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
            self._reject(listener, event.call_id, 503, "no_rtp_port", [("Retry-After", str(self.settings.access.retry_after))])
            return
        leg = SipCallLeg(self, event.call_id, listener, caller, {"from": event.from_uri, "to": event.to_uri, **event.headers})
        try:
            leg.media_host = self._media_host(listener, params, event.source)
            self._setup_media(leg, sock, params, profile=profile)
            answer = leg.answer_sdp(params)
        except Exception as exc:  # noqa: BLE001 - one call's failed setup must not leak or stop the server
            self._abort_setup(listener, leg, sock, exc)
            return
        self.calls[event.call_id] = leg
        self.call_started()
        self.records.started(
            event.call_id, "sip", caller=caller, called=called, route=profile.name,
            call_sid=header(event.headers, "X-Twilio-CallSid"), account_sid=header(event.headers, "X-Twilio-AccountSid"),
            codec=params.codec, transport=listener.name, srtp=params.secure,
        )
        self.records.attach(event.call_id, leg.agent)
        if self.settings.sip.send_ringing:
            listener.core.ringing(event.call_id, now)
        delay = self.settings.sip.answer_delay
        if delay > 0:
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
        leg.stream = None
        leg.agent = None
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
        leg.stream = RtpStream(sock, params, leg, leg.on_audio, leg.on_dtmf, leg.on_rtp_timeout,
                               rtp_timeout=media.rtp_timeout, latch=media.latch, send_silence=media.send_silence, srtp=srtp)
        leg.stream.on_hold = params.hold
        leg.profile = profile or self.router.default
        leg.agent = build_agent(self.settings, self.engines, leg, self.metrics, leg.profile)

    def _answer(self, leg: SipCallLeg, answer: bytes) -> None:
        core = leg.listener.core
        if leg.ended or not core.has_call(leg.call_id):
            return  # cancelled while ringing
        core.answer(leg.call_id, answer, leg._now())
        leg.listener.transport.flush()
        self.metrics.calls.labels("answered").inc()
        self.records.answered(leg.call_id)
        self.records.start_recording(leg.call_id, leg)
        p = leg.params
        log.info("call %s: answered %s/8000 pt=%d dtmf_pt=%s %s rtp %s:%d <-> %s:%d", leg.call_id, p.codec, p.payload_type, p.dtmf_payload_type,
                 "SRTP" if p.secure else "RTP", leg.media_host, leg.stream.local_port, *p.remote_addr)
        self._spawn(self._start_media(leg))

    async def _start_media(self, leg: SipCallLeg) -> None:
        try:
            await leg.stream.start()
            leg.agent.start()
        except Exception:  # noqa: BLE001 - one call's failure ends that call only
            log.exception("call %s: media start failed", leg.call_id)
            leg.hangup("media_error")

    def _on_session_update(self, listener: Listener, event: ev.SessionUpdate) -> None:
        leg = self.calls.get(event.call_id)
        now = listener.transport.now()
        if leg is None or leg.params is None:
            listener.core.reject_update(event.call_id, 500, now)
            return
        if not event.offer:
            # Offerless re-INVITE (14.2): our answer is an offer of the same media.
            listener.core.answer_update(event.call_id, leg.answer_sdp(leg.params), now)
            return
        try:
            params = sdp.negotiate(event.offer, self.settings.media.srtp)
        except sdp.SdpError as exc:
            log.info("call %s: %s offer refused %d: %s", event.call_id, event.method, exc.status, exc)
            listener.core.reject_update(event.call_id, 488, now)
            return
        # RFC 3264 section 8: the new offer may change the codec, the SRTP keys or the
        # profile; the answer follows it (never a codec the offer lacks).
        if (params.codec, params.payload_type) != (leg.params.codec, leg.params.payload_type):
            log.info("call %s: codec changed %s/%d -> %s/%d", event.call_id, leg.params.codec, leg.params.payload_type, params.codec, params.payload_type)
        local_crypto = sdp.answer_crypto(params, leg.local_crypto)
        srtp = leg.stream.srtp
        if not params.secure:
            srtp = None
        elif srtp is None or params.remote_crypto != leg.params.remote_crypto or local_crypto != leg.local_crypto:
            srtp = SrtpContext(local_crypto, params.remote_crypto)  # RFC 4568 7.1.4: new keys, new context
            log.info("call %s: SRTP keys changed by %s", event.call_id, event.method)
        if params.hold != leg.params.hold:
            log.info("call %s: %s", event.call_id, "put on hold" if params.hold else "taken off hold")
        leg.local_crypto = local_crypto
        leg.stream.update_remote(params, srtp)
        leg.params = params
        leg.agent.set_hold(params.hold)
        listener.core.answer_update(event.call_id, leg.answer_sdp(params), now)

    def _on_transfer_progress(self, event: ev.TransferProgress) -> None:
        leg = self.calls.get(event.call_id)
        log.info("call %s: transfer progress %d%s", event.call_id, event.status, " (final)" if event.final else "")
        if leg is None or not event.final:
            return
        self.records.transfer(event.call_id, leg.transfer_target, "completed" if 200 <= event.status < 300 else f"failed {event.status}")
        if 200 <= event.status < 300:
            self.metrics.calls.labels("transferred").inc()
            leg.hangup("transferred")  # TWILIO.md: the transferor hangs up once the target answered
        else:
            leg.agent.transfer_failed()

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
            leg.listener.core.hangup(event.call_id, leg._now())
            return
        self._setup_media(leg, sock, params, leg.local_crypto)
        self.calls[event.call_id] = leg
        self.call_started()
        self.metrics.calls.labels("outbound_answered").inc()
        self.records.started(event.call_id, "sip", caller=self.settings.outbound.caller_id, called=number_of(leg.meta.get("to")),
                             codec=params.codec, transport=leg.listener.name, srtp=params.secure)
        self.records.answered(event.call_id)
        self.records.attach(event.call_id, leg.agent)
        self.records.start_recording(event.call_id, leg)
        log.info("call %s: outbound call answered, %s rtp %d <-> %s:%d", event.call_id, params.codec, leg.stream.local_port, *params.remote_addr)
        self._spawn(self._start_media(leg))

    async def wait_idle(self) -> None:
        """Return once no call is in progress or being dialed."""
        while self.calls or self._pending_dials:
            await asyncio.sleep(0.2)

    # -------------------------------------------------------------- lifecycle

    def end_call(self, call_id: str, reason: str) -> None:
        """Tear down a call's media and agent (idempotent)."""
        leg = self.calls.pop(call_id, None)
        if leg is None or leg.ended:
            return
        leg.ended = True
        self.call_ended(call_id, reason)
        self._spawn(self._teardown(leg, reason))

    async def _teardown(self, leg: SipCallLeg, reason: str) -> None:
        duration = time.monotonic() - leg.started
        try:
            if leg.agent is not None:
                await leg.agent.close()
                self.finished.append(leg.agent)
                for role, text in leg.agent.transcript():
                    log.debug("call %s transcript %s: %s", leg.call_id, role, text)
            self.records.ended(leg.call_id, reason, leg.agent)
            if leg.stream is not None:
                await leg.stream.close()
            await self.records.stop_recording(leg)
            if leg.stream is not None:
                self.ports.release(leg.stream.local_port)
                for name, count in leg.stream.receiver.counters.items():
                    if name not in ("audio", "dtmf", "stun_answered", "unsendable") and count:
                        self.metrics.rtp_dropped.labels(name).inc(count)
                if leg.stream.dropped_foreign:
                    self.metrics.rtp_dropped.labels("foreign_source").inc(leg.stream.dropped_foreign)
        finally:
            # The agent keeps its leg (for inspection in self.finished); the leg lets go of
            # the agent and the stream, so no reference cycle keeps the call's memory
            # (codecs, VAD, buffers) until the next cyclic GC pass.
            leg.agent = None
            leg.stream = None
            await memory.release_after_call(self.active_calls())
            # Logged last: the call's resources are all released when this line appears.
            log.info("call %s: ended (%s) after %.1f s", leg.call_id, reason, duration)

    def _spawn_forever(self, coro) -> None:
        """A background task that lives until :meth:`stop` cancels it."""
        self._background.append(asyncio.create_task(coro))

    async def _retention(self) -> None:
        """Apply ``records.retention_days`` and ``recording.retention_days`` at start and
        every ``records.purge_interval_s`` (:mod:`bridge.records.retention`)."""
        from .records.retention import purge

        s = self.settings
        while True:
            try:
                await asyncio.to_thread(purge, self.store.engine, s.records.retention_days, s.recording.retention_days)
            except Exception as exc:  # noqa: BLE001 - the database may be away: try again next time
                log.warning("retention: purge failed, retrying in %.0f s: %s", s.records.purge_interval_s, exc)
            await asyncio.sleep(s.records.purge_interval_s)

    async def dial(self, number: str, *, transport: str | None = None) -> str:
        """Place an outbound call to ``number`` through ``outbound.termination_uri``
        with digest credentials, and run the same agent on it. Returns the Call-ID.

        Raises:
            ValueError: no termination URI configured, or it is not a SIP URI.
            OSError: no RTP port free.
        """
        out = self.settings.outbound
        if not out.termination_uri:
            raise ValueError("outbound.termination_uri is not configured")
        term = URI.parse(out.termination_uri)
        kind = (transport or term.parameters.get("transport") or "udp").upper()
        try:
            listener = self.listener(kind)
        except KeyError:
            raise ValueError(f"the termination URI wants {kind}, which is not enabled (sip.{kind.lower()}_listen)") from None
        target = str(URI(scheme="sip", user=number, host=term.host, port=term.port))
        dest = (term.host, term.port or (5061 if kind == "TLS" else 5060))
        try:
            media_host = listener.advertiser.for_peer(term.host)
        except OSError as exc:
            raise ValueError(f"no route to {term.host}: {exc.strerror or exc}") from None
        sock = self.ports.bind(self.rtp_bind_host)
        port = sock.getsockname()[1]
        crypto = new_crypto(1) if self.settings.media.srtp == "required" else None
        try:
            offer = sdp.build_offer(media_host, port, crypto=crypto)
        except ValueError:
            self._release_socket(sock)
            raise
        credentials = (out.username, out.password) if out.username else None
        try:
            call_id = listener.core.invite(target, dest, offer, listener.transport.now(), from_user=out.caller_id, credentials=credentials,
                                           extra_headers=[("Supported", "timer")])
        except ValueError:
            self._release_socket(sock)
            raise
        leg = SipCallLeg(self, call_id, listener, number, {"to": target})
        leg.local_crypto = crypto
        leg.media_host = media_host
        self._pending_dials[call_id] = (leg, sock)
        listener.transport.flush()
        log.info("call %s: dialing %s via %s over %s", call_id, number, out.termination_uri, kind)
        return call_id

    async def stop(self, reason: str = "shutdown") -> None:
        """Hang up every call (end reason ``reason``), close sockets, write the records."""
        for leg in list(self.calls.values()) + list(self.streams.values()):
            leg.hangup(reason)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for listener in self.listeners:
            listener.transport.flush()
        await asyncio.sleep(0.05)
        for listener in self.listeners:
            listener.transport.close()
        if self._http is not None:
            self._http.should_exit = True
            await asyncio.gather(self._http_task, return_exceptions=True)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.store is not None:
            await asyncio.to_thread(self.store.close)

    async def drain(self, deadline: float) -> None:
        """Graceful shutdown: refuse new calls (503), let calls in progress go on for
        up to ``deadline`` seconds, then end the rest with BYE."""
        self.policy.draining = True
        for listener in self.listeners:
            listener.core.unavailable = self.settings.access.retry_after
        log.info("draining: %d call(s) in progress, new INVITEs get 503, deadline %.0f s", len(self.calls) + len(self.streams), deadline)
        try:
            await asyncio.wait_for(self._all_ended.wait(), deadline)
        except asyncio.TimeoutError:
            log.info("drain deadline reached: ending %d call(s)", len(self.calls) + len(self.streams))
        await self.stop("drained")

    async def run_forever(self) -> None:
        """Serve until SIGTERM (drain) or SIGINT (stop at once)."""
        loop = asyncio.get_running_loop()
        mode = {"how": "stop"}

        def on_signal(how: str) -> None:
            mode["how"] = how
            self._stopped.set()

        for sig, how in ((signal.SIGINT, "stop"), (signal.SIGTERM, "drain")):
            try:
                loop.add_signal_handler(sig, on_signal, how)
            except NotImplementedError:  # pragma: no cover - non-Unix
                pass
        await self._stopped.wait()
        if mode["how"] == "drain":
            await self.drain(self.settings.sip.drain_timeout)
        else:
            log.info("shutting down")
            await self.stop()
