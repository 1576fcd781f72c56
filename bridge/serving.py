"""``bridge serve`` and ``bridge dial``: settings from the command line, the models, the
server (:class:`bridge.server.BridgeServer`).

Both commands take the same server options; ``dial`` adds the number to call. The
options become settings overrides before the settings are validated, so a bad value
stops the command with one line naming it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

from .config import Settings, load_settings, parse_hostport
from .runtime import run, setup_logging

log = logging.getLogger("bridge")

#: ``--option`` -> (settings section, key); for both commands unless marked serve-only.
_OPTIONS = {
    "sip_listen": ("sip", "listen"),
    "sip_tcp_listen": ("sip", "tcp_listen"),
    "sip_tls_listen": ("sip", "tls_listen"),
    "tls_cert": ("sip", "tls_cert"),
    "tls_key": ("sip", "tls_key"),
    "public_host": ("sip", "public_host"),
    "rtp_ports": ("media", "rtp_ports"),
    "metrics_listen": ("observability", "metrics_listen"),
    "agent": ("agent", "kind"),
    "http_listen": ("mediastreams", "http_listen"),
    "public_url": ("mediastreams", "public_url"),
    "termination_uri": ("outbound", "termination_uri"),
}


def server_options(parser: argparse.ArgumentParser, serve: bool) -> None:
    """The options ``serve`` and ``dial`` share; ``serve`` adds the listeners a dial needs not."""
    parser.add_argument("--config", help="YAML file merged over config/default.yaml")
    parser.add_argument(
        "--preset", help="a model preset from config/presets/ (cpu-small, cpu-better, gpu), laid under --config"
    )
    parser.add_argument("--sip-listen", metavar="HOST:PORT", help="SIP UDP address (default 0.0.0.0:5060)")
    parser.add_argument("--public-host", metavar="IP", help="address for Via/Contact/SDP (behind NAT: the public IP)")
    parser.add_argument("--rtp-ports", metavar="LOW-HIGH", help="RTP port range (default 10000-20000)")
    parser.add_argument(
        "--metrics-listen", metavar="HOST:PORT", help="Prometheus /metrics address (default 127.0.0.1:9090)"
    )
    parser.add_argument("--agent", choices=["llm", "echo"], help="the agent (echo: play the caller back, no models)")
    if serve:
        parser.add_argument("--sip-tcp-listen", metavar="HOST:PORT", help="also serve SIP over TCP here")
        parser.add_argument(
            "--sip-tls-listen", metavar="HOST:PORT", help="also serve SIP over TLS here (needs --tls-cert/--tls-key)"
        )
        parser.add_argument("--tls-cert", metavar="PEM", help="TLS certificate chain")
        parser.add_argument("--tls-key", metavar="PEM", help="TLS private key")
        parser.add_argument(
            "--http-listen", metavar="HOST:PORT", help="Media Streams mode: serve POST /twiml and WS /media-stream here"
        )
        parser.add_argument(
            "--public-url",
            metavar="URL",
            help="the base URL Twilio calls (https://...), for the Stream URL and signatures",
        )


def add_parsers(sub) -> None:
    """The ``serve`` and ``dial`` sub-commands on the ``bridge`` parser."""
    serve = sub.add_parser("serve", help="answer SIP calls (and Media Streams sessions) with the configured agent")
    server_options(serve, serve=True)
    serve.set_defaults(func=_serve)
    dial = sub.add_parser("dial", help="call NUMBER through outbound.termination_uri and run the agent on it")
    dial.add_argument("number", help="E.164 number, e.g. +14155550100")
    dial.add_argument("--termination-uri", metavar="URI", help="override outbound.termination_uri")
    dial.add_argument(
        "--amd",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="detect whether a person or a machine answered before the agent speaks; leave outbound.voicemail_message on a machine (default: outbound.amd.enabled)",
    )
    dial.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a callee variable for the greeting, message and persona (repeat)",
    )
    server_options(dial, serve=False)
    dial.set_defaults(func=_dial)


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings: ``--config`` over the defaults, the preset under it, the options on top.

    Raises:
        ConfigError: a bad setting, or a TLS certificate that cannot be loaded.
    """
    overrides: dict = {}
    for option, (section, key) in _OPTIONS.items():
        value = getattr(args, option, None)
        if value:
            overrides.setdefault(section, {})[key] = value
    settings = load_settings(args.config, overrides, preset=getattr(args, "preset", None))
    if settings.sip.tls_listen:
        from .server import tls_server_context

        tls_server_context(settings)  # a bad certificate is a bad setting: refuse before anything starts
    setup_logging(settings.observability.log_level)
    if settings.privacy.redact:
        from .privacy import install_log_redaction

        install_log_redaction(settings.privacy.redact)
    return settings


def prepare(settings: Settings):
    """Load the engines (unless the echo agent needs none) and start /metrics."""
    from .memory import limit_arenas
    from .observability.metrics import Metrics

    limit_arenas()  # before the model libraries start their threads

    engines = None
    if settings.agent.kind != "echo":
        from .warmup import load_warm_engines

        started = time.monotonic()
        engines = load_warm_engines(settings)
        m = settings.models
        log.info(
            "models: ASR %s, LLM %s, TTS %s on %s, loaded and warmed in %.1f s",
            m.asr,
            m.llm,
            m.tts,
            engines.device,
            time.monotonic() - started,
        )
    else:
        log.info("models: none (agent echo)")
    metrics = Metrics()
    if settings.observability.metrics_listen:
        host, port = parse_hostport(settings.observability.metrics_listen, 9090)
        metrics.serve(host, port)
        log.info("metrics: http://%s:%d/metrics", host, port)
    if not settings.storage.url:
        log.info("records: off (storage.url is empty)")
    return engines, metrics


def _serve(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    engines, metrics = prepare(settings)
    from .server import BridgeServer

    async def main() -> None:
        server = BridgeServer(settings, engines, metrics)
        await server.start()
        print("bridge: ready", flush=True)
        await server.run_forever()

    run(main())
    log.info("bridge: stopped")
    return 0


def _dial(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    engines, metrics = prepare(settings)
    from .calls.dialing import DialOptions
    from .server import BridgeServer

    variables = {}
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            print(f"bridge dial: --var {item!r} is not NAME=VALUE", file=sys.stderr)
            return 2
        variables[name.strip()] = value
    outcome: dict[str, str] = {}
    options = DialOptions(
        amd=settings.outbound.amd.enabled if args.amd is None else args.amd,
        variables=variables,
        on_outcome=lambda o, status: outcome.setdefault("outcome", o),
    )

    async def main() -> int:
        server = BridgeServer(settings, engines, metrics)
        await server.start()
        try:
            call_id = await server.dial(args.number, options=options)
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
            print(f"call ended: {outcome.get('outcome', 'human')}", flush=True)
            return 0
        print(f"call failed: {failure or 'not answered'}", flush=True)
        return 1

    return run(main())
