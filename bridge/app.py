"""``bridge serve``: SIP UAS + RTP + conversation, wired together.

One :class:`BridgeServer` per process: one SIP socket, a pool of RTP ports,
the models loaded once, and per call an :class:`SipCallLeg` holding its RTP
stream and :class:`bridge.conversation.engine.Conversation`. A failure inside
one call is logged and ends that call only.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import signal

from .config import Settings, parse_hostport
from .conversation.engine import Conversation
from .media import sdp
from .media.stream import PortAllocator, RtpStream
from .observability.metrics import Metrics
from .sip import events as ev
from .sip.core import SipCore, SipUsageError, Timers
from .sip.transport import SipUdpTransport

log = logging.getLogger("bridge.app")


class SipCallLeg:
    """A SIP+RTP call leg as the conversation sees it (:class:`bridge.conversation.engine.CallLeg`)."""

    def __init__(self, server: "BridgeServer", call_id: str, stream: RtpStream | None = None) -> None:
        self.server = server
        self.call_id = call_id
        self.stream = stream
        self.conversation: Conversation | None = None
        self.ended = False

    def hangup(self, reason: str) -> None:
        """Send BYE (or a final response before answer) and tear the call down."""
        if self.ended:
            return
        log.info("call %s: hanging up (%s)", self.call_id, reason)
        core = self.server.core
        if core.has_call(self.call_id):
            try:
                core.hangup(self.call_id, self.server.transport.now())
            except SipUsageError:
                pass
            self.server.transport.flush()
        self.server.end_call(self.call_id, reason)

    def clear_playout(self) -> None:
        """Nothing is queued below the conversation on an RTP leg: the pacer pulls per packet."""

    # RtpStream callbacks
    def on_audio(self, frame, now: float) -> None:
        if self.conversation is not None:
            self.conversation.feed_audio(frame)

    def on_dtmf(self, event) -> None:
        if self.conversation is not None:
            self.conversation.feed_dtmf(event.digit)

    def on_rtp_timeout(self) -> None:
        self.hangup("rtp_timeout")

    def pull_frame(self, now: float):
        return self.conversation.pull_frame(now) if self.conversation is not None else None


class BridgeServer:
    """The server. ``engines`` are loaded by the caller (they take seconds)."""

    def __init__(self, settings: Settings, engines, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.engines = engines
        self.metrics = metrics or Metrics()
        host, port = parse_hostport(settings.sip.listen, 5060)
        public = settings.sip.public_host or ("127.0.0.1" if host in ("0.0.0.0", "::") else host)
        self.public_host = public
        self.rtp_bind_host = host
        self.core = SipCore((host, port), public_host=public, user_agent=settings.sip.user_agent, timers=Timers(t1=settings.sip.t1), max_message_size=settings.sip.max_message_size)
        self.transport = SipUdpTransport(self.core, self._on_event)
        self.metrics.watch_sip(self.core.counters)
        low, _, high = settings.media.rtp_ports.partition("-")
        self.ports = PortAllocator(int(low), int(high or low))
        self.calls: dict[str, SipCallLeg] = {}
        #: The last calls' conversations after they ended (bounded), for inspection.
        self.finished: collections.deque[Conversation] = collections.deque(maxlen=100)
        self._closing: set[asyncio.Task] = set()
        self._stopped = asyncio.Event()

    async def start(self) -> tuple[str, int]:
        """Bind SIP; returns the bound address."""
        addr = await self.transport.start()
        log.info("sip: listening on udp %s:%s (public %s)", addr[0], addr[1], self.public_host)
        return addr

    def _on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.IncomingCall):
            self._on_incoming(event)
        elif isinstance(event, ev.CallConfirmed):
            log.info("call %s: confirmed (ACK)", event.call_id)
        elif isinstance(event, ev.CallEnded):
            log.info("call %s: ended by SIP (%s%s)", event.call_id, event.reason, f" {event.status}" if event.status else "")
            self.end_call(event.call_id, event.reason)

    def _on_incoming(self, event: ev.IncomingCall) -> None:
        now = self.transport.now()
        log.info(
            "call %s: INVITE from %s:%s %s -> %s %s",
            event.call_id, event.source[0], event.source[1], event.from_uri, event.to_uri,
            " ".join(f"{k}={v}" for k, v in event.headers.items()),
        )
        try:
            params = sdp.negotiate(event.offer)
        except sdp.SdpError as exc:
            log.info("call %s: rejected %d: %s", event.call_id, exc.status, exc)
            self.core.reject(event.call_id, exc.status, now, extra_headers=[("Warning", '304 bridge "Media type not available"')] if exc.status == 488 else None)
            self.metrics.calls.labels("rejected").inc()
            return
        try:
            sock = self.ports.bind(self.rtp_bind_host)
        except OSError:
            log.warning("call %s: no RTP port free: 503", event.call_id)
            self.core.reject(event.call_id, 503, now, extra_headers=[("Retry-After", "5")])
            self.metrics.calls.labels("rejected").inc()
            return
        leg = SipCallLeg(self, event.call_id)
        media = self.settings.media
        stream = RtpStream(sock, params, leg, leg.on_audio, leg.on_dtmf, leg.on_rtp_timeout, rtp_timeout=media.rtp_timeout, latch=media.latch, send_silence=media.send_silence)
        leg.stream = stream
        leg.conversation = Conversation(self.engines, self.settings.agent, leg, self.metrics)
        self.calls[event.call_id] = leg
        answer = sdp.build_answer(params, self.public_host, stream.local_port)
        if self.settings.sip.send_ringing:
            self.core.ringing(event.call_id, now)
        self.metrics.active_calls.inc()
        delay = self.settings.sip.answer_delay
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._answer, leg, answer, params)
        else:
            self._answer(leg, answer, params)

    def _answer(self, leg: SipCallLeg, answer: bytes, params: sdp.MediaParams) -> None:
        if leg.ended or not self.core.has_call(leg.call_id):
            return  # cancelled while ringing
        self.core.answer(leg.call_id, answer, self.transport.now())
        self.transport.flush()
        self.metrics.calls.labels("answered").inc()
        log.info("call %s: answered %s/8000 pt=%d dtmf_pt=%s rtp %s:%d <-> %s:%d", leg.call_id, params.codec, params.payload_type, params.dtmf_payload_type, self.public_host, leg.stream.local_port, *params.remote_addr)
        task = asyncio.create_task(self._start_media(leg))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _start_media(self, leg: SipCallLeg) -> None:
        try:
            await leg.stream.start()
            leg.conversation.start()
        except Exception:  # noqa: BLE001 - one call's failure ends that call only
            log.exception("call %s: media start failed", leg.call_id)
            leg.hangup("media_error")

    def end_call(self, call_id: str, reason: str) -> None:
        """Tear down a call's media and conversation (idempotent)."""
        leg = self.calls.pop(call_id, None)
        if leg is None or leg.ended:
            return
        leg.ended = True
        self.metrics.active_calls.dec()
        task = asyncio.create_task(self._teardown(leg, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _teardown(self, leg: SipCallLeg, reason: str) -> None:
        try:
            if leg.conversation is not None:
                await leg.conversation.close()
                self.finished.append(leg.conversation)
                for role, text in leg.conversation.transcript():
                    log.debug("call %s transcript %s: %s", leg.call_id, role, text)
            if leg.stream is not None:
                await leg.stream.close()
                self.ports.release(leg.stream.local_port)
                for name, count in leg.stream.receiver.counters.items():
                    if name not in ("audio", "dtmf") and count:
                        self.metrics.rtp_dropped.labels(name).inc(count)
                if leg.stream.dropped_foreign:
                    self.metrics.rtp_dropped.labels("foreign_source").inc(leg.stream.dropped_foreign)
        finally:
            log.info("call %s: ended (%s)", leg.call_id, reason)

    async def stop(self) -> None:
        """Hang up every call, close sockets."""
        for leg in list(self.calls.values()):
            leg.hangup("shutdown")
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)
        self.transport.flush()
        await asyncio.sleep(0.05)
        self.transport.close()

    async def run_forever(self) -> None:
        """Serve until SIGINT/SIGTERM."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._stopped.set)
            except NotImplementedError:  # pragma: no cover - non-Unix
                pass
        await self._stopped.wait()
        log.info("shutting down")
        await self.stop()
