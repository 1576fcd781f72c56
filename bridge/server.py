"""``bridge serve``'s lifecycle: listeners, start, stop, drain.

One :class:`BridgeServer` per process holds the listening SIP transports (a sans-IO
:class:`~bridge.sip.core.SipCore` each, driven by an asyncio transport), the RTP port
pool, the HTTP listener for Twilio Media Streams, the call records, and the calls of
both legs (:mod:`bridge.calls`). What a call does is not here: the SIP leg's INVITE,
re-INVITE and REFER handling is :class:`bridge.calls.sip.SipCalls`, Media Streams
admission is :class:`bridge.calls.streams.StreamCalls`, and the registry they share
(admission caps, draining, the one teardown) is :class:`bridge.calls.registry.CallRegistry`.
A failure inside one call is logged and ends that call only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from typing import Any

from sipmessage import URI

from . import memory
from .calls.registry import CallRegistry
from .calls.sip import SipCalls
from .calls.sip_leg import Listener, SipCallLeg
from .calls.streams import StreamCalls
from .calls.webrtc import WebRtcCalls
from .config import DEFAULT_CONFIG, ConfigError, Settings, parse_hostport, parse_port_range
from .media.stream import PortAllocator
from .observability.metrics import Metrics
from .privacy import Redactor
from .records.calls import CallRecords
from .records.store import RecordStore, default_node
from .routing import Router
from .sip.addressing import Advertiser
from .sip.core import SipCore, Timers
from .sip.policy import AdmissionPolicy
from .sip.tls import client_context, server_context
from .sip.transport import SipStreamTransport, SipUdpTransport

log = logging.getLogger("bridge.server")


def tls_server_context(settings: Settings):
    """``sip.tls_cert``/``sip.tls_key`` as a TLS server context.

    Raises:
        ConfigError: the certificate or key cannot be loaded.
    """
    try:
        return server_context(settings.sip.tls_cert, settings.sip.tls_key)
    except ValueError as exc:
        raise ConfigError("sip.tls_cert", str(exc)) from None


class BridgeServer:
    """The server (see the module docstring). ``engines`` are loaded by the caller (they
    take seconds); ``None`` is fine for ``agent.kind: echo``.

    It is the :class:`bridge.calls.host.CallHost` of every leg: :meth:`end_call`,
    :meth:`spawn` and :attr:`records`.
    """

    def __init__(self, settings: Settings, engines, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.engines = engines
        self.metrics = metrics or Metrics()
        storage = settings.storage
        node = storage.node or default_node(settings.sip.listen)
        self.store = RecordStore(storage.url, storage.spool_dir, node, self.metrics) if storage.url else None
        self.router = Router(settings, engines)
        self.records = CallRecords(
            self.store, node, Redactor(settings.privacy.redact) if settings.privacy.redact else None, settings.recording
        )
        self.registry = CallRegistry(settings.access, self.records, self.metrics)
        host, _ = parse_hostport(settings.sip.listen, 5060)
        #: The address used where no peer is known yet: ``sip.public_host``, the listen
        #: address, or the first non-loopback one. Calls get theirs per peer from their
        #: listener's :class:`Advertiser` (:mod:`bridge.sip.addressing`).
        self.public_host = Advertiser(settings.sip.public_host, host).fallback()
        self.ports = PortAllocator(*parse_port_range(settings.media.rtp_ports))
        self.policy = AdmissionPolicy(settings.access, base=DEFAULT_CONFIG.parent.parent)
        self.sip_calls = SipCalls(
            self, settings, engines, self.metrics, self.registry, self.router, self.policy, self.ports, host
        )
        self.streams = StreamCalls(settings, engines, self.metrics, self.registry, self.router)
        self.webrtc = WebRtcCalls(self, settings, engines, self.metrics, self.registry, self.router)
        self.listeners: list[Listener] = [self._listener(*spec) for spec in self._listener_specs()]
        self.twilio_control = None
        self._http = None
        self._http_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._background: list[asyncio.Task] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = asyncio.Event()
        self.metrics.watch_resource("rtp_ports", lambda: self.ports.in_use)
        self.metrics.watch_resource("calls", lambda: len(self.registry))
        self.metrics.watch_resource(
            "sip_dialogs", lambda: sum(listener.core.active_calls for listener in self.listeners)
        )
        self.metrics.watch_resource(
            "sip_transactions", lambda: sum(listener.core.transaction_count for listener in self.listeners)
        )
        self.metrics.watch_resource("tasks", self._task_count)

    def _listener_specs(self):
        sip = self.settings.sip
        for kind, address, default_port in (
            ("UDP", sip.listen, 5060),
            ("TCP", sip.tcp_listen, 5060),
            ("TLS", sip.tls_listen, 5061),
        ):
            if address:
                yield kind, parse_hostport(address, default_port)

    def _listener(self, kind: str, bind: tuple[str, int]) -> Listener:
        sip = self.settings.sip
        advertiser = Advertiser(sip.public_host, bind[0])
        core = SipCore(
            bind,
            public_host=advertiser.fallback(),
            user_agent=sip.user_agent,
            timers=Timers(t1=sip.t1),
            max_message_size=sip.max_message_size,
            transport=kind,
            session_expires=sip.session_expires,
            min_se=sip.min_se,
            host_for=(lambda peer, adv=advertiser: adv.for_peer(peer[0])) if advertiser.per_peer else None,
        )
        listener = Listener(core, None, advertiser)
        handler = lambda event, listener=listener: self.sip_calls.on_event(listener, event)  # noqa: E731
        if kind == "UDP":
            listener.io = SipUdpTransport(core, handler)
        else:
            tls = kind == "TLS"
            listener.io = SipStreamTransport(
                core,
                handler,
                server_ssl=tls_server_context(self.settings) if tls else None,
                client_ssl=client_context(sip.tls_ca) if tls else None,
            )
        self.metrics.watch_sip(core.counters, kind.lower())
        return listener

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

    # ----------------------------------------------------------- views

    @property
    def core(self) -> SipCore:
        """The first listener's core (UDP unless UDP is off)."""
        return self.listeners[0].core

    def listener(self, kind: str) -> Listener:
        """The listener for ``UDP``, ``TCP`` or ``TLS``.

        Raises:
            KeyError: that transport is not configured.
        """
        for listener in self.listeners:
            if listener.name == kind.upper():
                return listener
        raise KeyError(kind)

    @property
    def calls(self) -> dict[str, SipCallLeg]:
        """The live SIP calls, by Call-ID."""
        return self.registry.of_kind("sip")  # type: ignore[return-value]

    @property
    def stream_calls(self) -> dict:
        """The live Media Streams calls, by Call SID."""
        return self.registry.of_kind("mediastreams")

    @property
    def finished(self):
        """The last few calls' agents after they ended (:attr:`CallRegistry.finished`)."""
        return self.registry.finished

    @property
    def end_reasons(self):
        """``(call id, reason)`` of the last calls that ended."""
        return self.registry.end_reasons

    @property
    def dial_failures(self) -> dict[str, str]:
        """Why outbound calls failed before an answer, by Call-ID."""
        return self.sip_calls.dial_failures

    # ----------------------------------------------------------- CallHost

    def end_call(self, call_id: str, reason: str) -> None:
        """Tear a call of either leg down (idempotent): :meth:`CallRegistry.end`."""
        self.registry.end(call_id, reason)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a task the server keeps (and awaits on stop)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----------------------------------------------------------- lifecycle

    async def start(self) -> list[tuple[str, int]]:
        """Bind every configured transport; returns their bound addresses."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.router.load)
        if self.store is not None:
            await asyncio.to_thread(self.store.open)
            if self.settings.records.retention_days or self.settings.recording.retention_days:
                self._background.append(asyncio.create_task(self._retention()))
        bound = []
        for listener in self.listeners:
            addr = await listener.io.start()
            described, loopback_only = listener.advertiser.describe()
            log.info("sip: listening on %s %s:%s, advertising %s", listener.name.lower(), addr[0], addr[1], described)
            if loopback_only:
                log.warning(
                    "sip: only loopback addresses exist: peers on other machines cannot reach this server (set sip.public_host)"
                )
            bound.append(addr)
        log.info("rtp: ports %s on %s", self.settings.media.rtp_ports, self.sip_calls.rtp_bind_host)
        if self.settings.mediastreams.http_listen:
            await self._start_http()
        memory.freeze()  # models and libraries are loaded: the GC pass after each call skips them
        return bound

    async def _start_http(self) -> None:
        import uvicorn

        from .console import mount_console
        from .mediastreams.http import build_app

        ms = self.settings.mediastreams
        if ms.account_sid and ms.auth_token:
            from .mediastreams.leg import TwilioCallControl

            self.twilio_control = TwilioCallControl(ms.account_sid, ms.auth_token, ms.api_base_url)
        host, port = parse_hostport(ms.http_listen, 8080)

        class _Server(uvicorn.Server):
            def capture_signals(self):  # the bridge owns SIGTERM (drain) and SIGINT
                return contextlib.nullcontext()

        app = build_app(self)  # the TwiML webhook and the Media Streams WebSocket
        mount_console(app, self)  # the operator console and the browser leg's pages
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off", ws="websockets-sansio")
        self._http = _Server(config)
        self._http_task = asyncio.create_task(self._http.serve())
        while not self._http.started:
            if self._http_task.done():
                self._http_task.result()  # raises the bind error
            await asyncio.sleep(0.02)
        log.info(
            "media streams: listening on http %s:%d (public %s)", host, port, ms.public_url or "from X-Forwarded-*"
        )

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

    async def dial(self, number: str, *, transport: str | None = None, options=None) -> str:
        """Place an outbound call to ``number`` through ``outbound.termination_uri``
        with digest credentials, and run the same agent on it. Returns the Call-ID.

        ``options``: a :class:`bridge.calls.dialing.DialOptions` (answering-machine
        detection, the callee's variables, the campaign, the outcome callback); ``None``:
        ``outbound.amd.enabled`` decides detection.

        Raises:
            ValueError: no termination URI configured, it is not a SIP URI, its
                transport is not enabled, or there is no route to it.
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
            raise ValueError(
                f"the termination URI wants {kind}, which is not enabled (sip.{kind.lower()}_listen)"
            ) from None
        target = str(URI(scheme="sip", user=number, host=term.host, port=term.port))
        dest = (term.host, term.port or (5061 if kind == "TLS" else 5060))
        try:
            media_host = listener.advertiser.for_peer(term.host)
        except OSError as exc:
            raise ValueError(f"no route to {term.host}: {exc.strerror or exc}") from None
        if options is None:
            from .calls.dialing import DialOptions

            options = DialOptions(amd=out.amd.enabled)
        call_id = self.sip_calls.dial(listener, number, target, dest, media_host, options)
        log.info("call %s: dialing %s via %s over %s", call_id, number, out.termination_uri, kind)
        return call_id

    async def wait_idle(self) -> None:
        """Return once no call is in progress or being dialed."""
        while len(self.registry) or self.sip_calls.dialing:
            await asyncio.sleep(0.2)

    async def stop(self, reason: str = "shutdown") -> None:
        """Hang up every call (end reason ``reason``), close sockets, write the records."""
        for leg in self.registry:
            leg.hangup(reason)
        await self.registry.wait_torn_down()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for listener in self.listeners:
            listener.io.flush()
        await asyncio.sleep(0.05)
        for listener in self.listeners:
            listener.io.close()
        if self._http is not None:
            self._http.should_exit = True
            await asyncio.gather(self._http_task, return_exceptions=True)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.store is not None:
            await asyncio.to_thread(self.store.close)

    async def drain(self, deadline: float) -> None:
        """Graceful shutdown: refuse new calls (SIP 503, Media Streams close 1013), let
        calls in progress go on for up to ``deadline`` seconds, then end the rest with BYE."""
        self.registry.draining = True
        for listener in self.listeners:
            listener.core.set_unavailable(self.settings.access.retry_after)
        log.info("draining: %d call(s) in progress, new INVITEs get 503, deadline %.0f s", len(self.registry), deadline)
        if not await self.registry.wait_all_ended(deadline):
            log.info("drain deadline reached: ending %d call(s)", len(self.registry))
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
