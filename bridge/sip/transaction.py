"""SIP transactions (RFC 3261 section 17), each owning its state and its timers.

A transaction is a small state machine fed by the core: a response to send (server),
a response received (client), and the time. It never sends anything itself: what its
timers want sent comes back from :meth:`ServerTransaction.on_timer` /
:meth:`ClientTransaction.on_timer` as a :class:`TimerOutcome`, and the core writes it.
Every transaction answers :meth:`deadline` (its earliest timer, monotonic seconds) and
is dropped by the core once :attr:`terminated`.

State tables (RFC 3261 figures 5-8; RFC 6026 section 7.1 adds ``ACCEPTED``):

=====================  =======================================================
INVITE server (17.2.1) PROCEEDING -> COMPLETED (3xx-6xx sent; G, H) -> CONFIRMED
                       (ACK; I) -> TERMINATED; PROCEEDING -> ACCEPTED (2xx sent;
                       L) -> TERMINATED
non-INVITE server      TRYING -> PROCEEDING (1xx sent) -> COMPLETED (final sent;
(17.2.2)               J) -> TERMINATED
INVITE client (17.1.1) CALLING (A, B) -> PROCEEDING (1xx) -> COMPLETED (3xx-6xx,
                       ACK sent; D) -> TERMINATED; 2xx or B: TERMINATED
non-INVITE client      TRYING (E, F) -> PROCEEDING (1xx) -> COMPLETED (final; K)
(17.1.2)               -> TERMINATED; F: TERMINATED
=====================  =======================================================

On a reliable transport (TCP, TLS) nothing is retransmitted and timers D, I, J, K are
zero (section 17).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sipmessage import Request, Response

from .message import ParsedMessage
from .outbox import Outbox
from .responses import response_dest
from .state import Addr, Timers, TxKey


class TxState(enum.Enum):
    """A transaction's state (RFC 3261 section 17; ``ACCEPTED``: RFC 6026)."""

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


@dataclass(frozen=True)
class TimerOutcome:
    """What a transaction's due timers asked for: ``resend`` (bytes to write to
    ``dest``: a retransmission) and ``timed_out`` (the letter of a timer that ended the
    transaction without an answer: B, F or H), else empty."""

    resend: bytes | None = None
    dest: Addr | None = None
    timed_out: str = ""


class _Timed:
    """The timers of one transaction: letter -> deadline (monotonic seconds)."""

    def __init__(self) -> None:
        self._timers: dict[str, float] = {}
        self.state = TxState.TERMINATED

    @property
    def terminated(self) -> bool:
        """Whether the transaction is over (the core drops it)."""
        return self.state is TxState.TERMINATED

    def deadline(self) -> float | None:
        """The earliest pending timer, monotonic seconds, or ``None``."""
        return min(self._timers.values()) if self._timers else None

    def _due(self, now: float) -> list[str]:
        """The letters of the timers due at ``now``, in the order they were set; each is
        removed before it fires."""
        due = [name for name, deadline in self._timers.items() if deadline <= now]
        for name in due:
            del self._timers[name]
        return due


class ServerTransaction(_Timed):
    """An INVITE (IST, 17.2.1) or non-INVITE (NIST, 17.2.2) server transaction.

    Args:
        key: ``(branch, sent-by, method)`` (17.2.3; ACK and CANCEL match with ``INVITE``).
        parsed: the request that began it.
        source: where it came from, ``(host, port)``.
        response_dest: where responses go (18.2.2 with RFC 3581 ``rport``).
        timers: the RFC 3261 base values.
        reliable: TCP or TLS (no retransmissions; timers I and J zero).
    """

    def __init__(
        self,
        key: TxKey,
        parsed: ParsedMessage,
        source: Addr,
        response_dest: Addr,
        timers: Timers,
        reliable: bool,
    ) -> None:
        super().__init__()
        self.key = key
        self.parsed = parsed
        self.request: Request = parsed.message  # type: ignore[assignment]
        self.source = source
        self.response_dest = response_dest
        self._t = timers
        self._reliable = reliable
        self.state = TxState.PROCEEDING if self.is_invite else TxState.TRYING
        #: The last response sent, resent on a retransmitted request.
        self.last_response: bytes | None = None
        self._g_interval = 0.0

    @property
    def is_invite(self) -> bool:
        """Whether this is an INVITE server transaction."""
        return self.request.method == "INVITE"

    @property
    def final_sent(self) -> bool:
        """Whether a final (>= 200) response was sent."""
        return self.last_response is not None and int(self.last_response[8:11]) >= 200

    def respond(self, data: bytes, now: float) -> None:
        """A response (serialized, status at bytes 8-11) is being sent: remember it and move
        on (a 3xx-6xx final of an IST arms G and H; a final of a NIST arms J)."""
        status = int(data[8:11])
        self.last_response = data
        if status >= 200:
            if self.is_invite:
                if status >= 300:
                    self.state = TxState.COMPLETED
                    self._g_interval = self._t.t1
                    if not self._reliable:
                        self._timers["G"] = now + self._t.t1
                    self._timers["H"] = now + 64 * self._t.t1
            else:
                self.state = TxState.COMPLETED
                self._timers["J"] = now + (0 if self._reliable else 64 * self._t.t1)
        elif not self.is_invite:
            self.state = TxState.PROCEEDING

    def accept(self, now: float) -> None:
        """A 2xx was sent to the INVITE: Accepted (RFC 6026 section 7.1), absorbing INVITE
        retransmissions for Timer L = 64*T1 while the UA core retransmits the 2xx."""
        self.state = TxState.ACCEPTED
        self._timers = {"L": now + 64 * self._t.t1}

    def acknowledge(self, now: float) -> bool:
        """An ACK matched: for a 3xx-6xx final, Confirmed and Timer I (17.2.1). Returns
        whether it was that ACK (else the UA core's: the ACK of a 2xx)."""
        if self.state is not TxState.COMPLETED:
            return False
        self.state = TxState.CONFIRMED
        self._timers.pop("G", None)
        self._timers.pop("H", None)
        self._timers["I"] = now + (0 if self._reliable else self._t.t4)
        return True

    def retransmission(self) -> bytes | None:
        """The request came again: the response to resend (17.2.1, 17.2.2), or ``None``
        (none sent yet; absorbed in Accepted and Confirmed)."""
        if self.last_response is None or self.state in (TxState.CONFIRMED, TxState.ACCEPTED):
            return None
        return self.last_response

    def on_timer(self, now: float) -> TimerOutcome:
        """Fire the timers due at ``now``: G resends the final (doubling to T2), H gives up
        waiting for the ACK, I, J and L end the transaction."""
        outcome = TimerOutcome()
        for name in self._due(now):
            if name == "G" and self.state is TxState.COMPLETED and self.last_response:
                outcome = TimerOutcome(self.last_response, self.response_dest)
                self._g_interval = min(2 * self._g_interval, self._t.t2)
                self._timers["G"] = now + self._g_interval
            elif name == "H":
                self._end()
                return TimerOutcome(outcome.resend, outcome.dest, timed_out="H")
            elif name in ("I", "J", "L"):
                self._end()
                return outcome
        return outcome

    def _end(self) -> None:
        self.state = TxState.TERMINATED
        self._timers.clear()


class ClientTransaction(_Timed):
    """An INVITE (ICT, 17.1.1) or non-INVITE (NICT, 17.1.2) client transaction; sending
    the request is the caller's (:attr:`data` to :attr:`dest`) when it is made.

    Args:
        request: the request.
        dest: its next hop, ``(host, port)``.
        call_id: the call it belongs to.
        local_tag: our tag in that call (a later call reusing the Call-ID is not this one).
        timers: the RFC 3261 base values.
        reliable: TCP or TLS (no retransmissions; timers D and K zero).
        now: when it is sent, monotonic seconds.
    """

    def __init__(
        self, request: Request, dest: Addr, call_id: str, local_tag: str, timers: Timers, reliable: bool, now: float
    ) -> None:
        super().__init__()
        self.request = request
        self.key: TxKey = (request.via[0].parameters["branch"] or "", request.method)
        self.data = bytes(request)
        self.dest = dest
        self.call_id = call_id
        self.local_tag = local_tag
        self._t = timers
        self._reliable = reliable
        self._interval = timers.t1
        self._ack: bytes | None = None
        if self.is_invite:
            self.state = TxState.CALLING
            self._timers = {"B": now + 64 * timers.t1}
            if not reliable:
                self._timers["A"] = now + timers.t1
        else:
            self.state = TxState.TRYING
            self._timers = {"F": now + 64 * timers.t1}
            if not reliable:
                self._timers["E"] = now + timers.t1

    @property
    def is_invite(self) -> bool:
        """Whether this is an INVITE client transaction."""
        return self.request.method == "INVITE"

    def provisional(self) -> None:
        """A 1xx arrived: Proceeding (an ICT stops Timer A)."""
        if self.state is TxState.CALLING:
            self.state = TxState.PROCEEDING
            self._timers.pop("A", None)
        elif self.state is TxState.TRYING:
            self.state = TxState.PROCEEDING

    def final(self, now: float) -> bool:
        """A final response to a NICT arrived: Completed, Timer K. Returns whether it was
        the first (a retransmitted final is absorbed)."""
        if self.state not in (TxState.TRYING, TxState.PROCEEDING):
            return False
        self.state = TxState.COMPLETED
        self._timers = {"K": now + (0 if self._reliable else self._t.t4)}
        return True

    def accepted(self) -> None:
        """A 2xx to the INVITE: the transaction ends; the UA core ACKs (17.1.1.2, 13.2.2.4)."""
        self.state = TxState.TERMINATED
        self._timers.clear()

    def ack_non_2xx(self, response: Response, now: float) -> bytes:
        """A 3xx-6xx to the INVITE: the ACK to send to :attr:`dest` (17.1.1.3, the same for
        every retransmission of that response); Completed with Timer D."""
        if self._ack is None:
            ack = Request("ACK", self.request.uri)
            ack.headers.set("Via", self.request.headers["Via"])
            ack.headers.set("Max-Forwards", "70")
            ack.headers.set("From", self.request.headers["From"])
            ack.headers.set("To", response.headers["To"])
            ack.headers.set("Call-ID", self.request.headers["Call-ID"])
            ack.headers.set("CSeq", f"{self.request.cseq.sequence} ACK")
            ack.headers.set("Content-Length", "0")
            self._ack = bytes(ack)
        if self.state is not TxState.COMPLETED:
            self.state = TxState.COMPLETED
            self._timers = {"D": now + (0 if self._reliable else 32.0)}
        return self._ack

    def on_timer(self, now: float) -> TimerOutcome:
        """Fire the timers due at ``now``: A and E resend the request (A doubling; E
        doubling to T2, at T2 once Proceeding), B and F time the transaction out, D and
        K end it."""
        outcome = TimerOutcome()
        for name in self._due(now):
            if name in ("A", "E"):
                active = self.state in (TxState.CALLING, TxState.TRYING, TxState.PROCEEDING)
                if active and not (name == "A" and self.state is TxState.PROCEEDING):
                    outcome = TimerOutcome(self.data, self.dest)
                    self._interval = 2 * self._interval if name == "A" else min(2 * self._interval, self._t.t2)
                    if self.state is TxState.PROCEEDING:
                        self._interval = self._t.t2
                    self._timers[name] = now + self._interval
            elif name in ("B", "F"):
                self.state = TxState.TERMINATED
                self._timers.clear()
                return TimerOutcome(outcome.resend, outcome.dest, timed_out=name)
            elif name in ("D", "K"):
                self.state = TxState.TERMINATED
                self._timers.clear()
                return outcome
        return outcome


class Transactions:
    """The transactions the core holds, matched as RFC 3261 section 17 says, and their
    timers; what they send goes through ``outbox``.

    Args:
        outbox: the core's :class:`~.outbox.Outbox`.
        timers: the RFC 3261 base values.
        reliable: TCP or TLS.
    """

    def __init__(self, outbox: Outbox, timers: Timers, reliable: bool) -> None:
        self._outbox = outbox
        self._timers = timers
        self._reliable = reliable
        self._server: dict[TxKey, ServerTransaction] = {}
        self._client: dict[TxKey, ClientTransaction] = {}

    def __len__(self) -> int:
        return len(self._server) + len(self._client)

    @staticmethod
    def server_key(parsed: ParsedMessage, method: str) -> TxKey:
        """A request's server-transaction key (17.2.3): branch, sent-by, ``method``
        (``INVITE`` for an ACK or a CANCEL, which match the INVITE's)."""
        top = parsed.via[0]
        return (parsed.branch or "", f"{top.host}:{top.port or 5060}", method)

    def server(self, key: TxKey | None) -> ServerTransaction | None:
        """The live server transaction with ``key``, if any."""
        return self._server.get(key) if key is not None else None

    def client(self, key: TxKey | None) -> ClientTransaction | None:
        """The live client transaction with ``key`` (branch, CSeq method: 17.1.3), if any."""
        return self._client.get(key) if key is not None else None

    def new_server(self, key: TxKey, parsed: ParsedMessage, source: Addr) -> ServerTransaction:
        """Begin a server transaction for a new request."""
        tx = ServerTransaction(
            key, parsed, source, response_dest(parsed, source, self._reliable), self._timers, self._reliable
        )
        self._server[key] = tx
        return tx

    def forget_server(self, key: TxKey) -> None:
        """Drop a server transaction whose request turned out unreadable."""
        self._server.pop(key, None)

    def respond(self, tx: ServerTransaction, data: bytes, now: float) -> None:
        """Send ``data`` (a response) in ``tx``."""
        tx.respond(data, now)
        self._outbox.count(f"responses_sent_{int(data[8:11])}")
        self._outbox.send(data, tx.response_dest)

    def start_client(self, request: Request, dest: Addr, call_id: str, local_tag: str, now: float) -> ClientTransaction:
        """Send ``request`` to ``dest`` in a new client transaction."""
        ctx = ClientTransaction(request, dest, call_id, local_tag, self._timers, self._reliable, now)
        self._client[ctx.key] = ctx
        self._outbox.send(ctx.data, dest)
        return ctx

    def end_client(self, ctx: ClientTransaction) -> None:
        """``ctx`` is over (a 2xx to its INVITE)."""
        ctx.accepted()
        self._client.pop(ctx.key, None)

    def deadline(self) -> float | None:
        """The earliest timer of any transaction, monotonic seconds, or ``None``."""
        deadlines = [d for tx in self._server.values() if (d := tx.deadline()) is not None]
        deadlines += [d for tx in self._client.values() if (d := tx.deadline()) is not None]
        return min(deadlines) if deadlines else None

    def fire(self, now: float) -> list[ClientTransaction]:
        """Fire every timer due at ``now``: retransmissions sent, ended transactions
        dropped. Returns the client transactions that timed out (B, F), for the UA core."""
        for tx in list(self._server.values()):
            if (d := tx.deadline()) is None or d > now:
                continue
            outcome = tx.on_timer(now)
            self._sent(outcome)
            if outcome.timed_out:
                self._outbox.count(f"timeouts_{outcome.timed_out}")
            if tx.terminated:
                self._server.pop(tx.key, None)
        timed_out = []
        for ctx in list(self._client.values()):
            if (d := ctx.deadline()) is None or d > now:
                continue
            outcome = ctx.on_timer(now)
            self._sent(outcome)
            if outcome.timed_out:
                self._outbox.count(f"timeouts_{outcome.timed_out}")
                timed_out.append(ctx)
            if ctx.terminated:
                self._client.pop(ctx.key, None)
        return timed_out

    def _sent(self, outcome: TimerOutcome) -> None:
        if outcome.resend is not None and outcome.dest is not None:
            self._outbox.count("retransmissions")
            self._outbox.send(outcome.resend, outcome.dest)
