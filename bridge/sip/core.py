"""Sans-IO SIP user agent core (RFC 3261), UDP flavour.

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

Rooms: this module holds the UA core: the API, request dispatch, the UAS and the
dialog rules; :mod:`.server_tx` and :mod:`.client_tx` the transaction layer (mixins;
the client side also builds in-dialog requests), :mod:`.uac` placing calls (a mixin),
:mod:`.session_timer` RFC 4028 (a mixin), and :mod:`.state` the records they share
(transactions, calls, timers).

Errors: hostile input never raises out of :meth:`receive_datagram`; it is
answered (400) or dropped and counted in :attr:`SipCore.counters` under
``dropped_<reason>``. Misuse of the API (unknown ``call_id``, answering twice)
raises :class:`SipUsageError`.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable

from sipmessage import URI, Address, Parameters, Request, Via

from . import events as ev
from .client_tx import ClientTransactionMixin
from .message import ParsedMessage, SipParseError, new_tag, parse_datagram
from .server_tx import ServerTransactionMixin
from .session_timer import SessionTimerMixin
from .state import ALLOWED_METHODS, Addr, CallState, ClientTransaction, ServerTransaction, SipUsageError, Timers
from .uac import UacMixin

log = logging.getLogger("bridge.sip")

__all__ = ["ALLOWED_METHODS", "SipCore", "SipUsageError", "Timers"]


class SipCore(UacMixin, SessionTimerMixin, ServerTransactionMixin, ClientTransactionMixin):
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
        self.public_host = public_host or local_addr[0]
        #: The address advertised to a peer (Via, Contact, From of our INVITEs):
        #: ``host_for(peer)`` when given (a wildcard bind), else ``public_host``.
        self.host_for = host_for
        self.public_port = local_addr[1]
        self.user_agent = user_agent
        self.timers = timers or Timers()
        self.max_message_size = max_message_size
        self.session_expires = session_expires
        self.min_se = min_se
        self.transport = transport.upper()
        self.reliable = self.transport != "UDP"
        self.counters: collections.Counter[str] = collections.Counter()
        self._out: list[tuple[bytes, Addr]] = []
        self._events: collections.deque[ev.Event] = collections.deque()
        self._server_tx: dict[tuple[str, str, str], ServerTransaction] = {}
        self._client_tx: dict[tuple[str, str], ClientTransaction] = {}
        self._calls: dict[str, CallState] = {}
        self._logged_reasons: set[str] = set()
        #: ``Retry-After`` seconds while the node refuses new calls (draining), else
        #: ``None``. Out-of-dialog OPTIONS then get ``503`` too: RFC 3261 section 11.2,
        #: OPTIONS is answered as an INVITE would be, so a load balancer's keepalive
        #: (Kamailio's dispatcher) takes the node out of rotation.
        self.unavailable: int | None = None

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
            self._drop(exc.reason, addr)
            if exc.status is not None and exc.request is not None:
                self._respond_stateless(exc.request, exc.status, addr)
            return
        try:
            if parsed.is_request:
                self.counters["requests_received"] += 1
                self._on_request(parsed, addr, now)
            else:
                self.counters["responses_received"] += 1
                self._on_response(parsed, addr, now)
        except (ValueError, KeyError, IndexError, UnicodeError) as exc:
            # A header that only fails when the UA core reads it (Contact, Record-Route...).
            self._drop("bad_header_late", addr, detail=repr(exc))
            if parsed.is_request and parsed.message.method != "ACK":
                self._respond_stateless(parsed.message, 400, addr)

    def handle_timer(self, now: float) -> None:
        """Fire every timer whose deadline is ``<= now`` (monotonic seconds)."""
        for tx in list(self._server_tx.values()):
            for name, deadline in list(tx.timers.items()):
                if deadline <= now and name in tx.timers:
                    del tx.timers[name]
                    self._server_timer(tx, name, now)
        for ctx in list(self._client_tx.values()):
            for name, deadline in list(ctx.timers.items()):
                if deadline <= now and name in ctx.timers:
                    del ctx.timers[name]
                    self._client_timer(ctx, name, now)
        for call in list(self._calls.values()):
            if call.ok_next is not None and call.ok_next <= now:
                self._retransmit_2xx(call, now)
            if call.se_deadline is not None and call.se_deadline <= now and call.call_id in self._calls:
                self._session_timer(call, now)

    def get_timer(self) -> float | None:
        """The earliest pending deadline in monotonic seconds, or ``None``."""
        deadlines = [d for tx in self._server_tx.values() for d in tx.timers.values()]
        deadlines += [d for tx in self._client_tx.values() for d in tx.timers.values()]
        deadlines += [c.ok_next for c in self._calls.values() if c.ok_next is not None]
        deadlines += [c.se_deadline for c in self._calls.values() if c.se_deadline is not None]
        return min(deadlines) if deadlines else None

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        """Return and forget the datagrams queued since the last call."""
        out, self._out = self._out, []
        return out

    def next_event(self) -> ev.Event | None:
        """Pop the next event, or ``None`` when there is none."""
        return self._events.popleft() if self._events else None

    @property
    def active_calls(self) -> int:
        """Number of calls not yet ended."""
        return len(self._calls)

    def has_call(self, call_id: str) -> bool:
        """Whether ``call_id`` names a call that has not ended."""
        return call_id in self._calls

    def call_ids(self) -> list[str]:
        """The Call-IDs of the calls not yet ended (for shutdown and leak checks)."""
        return list(self._calls)

    @property
    def transaction_count(self) -> int:
        """Server plus client transactions still held (for leak checks)."""
        return len(self._server_tx) + len(self._client_tx)

    # UAS actions -----------------------------------------------------------

    def ringing(self, call_id: str, now: float) -> None:
        """Send ``180 Ringing`` for an incoming call (RFC 3261 section 13.3.1.1)."""
        call, tx = self._incoming(call_id)
        self._send_server_response(tx, self._response(tx, 180, call), now)

    def answer(self, call_id: str, sdp: bytes, now: float) -> None:
        """Send ``200 OK`` with the SDP answer; retransmit it until ACK (13.3.1.4).

        Raises:
            SipUsageError: no such incoming call, or it was already answered.
        """
        call, tx = self._incoming(call_id)
        call.state = "answered"
        self._answer_invite(call, tx, sdp, now)

    def _answer_invite(self, call: CallState, tx: ServerTransaction, sdp: bytes, now: float) -> None:
        """200 OK to an INVITE or re-INVITE; the UA core retransmits it until ACK (13.3.1.4)."""
        extra = [
            ("Contact", str(self._contact(call.peer))),
            ("Allow", ", ".join(ALLOWED_METHODS)),
            ("Supported", "timer"),
        ]
        extra += self._session_timer_headers(call, now)
        data = self._response(tx, 200, call, body=sdp, extra=extra)
        self._send_server_response(tx, data, now)
        # RFC 6026 section 7.1: the IST moves to Accepted (absorbing INVITE
        # retransmissions) for Timer L = 64*T1; the UA core retransmits the 2xx.
        tx.state = "accepted"
        tx.timers = {"L": now + 64 * self.timers.t1}
        call.last_answer_sdp = sdp
        call.ok_data = data
        call.ok_cseq = tx.parsed.cseq.sequence
        call.ok_dest = tx.response_dest
        call.ok_interval = self.timers.t1
        call.ok_next = now + self.timers.t1
        call.ok_give_up = now + 64 * self.timers.t1

    # Session timers (RFC 4028) ---------------------------------------------

    def answer_update(self, call_id: str, sdp: bytes, now: float) -> None:
        """Answer the pending re-INVITE/UPDATE (:class:`SessionUpdate`) with 200 and ``sdp``.

        Raises:
            SipUsageError: no update is pending on that call.
        """
        call, tx = self._pending_update(call_id)
        if tx.is_invite:
            self._answer_invite(call, tx, sdp, now)
        else:
            extra = [("Contact", str(self._contact(call.peer)))] + self._session_timer_headers(call, now)
            self._send_server_response(tx, self._response(tx, 200, call, body=sdp, extra=extra), now)
            call.last_answer_sdp = sdp

    def reject_update(self, call_id: str, status: int, now: float) -> None:
        """Refuse the pending re-INVITE/UPDATE (e.g. 488); the session stays as it was (14.2).

        Raises:
            SipUsageError: no update is pending on that call.
        """
        call, tx = self._pending_update(call_id)
        self._send_server_response(tx, self._response(tx, status, call), now)

    def _pending_update(self, call_id: str) -> tuple[CallState, ServerTransaction]:
        call = self._calls.get(call_id)
        tx = self._server_tx.get(call.update_tx) if call is not None and call.update_tx else None
        if call is None or tx is None or tx.last_response is not None and int(tx.last_response[8:11]) >= 200:
            raise SipUsageError(f"no pending re-INVITE/UPDATE on {call_id!r}")
        call.update_tx = None
        return call, tx

    def reinvite(self, call_id: str, sdp: bytes, now: float) -> None:
        """Send a re-INVITE with ``sdp`` (session refresh or media change, RFC 3261 14.1).

        A 408 or 481 answer ends the call with BYE (RFC 4028 section 10).

        Raises:
            SipUsageError: unknown call, or a re-INVITE of ours is still pending.
        """
        call = self._calls.get(call_id)
        if call is None or call.state != "confirmed" and call.state != "answered":
            raise SipUsageError(f"no established call {call_id!r}")
        if call.reinvite_tx is not None and call.reinvite_tx in self._client_tx:
            raise SipUsageError("a re-INVITE is already pending")
        extra = [("Contact", str(self._contact(call.peer))), ("Supported", "timer")]
        if call.se_interval:
            extra.append(("Session-Expires", f"{call.se_interval};refresher={call.se_refresher}"))
        request = self._build_in_dialog(call, "INVITE", extra=extra, body=sdp)
        ctx = self._start_client_tx(request, self._dialog_dest(call), call.call_id, now)
        call.reinvite_tx = ctx.key

    def refer(self, call_id: str, target: str, now: float) -> None:
        """Ask the peer to transfer the call to ``target`` (``sip:``/``tel:`` URI), RFC 3515.

        Progress arrives as :class:`TransferProgress` events (the REFER's
        response, then the NOTIFY sipfrags).

        Raises:
            SipUsageError: no established call.
            ValueError: ``target`` is not a SIP or TEL URI.
        """
        URI.parse(target)
        call = self._calls.get(call_id)
        if call is None or call.state not in ("confirmed", "answered"):
            raise SipUsageError(f"no established call {call_id!r}")
        extra = [
            ("Refer-To", f"<{target}>"),
            ("Referred-By", str(Address(uri=call.local_uri.uri))),
            ("Contact", str(self._contact(call.peer))),
        ]
        request = self._build_in_dialog(call, "REFER", extra=extra)
        self._start_client_tx(request, self._dialog_dest(call), call.call_id, now)

    def reject(
        self, call_id: str, status: int, now: float, *, extra_headers: list[tuple[str, str]] | None = None
    ) -> None:
        """Answer an incoming call with a final non-2xx ``status`` (e.g. 486, 488, 503).

        The call ends at once (:class:`CallEnded` with reason ``rejected``); the
        transaction keeps retransmitting until ACK (Timer G/H).
        """
        if not 300 <= status <= 699:
            raise SipUsageError(f"reject needs a 3xx-6xx status, not {status}")
        call, tx = self._incoming(call_id)
        self._send_server_response(tx, self._response(tx, status, call, extra=extra_headers), now)
        self._end_call(call, "rejected", status)

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
        call = self._calls.get(call_id)
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
            self._events.append(ev.CallEnded(call_id, "cancelled"))
            if call.provisional_seen:
                self._send_cancel(call, now)
            else:
                call.cancel_pending = True
                call.state = "cancelling"
            return
        self._send_in_dialog(call, "BYE", now)
        self._end_call(call, "local_bye")

    # ------------------------------------------------------------- internals

    def _drop(self, reason: str, addr: Addr, detail: str = "") -> None:
        self.counters[f"dropped_{reason}"] += 1
        if reason not in self._logged_reasons:
            self._logged_reasons.add(reason)
            log.warning(
                "sip: dropped datagram from %s:%s: %s %s (logged once per reason; see counters)",
                addr[0],
                addr[1],
                reason,
                detail,
            )
        else:
            log.debug("sip: dropped datagram from %s:%s: %s", addr[0], addr[1], reason)

    def local_host(self, peer: Addr) -> str:
        """The address we advertise to ``peer`` (see ``host_for``)."""
        if self.host_for is None:
            return self.public_host
        try:
            return self.host_for(peer)
        except (OSError, ValueError) as exc:
            log.debug("sip: no route to %s (%r): advertising %s", peer[0], exc, self.public_host)
            return self.public_host

    def _via(self, branch: str, peer: Addr) -> Via:
        host = self.local_host(peer)
        host = f"[{host}]" if ":" in host else host
        return Via.parse(f"SIP/2.0/{self.transport} {host}:{self.public_port};branch={branch};rport")

    def _contact(self, peer: Addr) -> Address:
        params = Parameters(transport=self.transport.lower()) if self.reliable else Parameters()
        host = self.local_host(peer)
        host = f"[{host}]" if ":" in host else host
        return Address(uri=URI(scheme="sip", user="bridge", host=host, port=self.public_port, parameters=params))

    def _incoming(self, call_id: str) -> tuple[CallState, ServerTransaction]:
        call = self._calls.get(call_id)
        if call is None or call.role != "uas" or call.state != "incoming":
            raise SipUsageError(f"no unanswered incoming call {call_id!r}")
        tx = self._server_tx.get(call.invite_tx) if call.invite_tx else None
        if tx is None:
            raise SipUsageError(f"call {call_id!r} has no INVITE transaction")
        return call, tx

    def _end_call(self, call: CallState, reason: str, status: int | None = None) -> None:
        if self._calls.pop(call.call_id, None) is not None:
            already_ended = call.state == "cancelling"
            call.state = "terminated"
            call.ok_next = None
            call.se_deadline = None
            if not already_ended:
                self._events.append(ev.CallEnded(call.call_id, reason, status))

    # Requests --------------------------------------------------------------

    def _on_request(self, parsed: ParsedMessage, source: Addr, now: float) -> None:
        request: Request = parsed.message  # type: ignore[assignment]
        method = request.method
        if request.uri.scheme not in ("sip", "sips", "tel"):
            self._respond_stateless(request, 416, source)
            return
        # Transaction matching (17.2.3): ACK matches the INVITE transaction.
        key = self._server_key(parsed, "INVITE" if method == "ACK" else method)
        tx = self._server_tx.get(key)
        if method == "ACK":
            self._on_ack(parsed, tx, now)
            return
        if tx is not None:
            # Retransmission: resend the last response, if any (17.2.1, 17.2.2);
            # absorbed in Accepted (RFC 6026) and Confirmed.
            self.counters["request_retransmissions"] += 1
            if tx.last_response is not None and tx.state not in ("confirmed", "accepted"):
                self._out.append((tx.last_response, tx.response_dest))
            return
        tx = ServerTransaction(
            key=key,
            request=request,
            parsed=parsed,
            source=source,
            state="proceeding" if method == "INVITE" else "trying",
        )
        self._server_tx[key] = tx
        try:
            self._dispatch_request(parsed, tx, source, now)
        except (ValueError, KeyError, IndexError, UnicodeError):
            # A header failed only when the UA core read it (Contact, Record-Route,
            # Session-Expires): the caller answers 400 statelessly, and neither this
            # transaction nor a dialog it began may stay behind (no timer would end them).
            self._server_tx.pop(key, None)
            call = self._calls.get(parsed.call_id)
            if call is not None and call.invite_tx == key:
                del self._calls[parsed.call_id]
            raise

    def _dispatch_request(self, parsed: ParsedMessage, tx: ServerTransaction, source: Addr, now: float) -> None:
        request: Request = parsed.message  # type: ignore[assignment]
        method = request.method
        call = self._calls.get(parsed.call_id)
        if parsed.to_tag is not None:
            self._on_in_dialog_request(parsed, tx, call, now)
            return
        if method == "INVITE":
            self._on_invite(parsed, tx, source, now)
        elif method == "CANCEL":
            self._on_cancel(parsed, tx, now)
        elif method == "OPTIONS":
            if self.unavailable is not None:
                extra = [("Retry-After", str(self.unavailable))] + self._capabilities()
                self._send_server_response(tx, self._response(tx, 503, None, extra=extra), now)
            else:
                self._send_server_response(tx, self._response(tx, 200, None, extra=self._capabilities()), now)
        elif method in ("BYE",):
            self._send_server_response(tx, self._response(tx, 481, None), now)
        else:
            self._send_server_response(tx, self._response(tx, 501, None, extra=self._capabilities()), now)

    def _capabilities(self) -> list[tuple[str, str]]:
        return [("Allow", ", ".join(ALLOWED_METHODS)), ("Accept", "application/sdp"), ("Supported", "timer")]

    def _on_invite(self, parsed: ParsedMessage, tx: ServerTransaction, source: Addr, now: float) -> None:
        request: Request = parsed.message  # type: ignore[assignment]
        if parsed.call_id in self._calls:
            # Same Call-ID, new transaction, no To tag: a merged request (8.2.2.2).
            self._send_server_response(tx, self._response(tx, 482, None), now)
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
        self._send_server_response(tx, self._response(tx, 100, None), now)
        too_small = self._read_session_expires(call, request, now)
        if too_small is not None:
            # RFC 4028 section 9: 422 with our Min-SE.
            self._send_server_response(tx, self._response(tx, 422, call, extra=[("Min-SE", str(self.min_se))]), now)
            return
        self._calls[call.call_id] = call
        content_type = request.headers.get("Content-Type")
        meta = {}
        for name in request.headers.keys():
            lname = name.lower()
            if lname.startswith("x-") or lname in ("p-asserted-identity", "diversion", "user-agent"):
                meta[name] = request.headers.get(name) or ""
        self._events.append(
            ev.IncomingCall(
                call_id=call.call_id,
                offer=request.body,
                content_type=content_type,
                source=source,
                request_uri=str(request.uri),
                from_uri=str(parsed.from_addr.uri),
                to_uri=str(parsed.to_addr.uri),
                headers=meta,
                authorization=request.headers.get("Authorization"),
            )
        )

    def _on_cancel(self, parsed: ParsedMessage, tx: ServerTransaction, now: float) -> None:
        invite_tx = self._server_tx.get(self._server_key(parsed, "INVITE"))
        call = self._calls.get(parsed.call_id)
        if (
            invite_tx is None
            or invite_tx.parsed.call_id != parsed.call_id
            or (call is not None and call.invite_tx != invite_tx.key)
        ):
            # 9.2: no INVITE transaction matches (the branch may match another call's).
            self._send_server_response(tx, self._response(tx, 481, None), now)
            return
        self._send_server_response(tx, self._response(tx, 200, call), now)
        if call is not None and call.state == "incoming" and invite_tx.state == "proceeding":
            # 9.2: the INVITE gets 487 Request Terminated.
            self._send_server_response(invite_tx, self._response(invite_tx, 487, call), now)
            self._end_call(call, "cancelled", 487)

    def _on_ack(self, parsed: ParsedMessage, tx: ServerTransaction | None, now: float) -> None:
        if tx is not None and tx.state == "completed":
            # ACK for a non-2xx final (17.2.1): Confirmed, Timer I.
            tx.state = "confirmed"
            tx.timers.pop("G", None)
            tx.timers.pop("H", None)
            tx.timers["I"] = now + (0 if self.reliable else self.timers.t4)
            return
        call = self._calls.get(parsed.call_id)
        if call is not None and parsed.to_tag == call.local_tag:
            if call.ok_data is not None and parsed.cseq.sequence == call.ok_cseq:
                call.ok_next = None
                call.ok_data = None
                if call.state == "answered":
                    call.state = "confirmed"
                    self._events.append(ev.CallConfirmed(call.call_id))
            return
        self._drop("stray_ack", (parsed.via[0].host, parsed.via[0].port or 5060))

    def _on_in_dialog_request(
        self, parsed: ParsedMessage, tx: ServerTransaction, call: CallState | None, now: float
    ) -> None:
        request: Request = parsed.message  # type: ignore[assignment]
        method = request.method
        if call is None or parsed.to_tag != call.local_tag or (call.remote_tag and parsed.from_tag != call.remote_tag):
            # 12.2.2: no such dialog.
            self._send_server_response(tx, self._response(tx, 481, None), now)
            return
        if call.remote_seq is not None and parsed.cseq.sequence <= call.remote_seq and method != "CANCEL":
            # 12.2.2: lower CSeq than the last one seen -> 500.
            self._send_server_response(tx, self._response(tx, 500, call, extra=[("Retry-After", "1")]), now)
            return
        call.remote_seq = parsed.cseq.sequence
        if method == "BYE":
            self._send_server_response(tx, self._response(tx, 200, call), now)
            invite_tx = self._server_tx.get(call.invite_tx) if call.invite_tx else None
            if (
                call.role == "uas"
                and call.state == "incoming"
                and invite_tx is not None
                and invite_tx.state == "proceeding"
            ):
                # 15.1.2: BYE on an early dialog: the INVITE gets 487 (its transaction then ends by Timer H/I).
                self._send_server_response(invite_tx, self._response(invite_tx, 487, call), now)
            self._end_call(call, "remote_bye")
        elif method == "OPTIONS":
            self._send_server_response(tx, self._response(tx, 200, call, extra=self._capabilities()), now)
        elif method in ("INVITE", "UPDATE"):
            pending = call.update_tx is not None and call.update_tx in self._server_tx
            if pending or (method == "INVITE" and (call.ok_data is not None or call.reinvite_tx in self._client_tx)):
                # 14.2 / RFC 3311 5.2: an offer/answer is already in progress.
                self._send_server_response(tx, self._response(tx, 491, call), now)
                return
            too_small = self._read_session_expires(call, request, now)
            if too_small is not None:
                self._send_server_response(tx, self._response(tx, 422, call, extra=[("Min-SE", str(self.min_se))]), now)
                return
            if request.contact:
                call.remote_target = request.contact[0].uri  # 12.2.2: target refresh
            call.update_tx = tx.key
            self._events.append(ev.SessionUpdate(call.call_id, request.body, method))
        elif method == "NOTIFY":
            event = (request.headers.get("Event") or request.headers.get("o") or "").split(";")[0].strip().lower()
            if event != "refer":
                self._send_server_response(tx, self._response(tx, 489, call), now)
                return
            self._send_server_response(tx, self._response(tx, 200, call), now)
            status = _sipfrag_status(request.body)
            if status is not None:
                self._events.append(ev.TransferProgress(call.call_id, status, status >= 200))
        else:
            self._send_server_response(tx, self._response(tx, 501, call, extra=self._capabilities()), now)

    def _retransmit_2xx(self, call: CallState, now: float) -> None:
        if call.ok_data is None:
            call.ok_next = None
            return
        if now >= call.ok_give_up:
            # 13.3.1.4: no ACK in 64*T1: end the dialog with BYE.
            self.counters["timeouts_ack"] += 1
            call.ok_next = None
            self._send_in_dialog(call, "BYE", now)
            self._end_call(call, "timeout", 408)
            return
        self.counters["retransmissions"] += 1
        self._out.append((call.ok_data, call.ok_dest or call.peer))
        call.ok_interval = min(2 * call.ok_interval, self.timers.t2)
        call.ok_next = min(now + call.ok_interval, call.ok_give_up)


def _sipfrag_status(body: bytes) -> int | None:
    """The status code of a ``message/sipfrag`` status line (RFC 3420), e.g. ``SIP/2.0 200 OK``."""
    line = body.split(b"\r\n", 1)[0].split(b"\n", 1)[0].strip()
    parts = line.split(b" ", 2)
    if len(parts) >= 2 and parts[0] == b"SIP/2.0" and parts[1].isdigit() and len(parts[1]) == 3:
        return int(parts[1])
    return None
