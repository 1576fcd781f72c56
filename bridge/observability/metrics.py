"""Prometheus metrics (``prometheus-client``).

Labels have bounded cardinality: stage names, reasons and outcomes from fixed
sets; never call ids or phone numbers (those go to the logs).
"""

from __future__ import annotations

import socket
import socketserver
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, make_wsgi_app
from prometheus_client.core import CounterMetricFamily

#: Turn stages, each measured from the end of caller speech (last voiced frame).
STAGES = ("endpoint", "asr_final", "llm_first_token", "first_sentence", "tts_first_audio", "first_packet")

#: Label values exported at 0 from the start, so that a dashboard's rate() has a series
#: before the first event (Prometheus's advice for counters with known label values).
RTP_DROP_REASONS = (
    "foreign_source",
    "malformed",
    "rtcp",
    "unknown_payload_type",
    "unknown_event",
    "duplicate_or_late",
    "sequence_jump",
    "srtp_unprotect_failed",
    "stun",
    "dtls",
)
CALL_OUTCOMES = ("answered",)
RECORD_RESULTS = ("written", "spooled", "replayed", "failed", "lost")

_LATENCY_BUCKETS = (
    0.05,
    0.1,
    0.2,
    0.3,
    0.4,
    0.5,
    0.6,
    0.7,
    0.8,
    0.9,
    1.0,
    1.25,
    1.5,
    2.0,
    2.5,
    3.0,
    4.0,
    5.0,
    7.5,
    10.0,
)


class Metrics:
    """All bridge metrics in one registry (a fresh one per instance, so tests can make several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.voice_to_voice = Histogram(
            "bridge_voice_to_voice_seconds",
            "End of caller speech (last voiced frame) -> first agent audio packet sent.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stage = Histogram(
            "bridge_turn_stage_seconds",
            "Time from end of caller speech to each turn stage.",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        for stage in STAGES:  # at 0 from the start: the first turn's observation is then a rate()
            self.stage.labels(stage)
        self.turns = Counter("bridge_turns_total", "Caller turns answered.", registry=r)
        self.barge_ins = Counter("bridge_barge_ins_total", "Agent speech interrupted by the caller.", registry=r)
        self.barge_ins_resumed = Counter(
            "bridge_barge_ins_resumed_total",
            "Agent speech paused by caller sound that was a backchannel or no words, then resumed.",
            registry=r,
        )
        self.echo_frames = Counter(
            "bridge_echo_frames_total",
            "Inbound frames the VAD called speech that were the agent's own echo.",
            registry=r,
        )
        self.calls = Counter("bridge_calls_total", "Calls by outcome.", ["outcome"], registry=r)
        self.active_calls = Gauge("bridge_active_calls", "Calls in progress.", registry=r)
        self.rtp_dropped = Counter(
            "bridge_rtp_dropped_total", "RTP packets dropped, by reason.", ["reason"], registry=r
        )
        for reason in RTP_DROP_REASONS:
            self.rtp_dropped.labels(reason)
        for outcome in CALL_OUTCOMES:
            self.calls.labels(outcome)
        self.dtmf = Counter("bridge_dtmf_digits_total", "RFC 4733 digits received.", registry=r)
        self.guarded = Counter(
            "bridge_reply_guard_total",
            "LLM output not spoken, by reason (repetition, leak, too_long, farewell, empty: the fallback was said).",
            ["reason"],
            registry=r,
        )
        self.tools_refused = Counter(
            "bridge_tool_calls_refused_total",
            "Tool calls from the model refused because the caller did not ask for them, by tool.",
            ["tool"],
            registry=r,
        )
        self.engine_errors = Counter(
            "bridge_engine_errors_total", "ASR, LLM or TTS failures during a turn, by stage.", ["stage"], registry=r
        )
        for stage in ("asr", "llm", "tts"):
            self.engine_errors.labels(stage)  # exported at 0 from the start
        # Outbound calls (bridge/outbound): who answered, and how the call ended.
        self.amd_verdicts = Counter(
            "bridge_amd_verdicts_total",
            "Answering-machine detection verdicts, by verdict and reason (beep, words, short greeting, question, long greeting, silence, noise).",
            ["verdict", "reason"],
            registry=r,
        )
        self.amd_seconds = Histogram(
            "bridge_amd_verdict_seconds",
            "Seconds from the answer to the answering-machine verdict.",
            buckets=(0.5, 1, 1.5, 2, 3, 4, 6, 8, 10, 15),
            registry=r,
        )
        self.voicemail_messages = Counter(
            "bridge_voicemail_messages_total",
            "Voicemail messages spoken, by cue (beep, or silence without a beep).",
            ["how"],
            registry=r,
        )
        self.outbound_outcomes = Counter(
            "bridge_outbound_outcomes_total",
            "Outbound calls by outcome (human, voicemail_left, machine_no_beep, no_answer, busy, failed, dnc).",
            ["outcome"],
            registry=r,
        )
        for verdict in ("human", "machine", "unknown"):
            self.amd_verdicts.labels(verdict, "beep" if verdict == "machine" else "silence")
        self._sip_counters: list = []
        r.register(_SipCollector(self._sip_counters))
        ProcessCollector(registry=r)  # process_open_fds, process_cpu_seconds_total, ...
        self.records = Counter(
            "bridge_records_writes_total",
            "Call-record events by outcome: written, spooled (database unavailable), replayed (from the spool), failed (refused), lost, error_* (attempts that failed).",
            ["result"],
            registry=r,
        )
        for result in RECORD_RESULTS:
            self.records.labels(result)
        self.records_spooled = Gauge(
            "bridge_records_spooled", "Call-record events waiting in the on-disk spool for the database.", registry=r
        )
        self.resources = Gauge("bridge_resources", "Live resources, for leak checks.", ["kind"], registry=r)

    def watch_resource(self, kind: str, read) -> None:
        """Export ``read()`` as ``bridge_resources{kind}`` at scrape time
        (e.g. ``rtp_ports``, ``sip_transactions``, ``sip_dialogs``, ``tasks``)."""
        self.resources.labels(kind).set_function(read)

    def watch_sip(self, counters, transport: str = "udp") -> None:
        """Export a SIP core's ``counters`` (a Counter of ``dropped_<reason>``, ...) at scrape time.

        The core keeps its own counts (it is sans-IO and knows nothing of
        Prometheus); this reads them when ``/metrics`` is scraped:
        ``bridge_sip_dropped_total{transport,reason}``, ``bridge_sip_events_total{transport,event}``
        and ``bridge_sip_responses_total{transport,code}`` (final and provisional responses
        sent, by status code: 200, 180, 503...).
        """
        self._sip_counters.append((transport, counters))

    def observe_turn(self, times: dict[str, float]) -> None:
        """Record one turn; ``times`` maps ``speech_end`` and :data:`STAGES` to monotonic seconds."""
        start = times.get("speech_end")
        if start is None:
            return
        self.turns.inc()
        for stage in STAGES:
            if stage in times:
                self.stage.labels(stage).observe(max(0.0, times[stage] - start))
        if "first_packet" in times:
            self.voice_to_voice.observe(max(0.0, times["first_packet"] - start))

    def serve(self, host: str, port: int):
        """Expose ``/metrics`` over HTTP on ``host:port`` (a daemon thread); returns the server.

        Not ``prometheus_client.start_http_server``: its ``http.server`` base resolves
        the listen address's name (``socket.getfqdn``, a reverse lookup that may go to
        DNS) when it binds; this one looks nothing up (``tests/test_residency.py``).

        Raises:
            OSError: the address cannot be bound.
        """
        server = make_server(
            host, port, make_wsgi_app(self.registry), server_class=_NoLookupServer, handler_class=_QuietHandler
        )
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
        return server


class _NoLookupServer(ThreadingMixIn, WSGIServer):
    """A WSGI server whose bind does not resolve its own name."""

    daemon_threads = True
    address_family = socket.AF_INET

    def __init__(self, address, handler, bind_and_activate: bool = True) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler, bind_and_activate)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]
        self.setup_environ()


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape."""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass


class _SipCollector:
    def __init__(self, sources: list) -> None:
        self.sources = sources

    def collect(self):
        dropped = CounterMetricFamily(
            "bridge_sip_dropped", "SIP messages dropped, by reason.", labels=["transport", "reason"]
        )
        other = CounterMetricFamily(
            "bridge_sip_events",
            "SIP core counters (requests, responses, retransmissions, timeouts).",
            labels=["transport", "event"],
        )
        responses = CounterMetricFamily(
            "bridge_sip_responses", "SIP responses sent, by status code.", labels=["transport", "code"]
        )
        for transport, counters in self.sources:
            for key, value in sorted(counters.items()):
                if key.startswith("dropped_"):
                    dropped.add_metric([transport, key[len("dropped_") :]], value)
                else:
                    other.add_metric([transport, key], value)
                    if key.startswith("responses_sent_"):
                        responses.add_metric([transport, key[len("responses_sent_") :]], value)
        yield dropped
        yield other
        yield responses

    def describe(self):
        return []
