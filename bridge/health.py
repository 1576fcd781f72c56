"""``bridge health``: is this node answering SIP? (the container's HEALTHCHECK).

It sends one out-of-dialog OPTIONS (RFC 3261 section 11) over UDP to the node's SIP
address, as Kamailio's dispatcher and Twilio's trunk probes do, and waits for a final
response. Exit status 0 on ``200 OK``, 1 on anything else or no answer.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

from sipmessage import URI, Address, Message, Parameters, Response, Via

from .config import load_settings, parse_hostport
from .sip.message import build_request, new_branch, new_call_id, new_tag


def sip_options(host: str, port: int, timeout: float = 2.0) -> int:
    """Send OPTIONS to ``host:port`` (UDP) from an ephemeral port on the same address
    family; return the final response's status code.

    Raises:
        TimeoutError: no final response within ``timeout`` seconds (one datagram, no
            retransmission: a node that drops it is not healthy).
        OSError: the address cannot be reached from here.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        local_host, local_port = sock.getsockname()[:2]
        bracket = lambda h: f"[{h}]" if ":" in h else h
        target = URI(scheme="sip", host=bracket(host), port=port)
        me = URI(scheme="sip", user="health", host=bracket(local_host), port=local_port)
        branch = new_branch()
        request = build_request(
            "OPTIONS",
            target,
            via=Via.parse(f"SIP/2.0/UDP {bracket(local_host)}:{local_port};branch={branch};rport"),
            from_addr=Address(uri=me, parameters=Parameters(tag=new_tag())),
            to_addr=Address(uri=target),
            call_id=new_call_id(local_host),
            cseq=1,
            extra_headers=[("Accept", "application/sdp")],
        )
        sock.send(bytes(request))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(65535)
            except TimeoutError:
                break
            try:
                message = Message.parse(data)
            except ValueError:
                continue
            if (
                isinstance(message, Response)
                and message.via
                and message.via[0].parameters.get("branch") == branch
                and message.code >= 200
            ):
                return message.code
        raise TimeoutError(f"no answer to OPTIONS from {host}:{port} within {timeout:g} s")


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``health`` sub-command on the ``bridge`` parser."""
    health = sub.add_parser(
        "health", help="probe a node with SIP OPTIONS (exit 0 on 200 OK): the container's HEALTHCHECK"
    )
    health.add_argument(
        "--sip",
        metavar="HOST:PORT",
        help="the node's SIP UDP address (default: sip.listen, a wildcard probed on loopback)",
    )
    health.add_argument("--config", help="YAML merged over config/default.yaml")
    health.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer (default 2)")
    health.set_defaults(func=_health)
    return health


def _health(args: argparse.Namespace) -> int:
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
