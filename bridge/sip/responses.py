"""How a UAS answers: building a response to a server transaction's request, and where it
goes (RFC 3261 sections 8.2.6 and 18.2.2, with RFC 3581 ``rport``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sipmessage import Request, Via

from .message import ParsedMessage, build_response, new_tag
from .state import ALLOWED_METHODS, Addr

if TYPE_CHECKING:
    from .transaction import ServerTransaction


def response_dest(parsed: ParsedMessage, source: Addr, reliable: bool) -> Addr:
    """Where responses to ``parsed`` go: back to ``source`` on a connection or with
    ``rport`` (RFC 3581), else to the source address and the top Via's port (18.2.2)."""
    top = parsed.via[0]
    if reliable or "rport" in top.parameters:
        return source
    return (source[0], top.port or 5060)


def response_vias(parsed: ParsedMessage, source: Addr) -> list[str]:
    """Via values for a response: the top Via gets ``received`` (18.2.1) and ``rport``
    (RFC 3581) filled in; the others are copied."""
    top = parsed.via[0]
    changes: dict[str, str | None] = {}
    if top.host.strip("[]") != source[0]:
        changes["received"] = source[0]
    if "rport" in top.parameters:
        changes["rport"] = str(source[1])
        changes["received"] = source[0]
    vias = [str(Via(top.transport, top.host, top.port, top.parameters.replace(**changes)))] if changes else [str(top)]
    return vias + [str(v) for v in parsed.via[1:]]


def build(
    request: Request,
    parsed: ParsedMessage,
    source: Addr,
    status: int,
    to_tag: str | None,
    user_agent: str,
    *,
    body: bytes = b"",
    extra: list[tuple[str, str]] | None = None,
) -> bytes:
    """The serialized ``status`` response to ``request`` (from ``source``): our ``to_tag``
    (a new one when ``None``), ``Server``, ``extra`` headers, ``body`` (SDP)."""
    response = build_response(
        request,
        status,
        to_tag=to_tag if to_tag is not None else new_tag(),
        extra_headers=[("Server", user_agent)] + (extra or []),
        body=body,
    )
    response.headers.setlist("Via", response_vias(parsed, source))
    return bytes(response)


def stateless(request: Request, status: int, addr: Addr, reliable: bool, user_agent: str) -> tuple[bytes, Addr] | None:
    """An answer outside any transaction (a malformed request), best effort: the bytes
    and where they go, or ``None`` (an ACK, or headers too broken to answer)."""
    if request.method == "ACK":
        return None
    try:
        response = build_response(request, status, to_tag=new_tag(), extra_headers=[("Server", user_agent)])
        via = request.via
        dest = addr if reliable or "rport" in via[0].parameters else (addr[0], via[0].port or 5060)
    except (KeyError, ValueError, IndexError):
        return None
    return bytes(response), dest


def capabilities() -> list[tuple[str, str]]:
    """``Allow``, ``Accept`` and ``Supported`` (RFC 3261 section 11.2, RFC 4028)."""
    return [("Allow", ", ".join(ALLOWED_METHODS)), ("Accept", "application/sdp"), ("Supported", "timer")]


def to(
    tx: ServerTransaction,
    status: int,
    to_tag: str | None,
    user_agent: str,
    *,
    body: bytes = b"",
    extra: list[tuple[str, str]] | None = None,
) -> bytes:
    """:func:`build` for the request of server transaction ``tx``
    (:class:`~.transaction.ServerTransaction`)."""
    return build(tx.request, tx.parsed, tx.source, status, to_tag, user_agent, body=body, extra=extra)
