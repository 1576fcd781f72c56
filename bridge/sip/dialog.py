"""Dialogs (RFC 3261 section 12): the calls the core holds, the requests sent inside them
(12.2.1.1), the requests received inside them (12.2.2: BYE, OPTIONS, re-INVITE and UPDATE,
REFER's NOTIFY), REFER (RFC 3515), session timers (RFC 4028) and the UAS's 2xx
retransmission until the ACK (13.3.1.4). Sans-IO: what is sent goes through the core's
:class:`~.outbox.Outbox` and :class:`~.transaction.Transactions`.
"""

from __future__ import annotations

import ipaddress
import logging

from sipmessage import URI, Address, Message, Request, Response

from . import events as ev
from . import responses
from .addressing import LocalAddress
from .message import ParsedMessage, build_request, new_branch, with_tag
from .outbox import Outbox
from .state import Addr, CallState
from .transaction import ServerTransaction, Transactions, TxState

log = logging.getLogger("bridge.sip")


def target_addr(uri: URI, fallback: Addr) -> Addr:
    """Where to send in-dialog requests: ``uri``'s host and port if the host is an IP
    literal (names are never resolved), else ``fallback``."""
    try:
        ipaddress.ip_address(uri.host.strip("[]"))
    except ValueError:
        return fallback
    return (uri.host.strip("[]"), uri.port or 5060)


def sipfrag_status(body: bytes) -> int | None:
    """The status code of a ``message/sipfrag`` body's status line (RFC 3420), e.g.
    ``SIP/2.0 200 OK``, read with ``sipmessage``; ``None`` when it is not one."""
    line = body.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        message = Message.parse(line + b"\r\n\r\n")
    except (ValueError, IndexError, KeyError):
        return None
    return message.code if isinstance(message, Response) and 100 <= message.code <= 699 else None


class Dialogs:
    """The calls of one core and what happens inside their dialogs.

    Args:
        outbox: the core's output.
        transactions: the core's transactions.
        address: our address in Via and Contact.
        user_agent: the ``User-Agent``/``Server`` value.
        reliable: TCP or TLS (in-dialog requests go back on the connection).
        session_expires: the session interval we ask for, seconds (RFC 4028).
        min_se: the shortest session interval we accept, seconds (RFC 4028 ``Min-SE``).
        t1, t2: RFC 3261 timer base values, seconds (2xx retransmission).
    """

    def __init__(
        self,
        outbox: Outbox,
        transactions: Transactions,
        address: LocalAddress,
        user_agent: str,
        reliable: bool,
        session_expires: int,
        min_se: int,
        t1: float,
        t2: float,
    ) -> None:
        self._outbox = outbox
        self._tx = transactions
        self._address = address
        self._user_agent = user_agent
        self._reliable = reliable
        self._session_expires = session_expires
        self.min_se = min_se
        self._t1 = t1
        self._t2 = t2
        self._calls: dict[str, CallState] = {}

    # ------------------------------------------------------------ the calls

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, call_id: str) -> bool:
        return call_id in self._calls

    def get(self, call_id: str) -> CallState | None:
        """The call ``call_id``, if it has not ended."""
        return self._calls.get(call_id)

    def ids(self) -> list[str]:
        """The Call-IDs of the calls not yet ended."""
        return list(self._calls)

    def add(self, call: CallState) -> None:
        """Hold ``call`` from now on."""
        self._calls[call.call_id] = call

    def forget(self, call_id: str) -> None:
        """Drop a call whose request turned out unreadable (no event: it never began)."""
        self._calls.pop(call_id, None)

    def end(self, call: CallState, reason: str, status: int | None = None) -> None:
        """``call`` is over: dropped, its timers stopped, :class:`~.events.CallEnded` emitted
        (unless a CANCEL of ours already told the user)."""
        if self._calls.pop(call.call_id, None) is not None:
            already_ended = call.state == "cancelling"
            call.state = "terminated"
            call.ok_next = None
            call.se_deadline = None
            if not already_ended:
                self._outbox.emit(ev.CallEnded(call.call_id, reason, status))

    # ------------------------------------------------------------ requests we send

    def build_request(
        self,
        call: CallState,
        method: str,
        *,
        cseq: int | None = None,
        extra: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Request:
        """A request inside ``call``'s dialog (12.2.1.1): the remote target as Request-URI,
        the route set, our tags, the next CSeq (or ``cseq``: the ACK of a 2xx)."""
        if cseq is None:
            call.local_seq += 1
            cseq = call.local_seq
        remote = call.remote_uri
        if call.remote_tag:
            remote = with_tag(remote, call.remote_tag)
        return build_request(
            method,
            call.remote_target,
            via=self._address.via(new_branch(), call.peer),
            from_addr=with_tag(call.local_uri, call.local_tag),
            to_addr=remote,
            call_id=call.call_id,
            cseq=cseq,
            route=call.route_set,
            extra_headers=[("User-Agent", self._user_agent)] + (extra or []),
            body=body,
        )

    def dest(self, call: CallState) -> Addr:
        """Next hop of an in-dialog request: the dialog's connection on TCP/TLS; else the
        first route of the route set (12.2.1.1, 8.1.2: a loose router such as Kamailio in
        front of the nodes; strict routers are not supported), else the remote target."""
        if call.role == "uac" or self._reliable:
            return call.peer  # UAC: set from the 2xx (first route or target); reliable: the connection
        if call.route_set:
            return target_addr(call.route_set[0].uri, call.peer)
        return target_addr(call.remote_target, call.peer)

    def send(self, call: CallState, method: str, now: float) -> None:
        """Send ``method`` (BYE) inside ``call``'s dialog."""
        self._tx.start_client(self.build_request(call, method), self.dest(call), call.call_id, call.local_tag, now)

    def reinvite(self, call: CallState, sdp: bytes, now: float) -> None:
        """Send a re-INVITE with ``sdp`` (14.1); the caller checked none is pending."""
        extra = [("Contact", str(self._address.contact(call.peer))), ("Supported", "timer")]
        if call.se_interval:
            extra.append(("Session-Expires", f"{call.se_interval};refresher={call.se_refresher}"))
        request = self.build_request(call, "INVITE", extra=extra, body=sdp)
        ctx = self._tx.start_client(request, self.dest(call), call.call_id, call.local_tag, now)
        call.reinvite_tx = ctx.key

    def refer(self, call: CallState, target: str, now: float) -> None:
        """Send REFER to ``target`` (RFC 3515); progress comes back as
        :class:`~.events.TransferProgress` (its response, then NOTIFY sipfrags)."""
        extra = [
            ("Refer-To", f"<{target}>"),
            ("Referred-By", str(Address(uri=call.local_uri.uri))),
            ("Contact", str(self._address.contact(call.peer))),
        ]
        self._tx.start_client(
            self.build_request(call, "REFER", extra=extra), self.dest(call), call.call_id, call.local_tag, now
        )

    def reinvite_pending(self, call: CallState) -> bool:
        """Whether our re-INVITE in ``call`` still waits for its final response."""
        return self._tx.client(call.reinvite_tx) is not None

    # ------------------------------------------------------------ requests we receive

    def respond(
        self,
        tx: ServerTransaction,
        status: int,
        call: CallState | None,
        now: float,
        *,
        body: bytes = b"",
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        """Answer ``tx`` with ``status`` (our tag in ``call``, or a new one)."""
        self._tx.respond(
            tx,
            responses.to(tx, status, call.local_tag if call else None, self._user_agent, body=body, extra=extra),
            now,
        )

    def on_request(self, parsed: ParsedMessage, tx: ServerTransaction, call: CallState | None, now: float) -> None:
        """A request with a To tag (12.2.2): answered, or handed on as an event."""
        request: Request = parsed.message  # type: ignore[assignment]
        method = request.method
        if call is None or parsed.to_tag != call.local_tag or (call.remote_tag and parsed.from_tag != call.remote_tag):
            self.respond(tx, 481, None, now)  # 12.2.2: no such dialog
            return
        if call.remote_seq is not None and parsed.cseq.sequence <= call.remote_seq and method != "CANCEL":
            self.respond(tx, 500, call, now, extra=[("Retry-After", "1")])  # 12.2.2: a CSeq lower than the last seen
            return
        call.remote_seq = parsed.cseq.sequence
        if method == "BYE":
            self.respond(tx, 200, call, now)
            invite_tx = self._tx.server(call.invite_tx)
            if (
                call.role == "uas"
                and call.state == "incoming"
                and invite_tx is not None
                and invite_tx.state is TxState.PROCEEDING
            ):
                # 15.1.2: BYE on an early dialog: the INVITE gets 487 (its transaction then ends by Timer H/I).
                self.respond(invite_tx, 487, call, now)
            self.end(call, "remote_bye")
        elif method == "OPTIONS":
            self.respond(tx, 200, call, now, extra=responses.capabilities())
        elif method in ("INVITE", "UPDATE"):
            pending = self._tx.server(call.update_tx) is not None
            if pending or (method == "INVITE" and (call.ok_data is not None or self.reinvite_pending(call))):
                self.respond(tx, 491, call, now)  # 14.2 / RFC 3311 5.2: an offer/answer is in progress
                return
            if self.read_session_expires(call, request) is not None:
                self.respond(tx, 422, call, now, extra=[("Min-SE", str(self.min_se))])
                return
            if request.contact:
                call.remote_target = request.contact[0].uri  # 12.2.2: target refresh
            call.update_tx = tx.key
            self._outbox.emit(ev.SessionUpdate(call.call_id, request.body, method))
        elif method == "NOTIFY":
            event = (request.headers.get("Event") or request.headers.get("o") or "").split(";")[0].strip().lower()
            if event != "refer":
                self.respond(tx, 489, call, now)
                return
            self.respond(tx, 200, call, now)
            status = sipfrag_status(request.body)
            if status is not None:
                self._outbox.emit(ev.TransferProgress(call.call_id, status, status >= 200))
        else:
            self.respond(tx, 501, call, now, extra=responses.capabilities())

    # ------------------------------------------------------------ session timers (RFC 4028)

    def read_session_expires(self, call: CallState, request: Request) -> int | None:
        """Apply the request's Session-Expires to ``call``; return a too-small interval
        (answer 422) or ``None``."""
        supported = [t.lower() for t in request.supported + request.require]
        call.peer_supports_timer = call.peer_supports_timer or "timer" in supported
        value = request.headers.get("Session-Expires")
        if value is None:
            if call.peer_supports_timer and call.se_interval == 0:
                # 9: the UAS may ask for a session timer when the UAC supports it.
                call.se_interval, call.se_refresher = self._session_expires, "uac"
            return None
        head, _, params = value.partition(";")
        interval = int(head.strip())
        if interval < self.min_se:
            return interval
        call.se_interval = interval
        refresher = ""
        for param in params.split(";"):
            name, _, val = param.strip().partition("=")
            if name.lower() == "refresher":
                refresher = val.strip().lower()
        # 9: a UAS choosing the refresher picks the UAC when it supports timers.
        call.se_refresher = refresher if refresher in ("uac", "uas") else ("uac" if call.peer_supports_timer else "uas")
        return None

    def session_timer_headers(self, call: CallState, now: float) -> list[tuple[str, str]]:
        """Session-Expires (and Require) for our 2xx, the timer armed; none without a timer."""
        if not call.se_interval:
            return []
        self.arm_session_timer(call, now)
        headers = [("Session-Expires", f"{call.se_interval};refresher={call.se_refresher}")]
        if call.peer_supports_timer:
            headers.append(("Require", "timer"))
        return headers

    def arm_session_timer(self, call: CallState, now: float) -> None:
        """Refresh at half the interval when we refresh, else BYE before it expires (10)."""
        interval = call.se_interval
        if self._we_refresh(call):
            call.se_deadline = now + interval / 2
        else:
            call.se_deadline = now + interval - min(32, interval / 3)

    @staticmethod
    def _we_refresh(call: CallState) -> bool:
        # The refresher names a role in the dialog-creating transaction.
        return (call.se_refresher == "uas") == (call.role == "uas")

    # ------------------------------------------------------------ timers

    def deadline(self) -> float | None:
        """The earliest 2xx retransmission or session timer, monotonic seconds, or ``None``."""
        deadlines = [c.ok_next for c in self._calls.values() if c.ok_next is not None]
        deadlines += [c.se_deadline for c in self._calls.values() if c.se_deadline is not None]
        return min(deadlines) if deadlines else None

    def fire(self, now: float) -> None:
        """Retransmit unacknowledged 2xx (13.3.1.4) and run session timers due at ``now``:
        a refresh re-INVITE when we refresh (unless one is pending), else BYE."""
        for call in list(self._calls.values()):
            if call.ok_next is not None and call.ok_next <= now:
                self._retransmit_2xx(call, now)
            if call.se_deadline is not None and call.se_deadline <= now and call.call_id in self._calls:
                self._session_timer(call, now)

    def _session_timer(self, call: CallState, now: float) -> None:
        call.se_deadline = None
        if self._we_refresh(call):
            self._outbox.count("session_refreshes_sent")
            if call.state in ("confirmed", "answered") and not self.reinvite_pending(call):
                self.reinvite(call, call.last_answer_sdp, now)
        else:
            self._outbox.count("session_timer_expired")
            log.info("sip: call %s: session expired without refresh (RFC 4028): BYE", call.call_id)
            self.send(call, "BYE", now)
            self.end(call, "session_expired", 408)

    def _retransmit_2xx(self, call: CallState, now: float) -> None:
        if call.ok_data is None:
            call.ok_next = None
            return
        if now >= call.ok_give_up:
            # 13.3.1.4: no ACK in 64*T1: end the dialog with BYE.
            self._outbox.count("timeouts_ack")
            call.ok_next = None
            self.send(call, "BYE", now)
            self.end(call, "timeout", 408)
            return
        self._outbox.count("retransmissions")
        self._outbox.send(call.ok_data, call.ok_dest or call.peer)
        call.ok_interval = min(2 * call.ok_interval, self._t2)
        call.ok_next = min(now + call.ok_interval, call.ok_give_up)
