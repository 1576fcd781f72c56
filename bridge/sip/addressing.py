"""Which address we advertise to a peer (Via, Contact, SDP ``c=``).

The address written into Via, Contact and the SDP ``c=`` line must be one the
far end can reach, or it sends its responses and media nowhere (RFC 3261
section 18.2.2, RFC 3264 section 5). In order:

1. ``sip.public_host`` when configured (behind NAT: the public IP);
2. the listen address when it is a specific address;
3. on a wildcard bind (``0.0.0.0`` / ``::``), the local address of the route to
   that peer: the source address the kernel would pick to reach it, found by
   ``connect()`` on an unbound UDP socket, which sends nothing (what Asterisk and
   Kamailio do for ``0.0.0.0`` binds).

No name is ever resolved here: a peer given as a host name (not an IP literal)
gets the fallback address.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import socket
import struct

log = logging.getLogger("bridge.sip")

WILDCARDS = ("0.0.0.0", "::", "")
_SIOCGIFADDR = 0x8915


def is_ip(host: str) -> bool:
    """Whether ``host`` is an IPv4/IPv6 literal (brackets allowed)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def route_source(peer: str) -> str:
    """The local address the kernel would use as source towards ``peer`` (an IP literal).

    Nothing is sent: ``connect()`` on a UDP socket only selects a route.

    Raises:
        ValueError: ``peer`` is not an IP literal.
        OSError: no route to ``peer`` (``ENETUNREACH``), e.g. only loopback exists.
    """
    host = peer.strip("[]")
    addr = ipaddress.ip_address(host)  # ValueError for names: never resolved
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((host, 9))
        return sock.getsockname()[0]


def interface_addresses() -> list[tuple[str, str]]:
    """``(interface, IPv4 address)`` for every interface that has one (``SIOCGIFADDR``)."""
    out = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                data = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # no IPv4 address on it
            out.append((name, socket.inet_ntoa(data[20:24])))
    return out


class Advertiser:
    """Picks the address advertised to each peer. See the module docstring.

    Args:
        public_host: ``sip.public_host`` (empty: not configured).
        bind_host: the SIP listen host (a wildcard enables per-peer routing).
    """

    def __init__(self, public_host: str, bind_host: str) -> None:
        self.public_host = public_host
        self.bind_host = bind_host
        self.per_peer = not public_host and bind_host in WILDCARDS

    def fallback(self) -> str:
        """The address used when the peer is not an IP literal: the first
        non-loopback interface address, else ``127.0.0.1``."""
        if not self.per_peer:
            return self.public_host or self.bind_host
        for _name, address in interface_addresses():
            if not address.startswith("127."):
                return address
        return "127.0.0.1"

    def for_peer(self, peer: str) -> str:
        """The address to advertise to ``peer`` (its IP, from the packet source or SDP).

        Raises:
            OSError: wildcard bind, no ``public_host``, and no route to ``peer``.
        """
        if not self.per_peer:
            return self.public_host or self.bind_host
        if not is_ip(peer):
            return self.fallback()
        return route_source(peer)

    def describe(self) -> tuple[str, bool]:
        """A line for the start-up log, and whether only loopback addresses exist."""
        if not self.per_peer:
            return f"{self.public_host or self.bind_host} (configured)", False
        addresses = interface_addresses()
        external = [f"{a} ({n})" for n, a in addresses if not a.startswith("127.")]
        if not external:
            return "127.0.0.1 only (no other interface address)", True
        return "per peer, the source address of the route to it: " + ", ".join(external), False
