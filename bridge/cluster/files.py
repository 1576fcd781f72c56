"""The list files Kamailio reads: dispatcher destinations and the INVITE allowlist.

Formats (Kamailio 5.6 module documentation):

- dispatcher ``list_file``: ``SETID DESTINATION FLAGS PRIORITY ATTRIBUTES`` per line;
  ``weight=N`` in the attributes is the node's share with algorithm 9 (weight-based).
- permissions ``address_file``: ``GROUP IP MASK PORT TAG`` per line; group 1 is
  checked by ``allow_source_address("1")`` in ``deploy/kamailio/kamailio.cfg``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from ..sip.policy import load_networks

#: Twilio's signalling ranges (Twilio's "IP addresses" page for SIP trunking), kept in one file for the node's own
#: allowlist preset and for Kamailio's.
TWILIO_SIGNALING = Path(__file__).resolve().parents[2] / "config" / "twilio-signaling.yaml"


@dataclass(frozen=True)
class Destination:
    """One node as Kamailio sees it.

    Attributes:
        host: the node's SIP address (IP), reachable from Kamailio.
        port: its SIP UDP port.
        weight: share of new calls, 1-100 (dispatcher algorithm 9).
        name: ``duid``, the node's name in Kamailio's logs and RPC output.
    """

    host: str
    port: int
    weight: int = 50
    name: str = ""

    @property
    def uri(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"sip:{host}:{self.port};transport=udp"


def dispatcher_list(nodes: list[Destination], setid: int = 1) -> str:
    """The text of a dispatcher ``list_file`` with ``nodes`` in set ``setid``.

    Raises:
        ValueError: no nodes, or a weight outside 1-100.
    """
    if not nodes:
        raise ValueError("a cluster needs at least one node")
    lines = ["# SETID DESTINATION FLAGS PRIORITY ATTRIBUTES (written by bridge.cluster)"]
    for i, node in enumerate(nodes, 1):
        if not 1 <= node.weight <= 100:
            raise ValueError(f"node {node.uri}: weight {node.weight} is not in 1-100")
        lines.append(f"{setid} {node.uri} 0 0 weight={node.weight};duid={node.name or f'node{i}'}")
    return "\n".join(lines) + "\n"


def address_list(allow: list[str], twilio: bool = True, group: int = 1) -> str:
    """The text of a permissions ``address_file``: Twilio's signalling ranges (unless
    ``twilio`` is false) and each CIDR or ``@file.yaml`` in ``allow``, in group ``group``.

    Raises:
        ValueError: an entry is not a network.
    """
    tagged = [(net, "twilio") for net in (load_networks([f"@{TWILIO_SIGNALING}"]) if twilio else [])]
    tagged += [(net, "operator") for net in load_networks(list(allow))]
    lines = ["# GROUP IP MASK PORT TAG (written by bridge.cluster)"]
    for net, tag in tagged:
        lines.append(f"{group} {net.network_address} {net.prefixlen} 0 {tag}")
    return "\n".join(lines) + "\n"


def node_allowlist(kamailio_host: str) -> list[str]:
    """What a node behind Kamailio accepts INVITEs from: Kamailio's address only
    (``127.0.0.1`` for a wildcard bind with the nodes on loopback)."""
    ip = ipaddress.ip_address(kamailio_host)
    if ip.is_unspecified:
        return ["127.0.0.1/32"]
    return [f"{ip}/{ip.max_prefixlen}"]


def main(argv: list[str] | None = None) -> int:
    """``python -m bridge.cluster lists --node HOST:PORT ... [--allow CIDR ...] --out DIR``:
    write ``dispatcher.list`` and ``address.list`` for Kamailio on real machines."""
    import argparse
    import sys

    from ..config import parse_hostport

    p = argparse.ArgumentParser(
        prog="python -m bridge.cluster lists", description="Write Kamailio's dispatcher.list and address.list."
    )
    p.add_argument(
        "--node", action="append", default=[], metavar="HOST:PORT[,WEIGHT]", help="a bridge node's SIP address (repeat)"
    )
    p.add_argument(
        "--allow", action="append", default=[], metavar="CIDR", help="also accept INVITEs from here (repeat)"
    )
    p.add_argument(
        "--no-twilio-ranges", action="store_true", help="leave Twilio's signalling ranges out of the allowlist"
    )
    p.add_argument("--out", required=True, help="directory for the two files")
    args = p.parse_args(argv)
    try:
        nodes = []
        for i, text in enumerate(args.node, 1):
            address, _, weight = text.partition(",")
            host, port = parse_hostport(address, 5060)
            nodes.append(Destination(host, port, int(weight) if weight else 50, f"node{i}"))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if nodes:
            (out / "dispatcher.list").write_text(dispatcher_list(nodes))
        (out / "address.list").write_text(address_list(args.allow, twilio=not args.no_twilio_ranges))
    except (ValueError, OSError) as exc:
        print(f"bridge.cluster lists: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {'dispatcher.list and ' if nodes else ''}address.list in {out}")
    return 0
