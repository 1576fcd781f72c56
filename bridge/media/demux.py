"""What else arrives on an RTP port: STUN and DTLS, told apart by the first byte (RFC 7983).

Endpoints that speak ICE or keep NAT bindings open send STUN to the RTP port (Linphone
sends Binding requests there even when it offered no ICE); a WebRTC peer starts DTLS
there. Neither is RTP, and neither is malformed: RFC 7983 section 7 gives the first
byte's ranges: 0-3 STUN, 20-63 DTLS, 128-191 RTP and RTCP.

A Binding request from the peer is answered with a Binding success response carrying
its address as seen from here (XOR-MAPPED-ADDRESS, RFC 8489 section 14.2), so a peer
checking its NAT binding gets what it asked for; the message codec is aioice's. A
request that needs credentials (ICE connectivity checks carry USERNAME and
MESSAGE-INTEGRITY) cannot be answered without an ICE password, which a SIP call does
not negotiate here: it is counted and left unanswered.
"""

from __future__ import annotations

from aioice import stun


def classify(data: bytes) -> str:
    """``stun``, ``dtls``, ``rtp`` (RTP or RTCP) or ``other``, by the first byte (RFC 7983 section 7)."""
    if not data:
        return "other"
    first = data[0]
    if first <= 3:
        return "stun"
    if 20 <= first <= 63:
        return "dtls"
    if 128 <= first <= 191:
        return "rtp"
    return "other"


def binding_response(data: bytes, addr: tuple[str, int]) -> bytes | None:
    """The Binding success response to ``data`` when it is a Binding request that needs
    no credentials, with ``addr`` (host, port) as XOR-MAPPED-ADDRESS; else ``None``
    (not STUN, not a request, or an ICE check)."""
    try:
        message = stun.parse_message(data)
    except (ValueError, KeyError, IndexError):  # not a STUN message aioice can read
        return None
    if message.message_method != stun.Method.BINDING or message.message_class != stun.Class.REQUEST:
        return None
    if "USERNAME" in message.attributes or "MESSAGE-INTEGRITY" in message.attributes:
        return None
    response = stun.Message(
        message_method=stun.Method.BINDING, message_class=stun.Class.RESPONSE, transaction_id=message.transaction_id
    )
    response.attributes["XOR-MAPPED-ADDRESS"] = (addr[0], addr[1])
    return bytes(response)
