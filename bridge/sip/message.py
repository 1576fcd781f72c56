"""SIP message helpers on top of ``sipmessage``.

Parsing is ``sipmessage.Message.parse``; this module only adds the checks that
RFC 3261 requires before a message may enter the transaction layer
(section 8.2 and 18.3), and builders for responses and requests.

Everything here is pure: bytes in, objects out, no I/O.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sipmessage import URI, Address, CSeq, Message, Request, Response, Via

#: Branch magic cookie, RFC 3261 section 8.1.1.7.
BRANCH_COOKIE = "z9hG4bK"

#: Reason phrases for the status codes the bridge sends (RFC 3261 section 21).
REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    422: "Session Interval Too Small",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
}


class SipParseError(Exception):
    """A datagram that is not a SIP message we can answer.

    ``status`` is the response code to send when the message was a request
    whose Via, From, To, Call-ID and CSeq could be read (so a response can be
    routed, RFC 3261 section 8.2 / 18.3); ``None`` when the datagram must be
    dropped silently. ``reason`` is a short machine-friendly label used as the
    drop counter label and in the single log line.
    """

    def __init__(self, reason: str, status: int | None = None, request: Request | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.request = request


@dataclass(frozen=True)
class ParsedMessage:
    """A message that passed the RFC 3261 section 8.2 / 18.3 checks.

    Attributes:
        message: the ``sipmessage`` Request or Response.
        via: the parsed Via list, topmost first.
        cseq: the parsed CSeq.
        call_id: the Call-ID value.
        from_addr: the parsed From address (``tag`` in its parameters).
        to_addr: the parsed To address.
    """

    message: Request | Response
    via: list[Via]
    cseq: CSeq
    call_id: str
    from_addr: Address
    to_addr: Address

    @property
    def is_request(self) -> bool:
        return isinstance(self.message, Request)

    @property
    def branch(self) -> str | None:
        return self.via[0].parameters.get("branch") if self.via else None

    @property
    def from_tag(self) -> str | None:
        return self.from_addr.parameters.get("tag")

    @property
    def to_tag(self) -> str | None:
        return self.to_addr.parameters.get("tag")


def parse_datagram(data: bytes, max_size: int) -> ParsedMessage:
    """Parse and validate one SIP message received as a UDP datagram.

    Args:
        data: the datagram payload (bytes, CRLF line endings).
        max_size: datagrams longer than this many bytes are refused.

    Returns:
        A :class:`ParsedMessage`.

    Raises:
        SipParseError: the datagram is not an acceptable SIP message. Its
            ``status`` is 400/505 when a response can be routed back
            (RFC 3261 sections 8.2.2, 18.3), else ``None`` (drop).
    """
    if len(data) > max_size:
        raise SipParseError("oversized")
    if not data.strip(b"\r\n"):
        # RFC 5626 section 3.5.1 keepalive (CRLF): not an error, nothing to do.
        raise SipParseError("keepalive")
    try:
        message = Message.parse(data)
    except (ValueError, UnicodeDecodeError, IndexError) as exc:
        raise SipParseError("unparseable") from exc

    request = message if isinstance(message, Request) else None
    try:
        via = message.via
        if not via:
            raise ValueError("no Via")
    except ValueError as exc:
        # Without a Via no response can be routed: drop.
        raise SipParseError("bad_via") from exc
    try:
        cseq = message.cseq
        call_id = message.call_id.strip()
        if not call_id:
            raise ValueError("empty Call-ID")
        from_addr = message.from_address
        to_addr = message.to_address
    except (KeyError, ValueError) as exc:
        raise SipParseError("bad_header", 400 if request else None, request) from exc

    if request is not None:
        if cseq.method != request.method:
            raise SipParseError("cseq_method_mismatch", 400, request)
    # RFC 3261 section 18.3: Content-Length larger than the body on UDP -> 400.
    try:
        length = message.content_length
    except ValueError as exc:
        raise SipParseError("bad_content_length", 400 if request else None, request) from exc
    if length is not None:
        if length < 0 or length > len(message.body):
            raise SipParseError("truncated_body", 400 if request else None, request)
        message.body = message.body[:length]
    return ParsedMessage(message, via, cseq, call_id, from_addr, to_addr)


def new_branch() -> str:
    """A new RFC 3261 section 8.1.1.7 branch: magic cookie + 64 random bits."""
    return BRANCH_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    """A new From/To tag (RFC 3261 section 19.3), 64 random bits."""
    return secrets.token_hex(8)


def new_call_id(host: str) -> str:
    """A new globally unique Call-ID (RFC 3261 section 8.1.1.4)."""
    return f"{secrets.token_hex(12)}@{host}"


def with_tag(address: Address, tag: str) -> Address:
    """Return ``address`` with its ``tag`` parameter set."""
    return Address(uri=address.uri, name=address.name, parameters=address.parameters.replace(tag=tag))


def build_response(
    request: Request,
    status: int,
    *,
    to_tag: str | None = None,
    reason: str | None = None,
    extra_headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    """Build a response to ``request`` per RFC 3261 section 8.2.6.

    Via, From, Call-ID and CSeq are copied verbatim; To is copied and gets
    ``to_tag`` when the request had none (never on 100 Trying). Record-Route is
    copied, values and order unchanged, into 101-299 responses: section 12.1.1, the
    UAS copies it into dialog-creating responses, so that the caller's route set
    keeps a record-routing proxy (Kamailio in front of the nodes) in the dialog.

    Args:
        request: the request being answered.
        status: the status code (100..699).
        to_tag: the UAS tag to add to To when the request's To has no tag.
        reason: reason phrase; defaults to RFC 3261's.
        extra_headers: additional (name, value) headers, in order.
        body: message body bytes.
        content_type: Content-Type of ``body`` (required when body is set).
    """
    response = Response(status, reason or REASON_PHRASES.get(status, "Unknown"))
    response.headers.setlist("Via", list(request.headers.getlist("Via")))
    response.headers.set("From", request.headers["From"])
    to_value = request.headers["To"]
    if to_tag and status != 100:
        to_addr = Address.parse(to_value)
        if "tag" not in to_addr.parameters:
            to_value = str(with_tag(to_addr, to_tag))
    response.headers.set("To", to_value)
    response.headers.set("Call-ID", request.headers["Call-ID"])
    response.headers.set("CSeq", request.headers["CSeq"])
    if 100 < status < 300:
        record_route = list(request.headers.getlist("Record-Route"))
        if record_route:
            response.headers.setlist("Record-Route", record_route)
    for name, value in extra_headers or []:
        response.headers.add(name, value)
    if body:
        response.headers.set("Content-Type", content_type or "application/sdp")
    response.headers.set("Content-Length", str(len(body)))
    response.body = body
    return response


def build_request(
    method: str,
    uri: URI,
    *,
    via: Via,
    from_addr: Address,
    to_addr: Address,
    call_id: str,
    cseq: int,
    contact: Address | None = None,
    route: list[Address] | None = None,
    extra_headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    content_type: str | None = None,
    max_forwards: int = 70,
) -> Request:
    """Build a request per RFC 3261 section 8.1.1 (header order as in its examples).

    ``cseq`` is the sequence number; the CSeq method is ``method`` (the ACK for a
    2xx uses the INVITE's number, section 13.2.2.4, which the caller passes).
    """
    request = Request(method, uri)
    request.headers.set("Via", str(via))
    request.headers.set("Max-Forwards", str(max_forwards))
    for addr in route or []:
        request.headers.add("Route", str(addr))
    request.headers.set("From", str(from_addr))
    request.headers.set("To", str(to_addr))
    request.headers.set("Call-ID", call_id)
    request.headers.set("CSeq", str(CSeq(cseq, method)))
    if contact is not None:
        request.headers.set("Contact", str(contact))
    for name, value in extra_headers or []:
        request.headers.add(name, value)
    if body:
        request.headers.set("Content-Type", content_type or "application/sdp")
    request.headers.set("Content-Length", str(len(body)))
    request.body = body
    return request
