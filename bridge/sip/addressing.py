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

import ipaddress
import logging
import socket
from collections.abc import Callable

import ifaddr
from sipmessage import URI, Address, Parameters, Via

log = logging.getLogger("bridge.sip")

WILDCARDS = ("0.0.0.0", "::", "")


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
        return str(sock.getsockname()[0])


def interface_addresses() -> list[tuple[str, str]]:
    """``(interface, address)`` for every address of every interface, IPv4 first, then
    IPv6 (``ifaddr``; IPv6 without its scope)."""
    out: list[tuple[int, str, str]] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            address = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            out.append((4 if isinstance(ip.ip, str) else 6, adapter.nice_name, address))
    return [(name, address) for _, name, address in sorted(out, key=lambda t: t[0])]


def _external(address: str) -> bool:
    """Whether ``address`` can be reached from off this host (not loopback, not link-local)."""
    ip = ipaddress.ip_address(address)
    return not (ip.is_loopback or ip.is_link_local)


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
            if _external(address):
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
        external = [f"{a} ({n})" for n, a in addresses if _external(a)]
        if not external:
            return "127.0.0.1 only (no other interface address)", True
        return "per peer, the source address of the route to it: " + ", ".join(external), False


class LocalAddress:
    """Our address in the SIP messages of one listener: Via ``sent-by`` (RFC 3261 section
    18.1.1, with RFC 3581 ``rport``), Contact (section 8.1.1.8) and the UAC's From.

    Args:
        public_host: the address to advertise when ``host_for`` gives none.
        port: the listener's port (:meth:`bound` once a port 0 bind is known).
        transport: ``UDP``, ``TCP`` or ``TLS``; Contact carries ``transport=`` on the reliable ones.
        host_for: ``peer (host, port) -> address`` to advertise to that peer
            (:meth:`Advertiser.for_peer` on a wildcard bind), or ``None``.
    """

    def __init__(
        self, public_host: str, port: int, transport: str, host_for: Callable[[tuple[str, int]], str] | None = None
    ) -> None:
        self.public_host = public_host
        self.port = port
        self.transport = transport.upper()
        self._host_for = host_for

    def bound(self, port: int) -> None:
        """The listener's socket is bound to ``port`` (it asked for port 0)."""
        self.port = port

    def host(self, peer: tuple[str, int]) -> str:
        """The address we advertise to ``peer``: ``host_for(peer)``, or ``public_host``
        when there is none or it finds no route."""
        if self._host_for is None:
            return self.public_host
        try:
            return self._host_for(peer)
        except (OSError, ValueError) as exc:
            log.debug("sip: no route to %s (%r): advertising %s", peer[0], exc, self.public_host)
            return self.public_host

    def _bracketed(self, peer: tuple[str, int]) -> str:
        host = self.host(peer)
        return f"[{host}]" if ":" in host else host

    def via(self, branch: str, peer: tuple[str, int]) -> Via:
        """Our Via for a request to ``peer`` with ``branch``, asking for ``rport``."""
        return Via.parse(f"SIP/2.0/{self.transport} {self._bracketed(peer)}:{self.port};branch={branch};rport")

    def contact(self, peer: tuple[str, int]) -> Address:
        """Our Contact for ``peer``: ``sip:bridge@HOST:PORT`` (``;transport=`` on TCP and TLS)."""
        params = Parameters(transport=self.transport.lower()) if self.transport != "UDP" else Parameters()
        return Address(
            uri=URI(scheme="sip", user="bridge", host=self._bracketed(peer), port=self.port, parameters=params)
        )

    def uri(self, user: str, peer: tuple[str, int]) -> Address:
        """``sip:USER@HOST:PORT`` as advertised to ``peer`` (the From of our INVITEs)."""
        return Address(uri=URI(scheme="sip", user=user, host=self._bracketed(peer), port=self.port))
