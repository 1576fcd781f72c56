"""The records the SIP core keeps, sans-IO: transactions (RFC 3261 section 17) and calls
(their dialog, section 12, and the UA-core state), plus the timer base values.

Plain dataclasses; only :class:`bridge.sip.core.SipCore` and its parts
(:mod:`.uac`, :mod:`.session_timer`) change them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sipmessage import URI, Address, Request

from .message import ParsedMessage

#: Methods this UA implements (sent in ``Allow``, RFC 3261 section 20.5).
ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE", "REFER", "NOTIFY")

Addr = tuple[str, int]


class SipUsageError(Exception):
    """The user of :class:`SipCore` called it wrongly (unknown call, wrong state)."""


@dataclass
class Timers:
    """RFC 3261 timer base values in seconds (section 17.1.1.1, table 4)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


# ---------------------------------------------------------------------------
# Transactions (RFC 3261 section 17)
# ---------------------------------------------------------------------------


@dataclass
class ServerTransaction:
    """An INVITE (IST, 17.2.1) or non-INVITE (NIST, 17.2.2) server transaction.

    States: ``proceeding``/``trying`` -> ``completed`` -> (IST) ``confirmed``
    -> ``terminated``. ``timers`` maps a timer letter to its deadline.
    """

    key: tuple[str, str, str]
    request: Request
    parsed: ParsedMessage
    source: Addr
    state: str
    last_response: bytes | None = None
    response_dest: Addr | None = None
    timers: dict[str, float] = field(default_factory=dict)
    g_interval: float = 0.0

    @property
    def is_invite(self) -> bool:
        return self.request.method == "INVITE"


@dataclass
class ClientTransaction:
    """An INVITE (ICT, 17.1.1) or non-INVITE (NICT, 17.1.2) client transaction."""

    key: tuple[str, str]
    request: Request
    data: bytes
    dest: Addr
    call_id: str
    state: str  # calling/trying, proceeding, completed, terminated
    timers: dict[str, float] = field(default_factory=dict)
    interval: float = 0.0
    ack: bytes | None = None
    #: Our tag in the call this transaction belongs to: a later call that reuses the
    #: Call-ID (a peer's bug, or hostile) is not this one.
    local_tag: str = ""

    @property
    def is_invite(self) -> bool:
        return self.request.method == "INVITE"


@dataclass
class CallState:
    """One call: its dialog (RFC 3261 section 12) and the UA-core state.

    ``role`` is ``uas`` or ``uac``. ``state``: ``incoming``/``calling`` (no
    final response yet), ``early`` (UAC got a provisional), ``answered``
    (2xx sent, waiting for ACK), ``confirmed``, ``terminated``.
    """

    call_id: str
    role: str
    local_tag: str
    local_uri: Address
    remote_uri: Address
    remote_target: URI
    peer: Addr
    state: str
    remote_tag: str | None = None
    local_seq: int = 1
    remote_seq: int | None = None
    route_set: list[Address] = field(default_factory=list)
    invite_tx: tuple | None = None
    # UAS 2xx retransmission (13.3.1.4)
    ok_data: bytes | None = None
    ok_dest: Addr | None = None
    ok_next: float | None = None
    ok_interval: float = 0.0
    ok_give_up: float = 0.0
    last_answer_sdp: bytes = b""
    ok_cseq: int = 0
    # re-INVITE/UPDATE from the peer waiting for answer_update()
    update_tx: tuple | None = None
    # our re-INVITE in progress
    reinvite_tx: tuple | None = None
    # RFC 4028 session timer: interval (s), who refreshes ("uac"/"uas" as in the
    # dialog-creating INVITE), the next deadline and what to do then.
    se_interval: int = 0
    se_refresher: str = ""
    se_deadline: float | None = None
    peer_supports_timer: bool = False
    # UAC
    invite_request: Request | None = None
    ack_data: bytes | None = None
    cancel_pending: bool = False
    provisional_seen: bool = False
    credentials: tuple[str, str] | None = None
    auth_tried: bool = False
