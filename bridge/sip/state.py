"""The records the SIP core keeps, sans-IO: calls (their dialog, RFC 3261 section 12, and
the UA-core state) and the timer base values. Transactions own their state
(:mod:`.transaction`).

Plain dataclasses; only :class:`bridge.sip.core.SipCore` and its parts
(:mod:`.dialog`, :mod:`.uac`) change them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sipmessage import URI, Address, Request

#: Methods this UA implements (sent in ``Allow``, RFC 3261 section 20.5).
ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE", "REFER", "NOTIFY")

Addr = tuple[str, int]
#: A transaction's key: ``(branch, sent-by, method)`` for a server transaction (RFC 3261
#: section 17.2.3), ``(branch, method)`` for a client one (17.1.3).
TxKey = tuple[str, ...]


class SipUsageError(Exception):
    """The user of :class:`SipCore` called it wrongly (unknown call, wrong state)."""


@dataclass
class Timers:
    """RFC 3261 timer base values in seconds (section 17.1.1.1, table 4)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


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
    invite_tx: TxKey | None = None
    # UAS 2xx retransmission (13.3.1.4)
    ok_data: bytes | None = None
    ok_dest: Addr | None = None
    ok_next: float | None = None
    ok_interval: float = 0.0
    ok_give_up: float = 0.0
    last_answer_sdp: bytes = b""
    ok_cseq: int = 0
    # re-INVITE/UPDATE from the peer waiting for answer_update()
    update_tx: TxKey | None = None
    # our re-INVITE in progress
    reinvite_tx: TxKey | None = None
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
