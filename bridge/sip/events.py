"""Events the sans-IO SIP core hands to its user (the call layer).

A small, closed set of frozen dataclasses. Times are monotonic seconds as
passed to the core; addresses are ``(host, port)`` tuples.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class IncomingCall:
    """A new INVITE was received and ``100 Trying`` already sent (RFC 3261 section 17.2.1).

    The user must answer with :meth:`SipCore.answer`, :meth:`SipCore.ringing`
    or :meth:`SipCore.reject`.

    Attributes:
        call_id: the Call-ID, the handle for every later call on this call.
        offer: the SDP offer body (bytes, may be empty: offer in the 2xx/ACK not supported).
        content_type: the body's Content-Type, or ``None``.
        source: ``(host, port)`` the INVITE came from.
        request_uri: the Request-URI as text (``sip:+14158675309@host``).
        from_uri: the caller's URI (From header) as text.
        to_uri: the called URI (To header) as text.
        headers: selected headers as metadata: ``X-*``, ``P-Asserted-Identity``,
            ``Diversion``, ``User-Agent`` (name -> first value).
        authorization: the ``Authorization`` header value, if any (never logged).
    """

    call_id: str
    offer: bytes
    content_type: str | None
    source: tuple[str, int]
    request_uri: str
    from_uri: str
    to_uri: str
    headers: dict[str, str] = field(default_factory=dict)
    authorization: str | None = None


@dataclass(frozen=True)
class SessionUpdate:
    """The peer sent a re-INVITE or UPDATE (RFC 3261 section 14.2, RFC 3311).

    The user must answer with :meth:`SipCore.answer_update` or
    :meth:`SipCore.reject_update`.

    Attributes:
        call_id: the call.
        offer: the new SDP offer (empty for an offerless re-INVITE: then the
            answer carries our offer).
        method: ``INVITE`` or ``UPDATE``.
    """

    call_id: str
    offer: bytes
    method: str


@dataclass(frozen=True)
class TransferProgress:
    """Progress of a REFER we sent (RFC 3515): its response, then each NOTIFY's sipfrag.

    Attributes:
        call_id: the call being transferred.
        status: the REFER's response code (202 = accepted), or the status line
            carried in a NOTIFY ``message/sipfrag`` body (100, 180, 200, 486...).
        final: ``True`` once the outcome is known: success is a final 2xx
            sipfrag; failure is a REFER rejection or a non-2xx final sipfrag.
    """

    call_id: str
    status: int
    final: bool


@dataclass(frozen=True)
class CallProgress:
    """UAC: a provisional response (``status`` 101..199) to our INVITE."""

    call_id: str
    status: int


@dataclass(frozen=True)
class CallAnswered:
    """UAC: our INVITE got a 2xx; ACK already sent (RFC 3261 section 13.2.2.4).

    Attributes:
        call_id: the call.
        answer: the SDP answer body (bytes).
        source: ``(host, port)`` the 2xx came from.
    """

    call_id: str
    answer: bytes
    source: tuple[str, int]


@dataclass(frozen=True)
class CallConfirmed:
    """UAS: the ACK for our 2xx arrived; the dialog is confirmed (RFC 3261 section 13.3.1.4)."""

    call_id: str


@dataclass(frozen=True)
class CallEnded:
    """The call is over; no later event names this ``call_id``.

    Attributes:
        call_id: the call.
        reason: ``remote_bye``, ``local_bye``, ``cancelled`` (CANCEL received or
            sent before answer), ``rejected`` (a final non-2xx), ``timeout``
            (Timer B / no ACK within 64*T1), ``failed``.
        status: the SIP status involved, if any (487, 408, the rejection code).
    """

    call_id: str
    reason: str
    status: int | None = None


Event = IncomingCall | SessionUpdate | TransferProgress | CallProgress | CallAnswered | CallConfirmed | CallEnded
