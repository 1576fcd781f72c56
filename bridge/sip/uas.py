"""The UAS: an incoming call from its INVITE to its ACK (RFC 3261 sections 13.3 and 17.2),
CANCEL (9.2) and the 2xx answer that the UA core retransmits until the ACK (13.3.1.4).
Sans-IO, composed into :class:`bridge.sip.core.SipCore` with the same outbox,
transactions and dialogs.
"""

from __future__ import annotations

from sipmessage import Request

from . import events as ev
from . import responses
from .addressing import LocalAddress
from .dialog import Dialogs
from .message import ParsedMessage, new_tag
from .outbox import Outbox
from .state import ALLOWED_METHODS, Addr, CallState, SipUsageError, Timers
from .transaction import ServerTransaction, Transactions, TxState


class Uas:
    """Incoming calls of one core.

    Args:
        outbox: the core's output.
        transactions: the core's transactions.
        dialogs: the core's dialogs.
        address: our address in Contact.
        user_agent: the ``Server`` value.
        timers: the RFC 3261 base values (2xx retransmission).
    """

    def __init__(
        self,
        outbox: Outbox,
        transactions: Transactions,
        dialogs: Dialogs,
        address: LocalAddress,
        user_agent: str,
        timers: Timers,
    ) -> None:
        self._outbox = outbox
        self._tx = transactions
        self._dialogs = dialogs
        self._address = address
        self._user_agent = user_agent
        self._t = timers

    def answer_invite(self, call: CallState, tx: ServerTransaction, sdp: bytes, now: float) -> None:
        """200 OK to an INVITE or re-INVITE; the UA core retransmits it until ACK (13.3.1.4)."""
        extra = [
            ("Contact", str(self._address.contact(call.peer))),
            ("Allow", ", ".join(ALLOWED_METHODS)),
            ("Supported", "timer"),
        ]
        extra += self._dialogs.session_timer_headers(call, now)
        data = responses.to(tx, 200, call.local_tag, self._user_agent, body=sdp, extra=extra)
        self._tx.respond(tx, data, now)
        # RFC 6026 section 7.1: the IST moves to Accepted (absorbing INVITE
        # retransmissions) for Timer L = 64*T1; the UA core retransmits the 2xx.
        tx.accept(now)
        call.last_answer_sdp = sdp
        call.ok_data = data
        call.ok_cseq = tx.parsed.cseq.sequence
        call.ok_dest = tx.response_dest
        call.ok_interval = self._t.t1
        call.ok_next = now + self._t.t1
        call.ok_give_up = now + 64 * self._t.t1

    def incoming(self, call_id: str) -> tuple[CallState, ServerTransaction]:
        """The unanswered incoming call ``call_id`` and its INVITE transaction.

        Raises:
            SipUsageError: there is no such call.
        """
        call = self._dialogs.get(call_id)
        if call is None or call.role != "uas" or call.state != "incoming":
            raise SipUsageError(f"no unanswered incoming call {call_id!r}")
        tx = self._tx.server(call.invite_tx)
        if tx is None:
            raise SipUsageError(f"call {call_id!r} has no INVITE transaction")
        return call, tx

    def on_invite(self, parsed: ParsedMessage, tx: ServerTransaction, source: Addr, now: float) -> None:
        """An INVITE outside a dialog: 100 Trying, then the call is held and handed to the
        call layer (:class:`~.events.IncomingCall`), or refused (482 merged, 422 Min-SE)."""
        request: Request = parsed.message  # type: ignore[assignment]
        if parsed.call_id in self._dialogs:
            # Same Call-ID, new transaction, no To tag: a merged request (8.2.2.2).
            self._dialogs.respond(tx, 482, None, now)
            return
        contact = request.contact
        remote_target = contact[0].uri if contact else parsed.from_addr.uri
        call = CallState(
            call_id=parsed.call_id,
            role="uas",
            local_tag=new_tag(),
            local_uri=parsed.to_addr,
            remote_uri=parsed.from_addr,
            remote_tag=parsed.from_tag,
            remote_target=remote_target,
            peer=source,
            remote_seq=parsed.cseq.sequence,
            route_set=list(request.record_route),
            state="incoming",
            invite_tx=tx.key,
        )
        # 100 Trying at once (17.2.1; Twilio fails over after 4 s of silence).
        self._dialogs.respond(tx, 100, None, now)
        if self._dialogs.read_session_expires(call, request) is not None:
            # RFC 4028 section 9: 422 with our Min-SE.
            self._dialogs.respond(tx, 422, call, now, extra=[("Min-SE", str(self._dialogs.min_se))])
            return
        self._dialogs.add(call)
        meta = {}
        for name in request.headers.keys():
            lname = name.lower()
            if lname.startswith("x-") or lname in ("p-asserted-identity", "diversion", "user-agent"):
                meta[name] = request.headers.get(name) or ""
        self._outbox.emit(
            ev.IncomingCall(
                call_id=call.call_id,
                offer=request.body,
                content_type=request.headers.get("Content-Type"),
                source=source,
                request_uri=str(request.uri),
                from_uri=str(parsed.from_addr.uri),
                to_uri=str(parsed.to_addr.uri),
                headers=meta,
                authorization=request.headers.get("Authorization"),
            )
        )

    def on_cancel(self, parsed: ParsedMessage, tx: ServerTransaction, now: float) -> None:
        """CANCEL (9.2): 200, and 487 to the INVITE it matches while unanswered; else 481."""
        invite_tx = self._tx.server(self._tx.server_key(parsed, "INVITE"))
        call = self._dialogs.get(parsed.call_id)
        if (
            invite_tx is None
            or invite_tx.parsed.call_id != parsed.call_id
            or (call is not None and call.invite_tx != invite_tx.key)
        ):
            # 9.2: no INVITE transaction matches (the branch may match another call's).
            self._dialogs.respond(tx, 481, None, now)
            return
        self._dialogs.respond(tx, 200, call, now)
        if call is not None and call.state == "incoming" and invite_tx.state is TxState.PROCEEDING:
            # 9.2: the INVITE gets 487 Request Terminated.
            self._dialogs.respond(invite_tx, 487, call, now)
            self._dialogs.end(call, "cancelled", 487)

    def on_ack(self, parsed: ParsedMessage, tx: ServerTransaction | None, now: float) -> None:
        """An ACK: of a non-2xx final (its transaction's), or of our 2xx (the dialog's:
        :class:`~.events.CallConfirmed`); anything else is dropped and counted."""
        if tx is not None and tx.acknowledge(now):
            return  # the ACK of a non-2xx final (17.2.1)
        call = self._dialogs.get(parsed.call_id)
        if call is not None and parsed.to_tag == call.local_tag:
            if call.ok_data is not None and parsed.cseq.sequence == call.ok_cseq:
                call.ok_next = None
                call.ok_data = None
                if call.state == "answered":
                    call.state = "confirmed"
                    self._outbox.emit(ev.CallConfirmed(call.call_id))
            return
        self._outbox.drop("stray_ack", (parsed.via[0].host, parsed.via[0].port or 5060))
