"""Sans-IO SIP user agent core (RFC 3261) over UDP, TCP or TLS (framing and connections
are the transport's: :mod:`.transport`, :mod:`.framing`).

The core owns no socket, task or clock. Its whole API, in the style of
aioquic and h11:

- :meth:`SipCore.receive_datagram` ``(data, addr, now)``: feed one datagram;
- :meth:`SipCore.handle_timer` ``(now)``: call when :meth:`get_timer` is due;
- :meth:`SipCore.datagrams_to_send` ``()``: ``[(bytes, (host, port))]`` to write;
- :meth:`SipCore.get_timer` ``()``: the next deadline (monotonic seconds) or ``None``;
- :meth:`SipCore.next_event` ``()``: the next :mod:`bridge.sip.events` event or ``None``;

plus the user-agent actions: :meth:`answer`, :meth:`ringing`, :meth:`reject`,
:meth:`hangup` (UAS and UAC) and :meth:`invite` (UAC).

Layers inside, as RFC 3261 draws them:

- transactions (section 17): INVITE/non-INVITE, server/client, with timers
  A, B, D, E, F, G, H, I, J, K;
- dialogs (section 12) and the UA core rules (sections 8, 13, 15): 2xx
  retransmission until ACK (13.3.1.4), ACK for 2xx (13.2.2.4), CANCEL (9),
  BYE (15), OPTIONS (11), 481/501 answers.

Rooms: this module holds the UA core: the API, request dispatch and the UAS. It is
composed of parts that own their state: :mod:`.transaction` (each transaction with its
state and timers, and the table that matches them), :mod:`.dialog` (the calls, requests
inside a dialog, REFER, session timers, 2xx retransmission), :mod:`.uac` (placing
calls), :mod:`.addressing` (our Via and Contact), :mod:`.responses` (a UAS's
responses) and :mod:`.outbox` (datagrams, events and counters out); :mod:`.state`
holds the call record and the timer base values.

Errors: hostile input never raises out of :meth:`receive_datagram`; it is
answered (400) or dropped and counted in :attr:`SipCore.counters` under
``dropped_<reason>``. Misuse of the API (unknown ``call_id``, answering twice)
raises :class:`SipUsageError`.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable

from sipmessage import URI, Request

from . import events as ev
from . import responses
from .addressing import LocalAddress
from .dialog import Dialogs
from .message import ParsedMessage, SipParseError, parse_datagram
from .outbox import Outbox
from .state import ALLOWED_METHODS, Addr, CallState, SipUsageError, Timers
from .transaction import ServerTransaction, Transactions
from .uac import Uac
from .uas import Uas

log = logging.getLogger("bridge.sip")

__all__ = ["ALLOWED_METHODS", "SipCore", "SipUsageError", "Timers"]


class SipCore:
    """A SIP user agent (UAS and UAC) over UDP, sans-IO. See the module docstring.

    Args:
        local_addr: ``(host, port)`` the socket is bound to.
        public_host: the address to put in Via, Contact (and that the media
            layer puts in SDP ``c=``): the public address behind NAT; defaults to
            ``local_addr[0]``.
        user_agent: the ``User-Agent``/``Server`` header value.
        timers: RFC 3261 timer values (tests shorten them).
        max_message_size: datagrams longer than this are dropped (bytes).
        host_for: ``peer (host, port) -> local address`` to advertise to that
            peer (:class:`bridge.sip.addressing.Advertiser`); an ``OSError`` from it
            falls back to ``public_host``.
        transport: ``UDP``, ``TCP`` or ``TLS``: written in Via and Contact. On the
            reliable ones (TCP, TLS) nothing is retransmitted by the transaction
            layer and Timers D, I, J, K are zero (RFC 3261 section 17); addresses
            are the remote end of a connection, and responses and in-dialog
            requests go back on it (section 18.2.2).
    """

    def __init__(
        self,
        local_addr: Addr,
        *,
        public_host: str | None = None,
        user_agent: str = "bridge/0.1",
        timers: Timers | None = None,
        max_message_size: int = 16384,
        transport: str = "UDP",
        session_expires: int = 1800,
        min_se: int = 90,
        host_for: Callable[[Addr], str] | None = None,
    ) -> None:
        self.local_addr = local_addr
        self.user_agent = user_agent
        self.timers = timers or Timers()
        self.max_message_size = max_message_size
        self.transport = transport.upper()
        self.reliable = self.transport != "UDP"
        self._address = LocalAddress(public_host or local_addr[0], local_addr[1], self.transport, host_for)
        self._outbox = Outbox()
        self._tx = Transactions(self._outbox, self.timers, self.reliable)
        self._dialogs = Dialogs(
            self._outbox,
            self._tx,
            self._address,
            user_agent,
            self.reliable,
            session_expires,
            min_se,
            self.timers.t1,
            self.timers.t2,
        )
        self._uac = Uac(self._outbox, self._tx, self._dialogs, self._address, user_agent, self.reliable)
        self._uas = Uas(self._outbox, self._tx, self._dialogs, self._address, user_agent, self.timers)
        #: What happened, by name (see :class:`~.outbox.Outbox`).
        self.counters: collections.Counter[str] = self._outbox.counters
        self._unavailable: int | None = None

    # ------------------------------------------------------------------ API

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """Consume one datagram from ``addr`` at monotonic time ``now`` (seconds).

        Never raises on bad input: a request with readable routing headers but
        bad content gets ``400``; anything else is dropped and counted as
        ``counters['dropped_<reason>']``.
        """
        try:
            parsed = parse_datagram(data, self.max_message_size)
        except SipParseError as exc:
            if exc.reason == "keepalive":
                self.counters["keepalives"] += 1
                return
            self._outbox.drop(exc.reason, addr)
            if exc.status is not None and exc.request is not None:
                self._respond_stateless(exc.request, exc.status, addr)
            return
        try:
            if parsed.is_request:
                self.counters["requests_received"] += 1
                self._on_request(parsed, addr, now)
            else:
                self.counters["responses_received"] += 1
                self._uac.receive(parsed, addr, now)
        except (ValueError, KeyError, IndexError, UnicodeError) as exc:
            # A header that only fails when the UA core reads it (Contact, Record-Route...).
            self._outbox.drop("bad_header_late", addr, detail=repr(exc))
            if isinstance(parsed.message, Request) and parsed.message.method != "ACK":
                self._respond_stateless(parsed.message, 400, addr)

    def handle_timer(self, now: float) -> None:
        """Fire every timer whose deadline is ``<= now`` (monotonic seconds)."""
        for ctx in self._tx.fire(now):
            self._uac.timed_out(ctx, now)
        self._dialogs.fire(now)

    def get_timer(self) -> float | None:
        """The earliest pending deadline in monotonic seconds, or ``None``."""
        deadlines = [d for d in (self._tx.deadline(), self._dialogs.deadline()) if d is not None]
        return min(deadlines) if deadlines else None

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        """Return and forget the datagrams queued since the last call."""
        return self._outbox.take_datagrams()

    def next_event(self) -> ev.Event | None:
        """Pop the next event, or ``None`` when there is none."""
        return self._outbox.next_event()

    def bound(self, addr: Addr) -> None:
        """The transport bound ``addr`` (it asked for port 0): advertise its port."""
        self.local_addr = addr
        self._address.bound(addr[1])

    @property
    def public_port(self) -> int:
        """The port we advertise in Via and Contact."""
        return self._address.port

    def set_unavailable(self, retry_after: int | None) -> None:
        """Refuse new calls with ``503`` and ``Retry-After: retry_after`` seconds (draining),
        or accept them again (``None``). Out-of-dialog OPTIONS get ``503`` too: RFC 3261
        section 11.2, OPTIONS is answered as an INVITE would be, so a load balancer's
        keepalive (Kamailio's dispatcher) takes the node out of rotation."""
        self._unavailable = retry_after

    @property
    def unavailable(self) -> int | None:
        """``Retry-After`` seconds while new calls are refused (:meth:`set_unavailable`), else ``None``."""
        return self._unavailable

    def local_host(self, peer: Addr) -> str:
        """The address we advertise to ``peer`` (see ``host_for``)."""
        return self._address.host(peer)

    @property
    def active_calls(self) -> int:
        """Number of calls not yet ended."""
        return len(self._dialogs)

    def has_call(self, call_id: str) -> bool:
        """Whether ``call_id`` names a call that has not ended."""
        return call_id in self._dialogs

    def call_ids(self) -> list[str]:
        """The Call-IDs of the calls not yet ended (for shutdown and leak checks)."""
        return self._dialogs.ids()

    @property
    def transaction_count(self) -> int:
        """Server plus client transactions still held (for leak checks)."""
        return len(self._tx)

    # UAC -------------------------------------------------------------------

    def invite(
        self,
        target: str,
        dest: Addr,
        sdp: bytes,
        now: float,
        *,
        from_user: str = "bridge",
        extra_headers: list[tuple[str, str]] | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> str:
        """Place a call: send an INVITE for ``target`` (a ``sip:`` URI) to ``dest``.

        ``credentials`` (user, password) answer one 401/407 digest challenge
        (RFC 3261 section 22.2) by resending the INVITE with credentials.

        Returns:
            the new call's Call-ID.

        Raises:
            ValueError: ``target`` is not a valid SIP URI.
        """
        return self._uac.invite(
            target, dest, sdp, now, from_user=from_user, extra_headers=extra_headers, credentials=credentials
        )

    # UAS actions -----------------------------------------------------------

    def ringing(self, call_id: str, now: float) -> None:
        """Send ``180 Ringing`` for an incoming call (RFC 3261 section 13.3.1.1)."""
        call, tx = self._uas.incoming(call_id)
        self._dialogs.respond(tx, 180, call, now)

    def answer(self, call_id: str, sdp: bytes, now: float) -> None:
        """Send ``200 OK`` with the SDP answer; retransmit it until ACK (13.3.1.4).

        Raises:
            SipUsageError: no such incoming call, or it was already answered.
        """
        call, tx = self._uas.incoming(call_id)
        call.state = "answered"
        self._uas.answer_invite(call, tx, sdp, now)

    # Session updates (RFC 3261 section 14, RFC 3311, RFC 4028) ----------------

    def answer_update(self, call_id: str, sdp: bytes, now: float) -> None:
        """Answer the pending re-INVITE/UPDATE (:class:`SessionUpdate`) with 200 and ``sdp``.

        Raises:
            SipUsageError: no update is pending on that call.
        """
        call, tx = self._pending_update(call_id)
        if tx.is_invite:
            self._uas.answer_invite(call, tx, sdp, now)
        else:
            extra = [("Contact", str(self._address.contact(call.peer)))] + self._dialogs.session_timer_headers(
                call, now
            )
            self._dialogs.respond(tx, 200, call, now, body=sdp, extra=extra)
            call.last_answer_sdp = sdp

    def reject_update(self, call_id: str, status: int, now: float) -> None:
        """Refuse the pending re-INVITE/UPDATE (e.g. 488); the session stays as it was (14.2).

        Raises:
            SipUsageError: no update is pending on that call.
        """
        call, tx = self._pending_update(call_id)
        self._dialogs.respond(tx, status, call, now)

    def _pending_update(self, call_id: str) -> tuple[CallState, ServerTransaction]:
        call = self._dialogs.get(call_id)
        tx = self._tx.server(call.update_tx) if call is not None else None
        if call is None or tx is None or tx.final_sent:
            raise SipUsageError(f"no pending re-INVITE/UPDATE on {call_id!r}")
        call.update_tx = None
        return call, tx

    def reinvite(self, call_id: str, sdp: bytes, now: float) -> None:
        """Send a re-INVITE with ``sdp`` (session refresh or media change, RFC 3261 14.1).

        A 408 or 481 answer ends the call with BYE (RFC 4028 section 10).

        Raises:
            SipUsageError: unknown call, or a re-INVITE of ours is still pending.
        """
        call = self._dialogs.get(call_id)
        if call is None or call.state != "confirmed" and call.state != "answered":
            raise SipUsageError(f"no established call {call_id!r}")
        if self._dialogs.reinvite_pending(call):
            raise SipUsageError("a re-INVITE is already pending")
        self._dialogs.reinvite(call, sdp, now)

    def refer(self, call_id: str, target: str, now: float) -> None:
        """Ask the peer to transfer the call to ``target`` (``sip:``/``tel:`` URI), RFC 3515.

        Progress arrives as :class:`TransferProgress` events (the REFER's
        response, then the NOTIFY sipfrags).

        Raises:
            SipUsageError: no established call.
            ValueError: ``target`` is not a SIP or TEL URI.
        """
        URI.parse(target)
        call = self._dialogs.get(call_id)
        if call is None or call.state not in ("confirmed", "answered"):
            raise SipUsageError(f"no established call {call_id!r}")
        self._dialogs.refer(call, target, now)

    def reject(
        self, call_id: str, status: int, now: float, *, extra_headers: list[tuple[str, str]] | None = None
    ) -> None:
        """Answer an incoming call with a final non-2xx ``status`` (e.g. 486, 488, 503).

        The call ends at once (:class:`CallEnded` with reason ``rejected``); the
        transaction keeps retransmitting until ACK (Timer G/H).
        """
        if not 300 <= status <= 699:
            raise SipUsageError(f"reject needs a 3xx-6xx status, not {status}")
        call, tx = self._uas.incoming(call_id)
        self._dialogs.respond(tx, status, call, now, extra=extra_headers)
        self._dialogs.end(call, "rejected", status)

    def hangup(self, call_id: str, now: float) -> None:
        """End a call from our side, whatever its state.

        - UAS before answer: final ``480 Temporarily Unavailable``.
        - UAC before a final response: CANCEL (RFC 3261 section 9.1), sent as
          soon as a provisional response has arrived; a 2xx that crosses it is
          ACKed and followed by BYE.
        - Any answered call: BYE (section 15.1.1).

        Emits :class:`CallEnded` (``local_bye``, ``cancelled`` or ``rejected``) at once.

        Raises:
            SipUsageError: unknown ``call_id``.
        """
        call = self._dialogs.get(call_id)
        if call is None:
            raise SipUsageError(f"no call {call_id!r}")
        if call.role == "uas" and call.state == "incoming":
            self.reject(call_id, 480, now)
            return
        if call.state == "cancelling":
            return
        if call.role == "uac" and call.state in ("calling", "early"):
            # The call stays held (state "cancelling") until the INVITE's final
            # response or Timer B, but it has ended for the user.
            self._outbox.emit(ev.CallEnded(call_id, "cancelled"))
            if call.provisional_seen:
                self._uac.cancel(call, now)
            else:
                call.cancel_pending = True
                call.state = "cancelling"
            return
        self._dialogs.send(call, "BYE", now)
        self._dialogs.end(call, "local_bye")

    # ------------------------------------------------------------- internals

    def _respond_stateless(self, request: Request, status: int, addr: Addr) -> None:
        """Answer outside any transaction (malformed requests): best effort."""
        answer = responses.stateless(request, status, addr, self.reliable, self.user_agent)
        if answer is not None:
            self._outbox.count(f"responses_sent_{status}")
            self._outbox.send(*answer)

    # Requests --------------------------------------------------------------

    def _on_request(self, parsed: ParsedMessage, source: Addr, now: float) -> None:
        request: Request = parsed.message  # type: ignore[assignment]
        method = request.method
        if request.uri.scheme not in ("sip", "sips", "tel"):
            self._respond_stateless(request, 416, source)
            return
        # Transaction matching (17.2.3): ACK matches the INVITE transaction.
        key = self._tx.server_key(parsed, "INVITE" if method == "ACK" else method)
        tx = self._tx.server(key)
        if method == "ACK":
            self._uas.on_ack(parsed, tx, now)
            return
        if tx is not None:
            # Retransmission: resend the last response, if any (17.2.1, 17.2.2).
            self._outbox.count("request_retransmissions")
            again = tx.retransmission()
            if again is not None:
                self._outbox.send(again, tx.response_dest)
            return
        tx = self._tx.new_server(key, parsed, source)
        try:
            self._dispatch_request(parsed, tx, source, now)
        except (ValueError, KeyError, IndexError, UnicodeError):
            # A header failed only when the UA core read it (Contact, Record-Route,
            # Session-Expires): the caller answers 400 statelessly, and neither this
            # transaction nor a dialog it began may stay behind (no timer would end them).
            self._tx.forget_server(key)
            call = self._dialogs.get(parsed.call_id)
            if call is not None and call.invite_tx == key:
                self._dialogs.forget(parsed.call_id)
            raise

    def _dispatch_request(self, parsed: ParsedMessage, tx: ServerTransaction, source: Addr, now: float) -> None:
        method = parsed.message.method  # type: ignore[union-attr]
        if parsed.to_tag is not None:
            self._dialogs.on_request(parsed, tx, self._dialogs.get(parsed.call_id), now)
            return
        if method == "INVITE":
            self._uas.on_invite(parsed, tx, source, now)
        elif method == "CANCEL":
            self._uas.on_cancel(parsed, tx, now)
        elif method == "OPTIONS":
            if self._unavailable is not None:
                extra = [("Retry-After", str(self._unavailable))] + responses.capabilities()
                self._dialogs.respond(tx, 503, None, now, extra=extra)
            else:
                self._dialogs.respond(tx, 200, None, now, extra=responses.capabilities())
        elif method == "BYE":
            self._dialogs.respond(tx, 481, None, now)
        else:
            self._dialogs.respond(tx, 501, None, now, extra=responses.capabilities())
