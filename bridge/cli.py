"""Command line: ``bridge serve`` and ``bridge call``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path

from .config import ConfigError, load_settings, parse_hostport

log = logging.getLogger("bridge")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _run(coro) -> object:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)


def _settings(args: argparse.Namespace):
    overrides: dict = {"sip": {}, "media": {}, "observability": {}, "agent": {}}
    for option, key in (("sip_listen", "listen"), ("sip_tcp_listen", "tcp_listen"), ("sip_tls_listen", "tls_listen"), ("tls_cert", "tls_cert"), ("tls_key", "tls_key")):
        if getattr(args, option, None):
            overrides["sip"][key] = getattr(args, option)
    if getattr(args, "agent", None):
        overrides["agent"]["kind"] = args.agent
    overrides["mediastreams"] = {}
    if getattr(args, "http_listen", None):
        overrides["mediastreams"]["http_listen"] = args.http_listen
    if getattr(args, "public_url", None):
        overrides["mediastreams"]["public_url"] = args.public_url
    if args.public_host:
        overrides["sip"]["public_host"] = args.public_host
    if args.rtp_ports:
        overrides["media"]["rtp_ports"] = args.rtp_ports
    if args.metrics_listen:
        overrides["observability"]["metrics_listen"] = args.metrics_listen
    settings = load_settings(args.config, overrides, preset=getattr(args, "preset", None))
    if settings.sip.tls_listen:
        from .app import _server_ssl

        _server_ssl(settings)  # a bad certificate is a bad setting: refuse before anything starts
    _setup_logging(settings.observability.log_level)
    if settings.privacy.redact:
        from .privacy import install_log_redaction

        install_log_redaction(settings.privacy.redact)
    return settings


def _prepare(settings):
    """Load the engines (unless the echo agent needs none) and start /metrics."""
    from .memory import limit_arenas
    from .observability.metrics import Metrics

    limit_arenas()  # before the model libraries start their threads

    engines = None
    if settings.agent.kind != "echo":
        from .engines import load_engines

        started = time.monotonic()
        engines = load_engines(settings)
        log.info("models loaded in %.1f s (device %s)", time.monotonic() - started, engines.device)
    metrics = Metrics()
    if settings.observability.metrics_listen:
        host, port = parse_hostport(settings.observability.metrics_listen, 9090)
        metrics.serve(host, port)
        log.info("metrics: http://%s:%d/metrics", host, port)
    return engines, metrics


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    engines, metrics = _prepare(settings)
    from .app import BridgeServer

    async def main() -> None:
        server = BridgeServer(settings, engines, metrics)
        await server.start()
        print("bridge: ready", flush=True)
        await server.run_forever()

    _run(main())
    log.info("bridge: stopped")
    return 0


def _dial(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.termination_uri:
        settings.outbound.termination_uri = args.termination_uri
    engines, metrics = _prepare(settings)
    from .app import BridgeServer

    async def main() -> int:
        server = BridgeServer(settings, engines, metrics)
        await server.start()
        try:
            call_id = await server.dial(args.number)
        except (ValueError, OSError) as exc:
            print(f"bridge dial: {exc}", file=sys.stderr)
            await server.stop()
            return 2
        print(f"dialing {args.number}: call {call_id}", flush=True)
        await asyncio.sleep(0.5)
        await server.wait_idle()
        answered = any(True for _ in server.finished)
        failure = server.dial_failures.get(call_id, "")
        await server.stop()
        if answered:
            print("call ended", flush=True)
            return 0
        print(f"call failed: {failure or 'not answered'}", flush=True)
        return 1

    return _run(main())


def _call(args: argparse.Namespace) -> int:
    _setup_logging("INFO" if args.verbose else "WARNING")
    from .client import place_call

    report = _run(
        place_call(
            args.uri,
            args.play or [],
            args.record,
            args.duration,
            local_host=args.local_host,
            wait_greeting=not args.no_wait,
            dtmf=args.dtmf or "",
            echo_db=args.echo_db,
            echo_delay_ms=args.echo_delay_ms,
        )
    )
    print(f"answered: {report.answered}")
    print(f"ended: {report.end_reason} (hung up by {report.hung_up_by})")
    print(f"recorded: {report.recorded_seconds:.2f} s of agent audio" + (f" -> {args.record}" if args.record else ""))
    for i, latency in enumerate(report.latencies, 1):
        print(f"turn {i}: end of caller speech -> first agent audio: {latency * 1000:.0f} ms")
    if report.latencies:
        print(f"latency p50: {report.p50 * 1000:.0f} ms over {len(report.latencies)} turns")
    return 0 if report.answered else 1


def _twilio(args: argparse.Namespace) -> int:
    """``bridge twilio call NUMBER``: an outbound call whose TwiML connects a media stream."""
    from twilio.twiml.voice_response import VoiceResponse

    from .mediastreams.leg import TwilioCallControl

    overrides = {"mediastreams": {k: v for k, v in (("public_url", args.public_url), ("api_base_url", args.api_base_url), ("from_number", args.from_number)) if v}}
    settings = load_settings(args.config, overrides)
    _setup_logging("WARNING")
    ms = settings.mediastreams
    if not (ms.account_sid and ms.auth_token and ms.public_url and ms.from_number):
        print("bridge twilio call needs TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, --public-url and --from", file=sys.stderr)
        return 2
    from .mediastreams.http import ws_base

    response = VoiceResponse()
    base = ms.public_url.rstrip("/")
    response.connect().stream(url=ws_base(base) + "/media-stream")
    sid = TwilioCallControl(ms.account_sid, ms.auth_token, ms.api_base_url).create(args.number, ms.from_number, str(response))
    print(f"call {sid} to {args.number} created; its audio will stream to {base}/media-stream")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .benchmarks import write_json

    if args.what == "answers":
        return _bench_answers(args)
    if args.what == "bargein":
        return _bench_bargein(args)
    if args.what == "turns":
        return _bench_turns(args)
    _setup_logging("WARNING")
    if args.what == "models":
        return _bench_models(args)
    from .benchmarks.calls import bench_calls, print_calls

    result = _run(bench_calls(args.uri, args.concurrency, args.turns))
    print_calls(result)
    write_json(args.json, result)
    return 0


def _bench_models(args: argparse.Namespace) -> int:
    """``bridge bench models [--preset P ...]``: one preset in this process; several, each
    in a process of its own (so that memory and loaded models do not mix)."""
    import json
    import subprocess
    import tempfile

    from .benchmarks import write_json
    from .benchmarks.stages import bench_stages, print_stages

    presets = args.preset or [None]
    results = []
    if len(presets) == 1:
        settings = load_settings(args.config, preset=presets[0])
        results.append(bench_stages(settings, args.runs, presets[0] or "configured"))
    else:
        for preset in presets:
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                command = [sys.executable, "-m", "bridge", "bench", "models", "--preset", preset, "--runs", str(args.runs), "--json", out.name]
                if args.config:
                    command += ["--config", args.config]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode == 0:
                    results.append(json.loads(Path(out.name).read_text())[0])
                else:
                    lines = done.stderr.strip().splitlines()
                    results.append({"label": preset, "error": lines[-1] if lines else f"exit status {done.returncode}"})
    print_stages(results)
    write_json(args.json, results)
    if args.chart:
        from .benchmarks.chart import budget_chart

        try:
            print(f"chart: {budget_chart(results, args.chart)}")
        except ValueError as exc:
            print(f"bridge bench models: no chart: {exc}", file=sys.stderr)
    return 0 if any("error" not in r for r in results) else 1


def _bench_bargein(args: argparse.Namespace) -> int:
    """``bridge bench bargein``: config/bargein's interruptions and backchannels over the agent."""
    from .benchmarks import write_json
    from .benchmarks.bargein import bench_bargein, print_bargein
    from .engines import load_engines
    from .memory import limit_arenas

    settings = load_settings(args.config, preset=args.preset[0] if args.preset else None)
    _setup_logging(args.log_level or "WARNING")
    limit_arenas()
    engines = load_engines(settings)
    report = _run(bench_bargein(settings, engines, [args.split] if args.split else None))
    print_bargein(report)
    write_json(args.json, report)
    return 0


def _bench_turns(args: argparse.Namespace) -> int:
    """``bridge bench turns``: config/eval/turns' pauses and complete turns, when the agent answers."""
    from .benchmarks import write_json
    from .benchmarks.turns import bench_turns, print_turns
    from .engines import load_engines
    from .evaluation.voices import DEFAULT_VOICES

    settings = load_settings(args.config, preset=args.preset[0] if args.preset else None)
    _setup_logging(args.log_level or "WARNING")
    engines = load_engines(settings)
    voices = [v.strip() for v in (args.voices or ",".join(DEFAULT_VOICES)).split(",") if v.strip()]
    report = _run(bench_turns(settings, engines, voices, [args.split] if args.split else None, args.late_after))
    print_turns(report)
    write_json(args.json, report)
    return 0


def _bench_answers(args: argparse.Namespace) -> int:
    from .benchmarks import write_json
    from .engines import load_engines
    from .evaluation.report import print_report
    from .evaluation.runner import bench_answers
    from .evaluation.voices import DEFAULT_VOICES, VOICES

    if args.preset and len(args.preset) > 1:
        print("bridge bench answers: one --preset at a time (run it once per preset)", file=sys.stderr)
        return 2
    settings = load_settings(args.config, preset=args.preset[0] if args.preset else None)
    voices = [v.strip() for v in (args.voices or ",".join(DEFAULT_VOICES)).split(",") if v.strip()]
    unknown = [v for v in voices if v != "text" and v not in VOICES]
    if unknown:
        print(f"bridge: unknown voice {unknown[0]!r} (known: text, {', '.join(VOICES)})", file=sys.stderr)
        return 2
    _setup_logging(args.log_level or "WARNING")
    from .memory import limit_arenas

    limit_arenas()
    engines = load_engines(settings)
    splits = [args.split] if args.split else None
    report = _run(bench_answers(settings, engines, voices, args.eval, splits))
    m = report["models"]
    print_report(report, f"answers: {report['overall']['turns']} turns ({', '.join(voices)}) in {report['seconds']} s; "
                         f"ASR {m['asr']} (beam {m['asr_beam_size']}), LLM {m['llm']}, on {m['device']}")
    write_json(args.json, report)
    return 0


def _models(args: argparse.Namespace) -> int:
    from .models.commands import run

    settings = load_settings(args.config, preset=args.preset if args.action == "check" else None)
    _setup_logging("WARNING")
    return run(args, settings)


def _health(args: argparse.Namespace) -> int:
    from .health import sip_options

    settings = load_settings(args.config)
    host, port = parse_hostport(args.sip or settings.sip.listen, 5060)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # a wildcard listen answers on loopback
    try:
        status = sip_options(host, port, args.timeout)
    except (TimeoutError, OSError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    print(f"sip:{host}:{port} answered OPTIONS with {status}")
    return 0 if status == 200 else 1


def _calls(args: argparse.Namespace) -> int:
    from .records.commands import run

    settings = load_settings(args.config)
    _setup_logging("WARNING")
    return run(settings, args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridge", description="Self-hosted voice-AI endpoint for phone calls.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="answer SIP calls with the configured agent")
    serve.add_argument("--config", help="YAML file merged over config/default.yaml")
    serve.add_argument("--preset", help="a model preset from config/presets/ (cpu-small, cpu-better, gpu), laid under --config")
    serve.add_argument("--sip-listen", metavar="HOST:PORT", help="SIP UDP address (default 0.0.0.0:5060)")
    serve.add_argument("--sip-tcp-listen", metavar="HOST:PORT", help="also serve SIP over TCP here")
    serve.add_argument("--sip-tls-listen", metavar="HOST:PORT", help="also serve SIP over TLS here (needs --tls-cert/--tls-key)")
    serve.add_argument("--tls-cert", metavar="PEM", help="TLS certificate chain")
    serve.add_argument("--tls-key", metavar="PEM", help="TLS private key")
    serve.add_argument("--agent", choices=["llm", "echo"], help="the agent (echo: play the caller back, no models)")
    serve.add_argument("--http-listen", metavar="HOST:PORT", help="Media Streams mode: serve POST /twiml and WS /media-stream here")
    serve.add_argument("--public-url", metavar="URL", help="the base URL Twilio calls (https://...), for the Stream URL and signatures")
    serve.add_argument("--public-host", metavar="IP", help="address for Via/Contact/SDP (behind NAT: the public IP)")
    serve.add_argument("--rtp-ports", metavar="LOW-HIGH", help="RTP port range (default 10000-20000)")
    serve.add_argument("--metrics-listen", metavar="HOST:PORT", help="Prometheus /metrics address (default 127.0.0.1:9090)")
    serve.set_defaults(func=_serve)

    dial = sub.add_parser("dial", help="call NUMBER through outbound.termination_uri and run the agent on it")
    dial.add_argument("number", help="E.164 number, e.g. +14155550100")
    dial.add_argument("--config", help="YAML file merged over config/default.yaml")
    dial.add_argument("--termination-uri", metavar="URI", help="override outbound.termination_uri")
    dial.add_argument("--sip-listen", metavar="HOST:PORT", help="local SIP UDP address (default from config)")
    dial.add_argument("--metrics-listen", metavar="HOST:PORT", help="Prometheus /metrics address")
    dial.add_argument("--rtp-ports", metavar="LOW-HIGH", help="RTP port range")
    dial.add_argument("--public-host", metavar="IP", help="address for Via/Contact/SDP")
    dial.add_argument("--agent", choices=["llm", "echo"])
    dial.set_defaults(func=_dial)

    twilio = sub.add_parser("twilio", help="Twilio REST actions: 'call NUMBER' places a call that streams to this bridge")
    twilio.add_argument("action", choices=["call"])
    twilio.add_argument("number", help="E.164 number to call")
    twilio.add_argument("--from", dest="from_number", help="caller ID (a Twilio number)")
    twilio.add_argument("--public-url", help="the bridge's public base URL (https://...)")
    twilio.add_argument("--config", help="YAML merged over config/default.yaml")
    twilio.add_argument("--api-base-url", help=argparse.SUPPRESS)
    twilio.set_defaults(func=_twilio)

    bench = sub.add_parser("bench", help="benchmarks: 'models' (ASR/LLM/TTS speed), 'calls' (latency of real SIP calls), 'answers' (conversation quality on config/eval), 'bargein' (true and false interruptions, config/bargein), 'turns' (answers at the right moment, config/eval/turns)")
    bench.add_argument("what", choices=["models", "calls", "answers", "bargein", "turns"])
    bench.add_argument("--config", help="YAML merged over config/default.yaml (models, answers)")
    bench.add_argument("--voices", metavar="V,V", help="answers: caller voices, from piper, piper-fast, espeak, espeak-fast, text (default: the first four)")
    bench.add_argument("--eval", action="append", metavar="YAML", help="answers: evaluation file (repeat; default config/eval/*.yaml)")
    bench.add_argument("--split", choices=["tune", "heldout"], help="answers, bargein, turns: only this part of the evaluation set")
    bench.add_argument("--late-after", type=float, default=1.0, metavar="S", help="turns: a reply later than this after the caller's speech is late")
    bench.add_argument("--log-level", help="answers: log level (INFO shows every turn)")
    bench.add_argument("--runs", type=int, default=5, help="models: utterances per stage (at most 6)")
    bench.add_argument("--uri", default="sip:agent@127.0.0.1:5060", help="server to call (calls)")
    bench.add_argument("--concurrency", type=int, default=1, help="simultaneous calls (calls)")
    bench.add_argument("--turns", type=int, default=5, help="caller turns per call (calls)")
    bench.add_argument("--preset", action="append", metavar="NAME", help="models, answers: a preset from config/presets/ (models: repeat to compare; default: the configured models)")
    bench.add_argument("--chart", metavar="PNG", help="models: also draw the voice-to-voice budget per preset (matplotlib)")
    bench.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    bench.set_defaults(func=_bench)

    calls = sub.add_parser("calls", help="call records: list, show CALL_ID, export, purge (same config and database as serve)")
    calls.add_argument("action", choices=["list", "show", "export", "purge"])
    calls.add_argument("call_id", nargs="?", help="show: the call id (SIP Call-ID or Twilio CallSid)")
    calls.add_argument("--config", help="YAML merged over config/default.yaml")
    calls.add_argument("--since", metavar="ISO", help="list/export: calls invited at or after this time (UTC unless a zone is given)")
    calls.add_argument("--until", metavar="ISO", help="list/export: calls invited before this time")
    calls.add_argument("--number", help="list: calls from or to this number")
    calls.add_argument("--limit", type=int, default=50, help="list: at most N calls, newest first (default 50)")
    calls.add_argument("--json", action="store_true", help="list/show: JSON")
    calls.add_argument("--format", choices=["jsonl", "csv"], default="jsonl", help="export: jsonl (default) or csv")
    calls.add_argument("--dry-run", action="store_true", help="purge: say what would be deleted, delete nothing")
    calls.set_defaults(func=_calls)

    health = sub.add_parser("health", help="probe a node with SIP OPTIONS (exit 0 on 200 OK): the container's HEALTHCHECK")
    health.add_argument("--sip", metavar="HOST:PORT", help="the node's SIP UDP address (default: sip.listen, a wildcard probed on loopback)")
    health.add_argument("--config", help="YAML merged over config/default.yaml")
    health.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer (default 2)")
    health.set_defaults(func=_health)

    from .models.commands import add_parser as add_models_parser

    add_models_parser(sub).set_defaults(func=_models)

    call = sub.add_parser("call", help="dial a SIP URI, speak WAV files, record the agent")
    call.add_argument("uri", help="sip:user@host:port")
    call.add_argument("--play", action="append", metavar="WAV", help="caller audio; repeat for several turns")
    call.add_argument("--record", metavar="WAV", help="write the agent's audio here (PCM16 8 kHz)")
    call.add_argument("--duration", type=float, metavar="S", help="hang up after S seconds (default: after the last reply)")
    call.add_argument("--local-host", default="127.0.0.1", help="address to bind and advertise (default 127.0.0.1)")
    call.add_argument("--no-wait", action="store_true", help="play the first file at once, over the greeting")
    call.add_argument("--dtmf", metavar="DIGITS", help="send these digits (RFC 4733) right after the answer")
    call.add_argument("--echo-db", type=float, metavar="DB", help="simulate line echo: send the agent back at this level (e.g. -10)")
    call.add_argument("--echo-delay-ms", type=int, default=150, metavar="MS", help="echo delay (default 150)")
    call.add_argument("-v", "--verbose", action="store_true")
    call.set_defaults(func=_call)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bridge`` console script.

    A bad setting (file, environment or option) prints one line naming it on
    stderr and exits with status 2, like a bad option does.
    """
    from .offline import lock_down

    args = build_parser().parse_args(argv)  # argparse loads no model library
    lock_down(hub=args.command == "models" and args.action == "pull")  # before any model library is imported
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"bridge {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
