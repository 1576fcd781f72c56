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

Errors: hostile input never raises out of :meth:`receive_datagram`; it is
answered (400) or dropped and counted in :attr:`SipCore.counters` under
``dropped_<reason>``. Misuse of the API (unknown ``call_id``, answering twice)
raises :class:`SipUsageError`.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sipmessage import Address, Parameters, Request, Response, URI, Via

from . import events as ev
from .digest import authorization_for
from .message import (
    ParsedMessage,
    SipParseError,
    build_request,
    build_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_datagram,
    with_tag,
)

log = logging.getLogger("bridge.sip")

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
class _ServerTransaction:
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
class _ClientTransaction:
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
class _Call:
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
        self._server_tx: dict[tuple[str, str, str], _ServerTransaction] = {}
        self._client_tx: dict[tuple[str, str], _ClientTransaction] = {}
        self._calls: dict[str, _Call] = {}
        self._logged_reasons: set[str] = set()

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

    def _answer_invite(self, call: _Call, tx: _ServerTransaction, sdp: bytes, now: float) -> None:
        """200 OK to an INVITE or re-INVITE; the UA core retransmits it until ACK (13.3.1.4)."""
        extra = [("Contact", str(self._contact(call.peer))), ("Allow", ", ".join(ALLOWED_METHODS)), ("Supported", "timer")]
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

    def _read_session_expires(self, call: _Call, request: Request, now: float) -> int | None:
        """Apply the request's Session-Expires; return a too-small interval (-> 422) or None."""
        supported = [t.lower() for t in request.supported + request.require]
        call.peer_supports_timer = call.peer_supports_timer or "timer" in supported
        value = request.headers.get("Session-Expires")
        if value is None:
            if call.peer_supports_timer and call.se_interval == 0:
                # 9: the UAS may ask for a session timer when the UAC supports it.
                call.se_interval, call.se_refresher = self.session_expires, "uac"
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

    def _session_timer_headers(self, call: _Call, now: float) -> list[tuple[str, str]]:
        if not call.se_interval:
            return []
        self._arm_session_timer(call, now)
        headers = [("Session-Expires", f"{call.se_interval};refresher={call.se_refresher}")]
        if call.peer_supports_timer:
            headers.append(("Require", "timer"))
        return headers

    def _we_refresh(self, call: _Call) -> bool:
        # The refresher names a role in the dialog-creating transaction.
        return (call.se_refresher == "uas") == (call.role == "uas")

    def _arm_session_timer(self, call: _Call, now: float) -> None:
        interval = call.se_interval
        if self._we_refresh(call):
            call.se_deadline = now + interval / 2  # 10: refresh at half the interval
        else:
            call.se_deadline = now + interval - min(32, interval / 3)  # 10: BYE before expiry

    def _session_timer(self, call: _Call, now: float) -> None:
        call.se_deadline = None
        if self._we_refresh(call):
            self.counters["session_refreshes_sent"] += 1
            self.reinvite(call.call_id, call.last_answer_sdp, now)
        else:
            self.counters["session_timer_expired"] += 1
            log.info("sip: call %s: session expired without refresh (RFC 4028): BYE", call.call_id)
            self._send_in_dialog(call, "BYE", now)
            self._end_call(call, "session_expired", 408)

    # Mid-call actions --------------------------------------------------------

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

    def _pending_update(self, call_id: str) -> tuple[_Call, _ServerTransaction]:
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
        extra = [("Refer-To", f"<{target}>"), ("Referred-By", str(Address(uri=call.local_uri.uri))), ("Contact", str(self._contact(call.peer)))]
        request = self._build_in_dialog(call, "REFER", extra=extra)
        self._start_client_tx(request, self._dialog_dest(call), call.call_id, now)

    def reject(self, call_id: str, status: int, now: float, *, extra_headers: list[tuple[str, str]] | None = None) -> None:
        """Answer an incoming call with a final non-2xx ``status`` (e.g. 486, 488, 503).

        The call ends at once (:class:`CallEnded` with reason ``rejected``); the
        transaction keeps retransmitting until ACK (Timer G/H).
        """
        if not 300 <= status <= 699:
            raise SipUsageError(f"reject needs a 3xx-6xx status, not {status}")
        call, tx = self._incoming(call_id)
        self._send_server_response(tx, self._response(tx, status, call, extra=extra_headers), now)
        self._end_call(call, "rejected", status)

    # UAC action ------------------------------------------------------------

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
        uri = URI.parse(target)
        host = self.local_host(dest)
        call_id = new_call_id(host)
        local_tag = new_tag()
        local = Address(uri=URI(scheme="sip", user=from_user, host=f"[{host}]" if ":" in host else host, port=self.public_port))
        remote = Address(uri=uri)
        call = _Call(
            call_id=call_id,
            role="uac",
            local_tag=local_tag,
            local_uri=local,
            remote_uri=remote,
            remote_target=uri,
            peer=dest,
            state="calling",
            credentials=credentials,
        )
        branch = new_branch()
        request = build_request(
            "INVITE",
            uri,
            via=self._via(branch, dest),
            from_addr=with_tag(local, local_tag),
            to_addr=remote,
            call_id=call_id,
            cseq=call.local_seq,
            contact=self._contact(dest),
            extra_headers=[("Allow", ", ".join(ALLOWED_METHODS)), ("User-Agent", self.user_agent)] + (extra_headers or []),
            body=sdp,
        )
        call.invite_request = request
        self._calls[call_id] = call
        ctx = self._start_client_tx(request, dest, call_id, now)
        call.invite_tx = ctx.key
        return call_id

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
            log.warning("sip: dropped datagram from %s:%s: %s %s (logged once per reason; see counters)", addr[0], addr[1], reason, detail)
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

    def _response_dest(self, parsed: ParsedMessage, source: Addr) -> Addr:
        """Where a response goes, RFC 3261 section 18.2.2 with RFC 3581 ``rport``."""
        top = parsed.via[0]
        if self.reliable or "rport" in top.parameters:
            return source
        return (source[0], top.port or 5060)

    @staticmethod
    def _response_vias(parsed: ParsedMessage, source: Addr) -> list[str]:
        """Via values for a response: top Via gets ``received``/``rport`` (18.2.1, RFC 3581)."""
        top = parsed.via[0]
        changes: dict[str, str | None] = {}
        if top.host.strip("[]") != source[0]:
            changes["received"] = source[0]
        if "rport" in top.parameters:
            changes["rport"] = str(source[1])
            changes["received"] = source[0]
        vias = [str(Via(top.transport, top.host, top.port, top.parameters.replace(**changes)))] if changes else [str(top)]
        return vias + [str(v) for v in parsed.via[1:]]

    def _response(
        self,
        tx: _ServerTransaction,
        status: int,
        call: _Call | None,
        *,
        body: bytes = b"",
        extra: list[tuple[str, str]] | None = None,
    ) -> bytes:
        response = build_response(
            tx.request,
            status,
            to_tag=call.local_tag if call else new_tag(),
            extra_headers=[("Server", self.user_agent)] + (extra or []),
            body=body,
        )
        response.headers.setlist("Via", self._response_vias(tx.parsed, tx.source))
        return bytes(response)

    def _respond_stateless(self, request: Request, status: int, addr: Addr) -> None:
        """Answer outside any transaction (malformed requests): best effort."""
        if request.method == "ACK":
            return
        try:
            response = build_response(request, status, to_tag=new_tag(), extra_headers=[("Server", self.user_agent)])
            via = request.via
            dest = addr if self.reliable or "rport" in via[0].parameters else (addr[0], via[0].port or 5060)
        except (KeyError, ValueError, IndexError):
            return
        self.counters[f"responses_sent_{status}"] += 1
        self._out.append((bytes(response), dest))

    def _send_server_response(self, tx: _ServerTransaction, data: bytes, now: float) -> None:
        status = int(data[8:11])
        tx.last_response = data
        tx.response_dest = self._response_dest(tx.parsed, tx.source)
        self.counters[f"responses_sent_{status}"] += 1
        self._out.append((data, tx.response_dest))
        if status >= 200:
            if tx.is_invite:
                if status >= 300:
                    tx.state = "completed"
                    tx.g_interval = self.timers.t1
                    if not self.reliable:
                        tx.timers["G"] = now + self.timers.t1
                    tx.timers["H"] = now + 64 * self.timers.t1
            else:
                tx.state = "completed"
                tx.timers["J"] = now + (0 if self.reliable else 64 * self.timers.t1)
        elif not tx.is_invite:
            tx.state = "proceeding"

    def _server_timer(self, tx: _ServerTransaction, name: str, now: float) -> None:
        if name == "G" and tx.state == "completed" and tx.last_response:
            self.counters["retransmissions"] += 1
            self._out.append((tx.last_response, tx.response_dest))
            tx.g_interval = min(2 * tx.g_interval, self.timers.t2)
            tx.timers["G"] = now + tx.g_interval
        elif name == "H":
            # No ACK for our non-2xx final: give up (17.2.1).
            self.counters["timeouts_H"] += 1
            self._server_tx.pop(tx.key, None)
        elif name in ("I", "J", "L"):
            self._server_tx.pop(tx.key, None)

    def _incoming(self, call_id: str) -> tuple[_Call, _ServerTransaction]:
        call = self._calls.get(call_id)
        if call is None or call.role != "uas" or call.state != "incoming":
            raise SipUsageError(f"no unanswered incoming call {call_id!r}")
        tx = self._server_tx.get(call.invite_tx) if call.invite_tx else None
        if tx is None:
            raise SipUsageError(f"call {call_id!r} has no INVITE transaction")
        return call, tx

    def _end_call(self, call: _Call, reason: str, status: int | None = None) -> None:
        if self._calls.pop(call.call_id, None) is not None:
            already_ended = call.state == "cancelling"
            call.state = "terminated"
            call.ok_next = None
            call.se_deadline = None
            if not already_ended:
                self._events.append(ev.CallEnded(call.call_id, reason, status))

    @staticmethod
    def _server_key(parsed: ParsedMessage, method: str) -> tuple[str, str, str]:
        top = parsed.via[0]
        return (parsed.branch or "", f"{top.host}:{top.port or 5060}", method)

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
        tx = _ServerTransaction(key=key, request=request, parsed=parsed, source=source, state="proceeding" if method == "INVITE" else "trying")
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

    def _dispatch_request(self, parsed: ParsedMessage, tx: _ServerTransaction, source: Addr, now: float) -> None:
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
            self._send_server_response(tx, self._response(tx, 200, None, extra=self._capabilities()), now)
        elif method in ("BYE",):
            self._send_server_response(tx, self._response(tx, 481, None), now)
        else:
            self._send_server_response(tx, self._response(tx, 501, None, extra=self._capabilities()), now)

    def _capabilities(self) -> list[tuple[str, str]]:
        return [("Allow", ", ".join(ALLOWED_METHODS)), ("Accept", "application/sdp"), ("Supported", "timer")]

    def _on_invite(self, parsed: ParsedMessage, tx: _ServerTransaction, source: Addr, now: float) -> None:
        request: Request = parsed.message  # type: ignore[assignment]
        if parsed.call_id in self._calls:
            # Same Call-ID, new transaction, no To tag: a merged request (8.2.2.2).
            self._send_server_response(tx, self._response(tx, 482, None), now)
            return
        contact = request.contact
        remote_target = contact[0].uri if contact else parsed.from_addr.uri
        call = _Call(
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

    def _on_cancel(self, parsed: ParsedMessage, tx: _ServerTransaction, now: float) -> None:
        invite_tx = self._server_tx.get(self._server_key(parsed, "INVITE"))
        call = self._calls.get(parsed.call_id)
        if invite_tx is None or invite_tx.parsed.call_id != parsed.call_id or (call is not None and call.invite_tx != invite_tx.key):
            # 9.2: no INVITE transaction matches (the branch may match another call's).
            self._send_server_response(tx, self._response(tx, 481, None), now)
            return
        self._send_server_response(tx, self._response(tx, 200, call), now)
        if call is not None and call.state == "incoming" and invite_tx.state == "proceeding":
            # 9.2: the INVITE gets 487 Request Terminated.
            self._send_server_response(invite_tx, self._response(invite_tx, 487, call), now)
            self._end_call(call, "cancelled", 487)

    def _on_ack(self, parsed: ParsedMessage, tx: _ServerTransaction | None, now: float) -> None:
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

    def _on_in_dialog_request(self, parsed: ParsedMessage, tx: _ServerTransaction, call: _Call | None, now: float) -> None:
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
            if call.role == "uas" and call.state == "incoming" and invite_tx is not None and invite_tx.state == "proceeding":
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

    def _retransmit_2xx(self, call: _Call, now: float) -> None:
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

    # Client side -----------------------------------------------------------

    def _start_client_tx(self, request: Request, dest: Addr, call_id: str, now: float) -> _ClientTransaction:
        branch = request.via[0].parameters["branch"]
        data = bytes(request)
        ctx = _ClientTransaction(
            key=(branch, request.method),
            request=request,
            data=data,
            dest=dest,
            call_id=call_id,
            state="calling" if request.method == "INVITE" else "trying",
            interval=self.timers.t1,
            local_tag=owner.local_tag if (owner := self._calls.get(call_id)) is not None else "",
        )
        if ctx.is_invite:
            ctx.timers = {"B": now + 64 * self.timers.t1}
            if not self.reliable:
                ctx.timers["A"] = now + self.timers.t1
        else:
            ctx.timers = {"F": now + 64 * self.timers.t1}
            if not self.reliable:
                ctx.timers["E"] = now + self.timers.t1
        self._client_tx[ctx.key] = ctx
        self._out.append((data, dest))
        return ctx

    def _client_timer(self, ctx: _ClientTransaction, name: str, now: float) -> None:
        if name in ("A", "E"):
            if ctx.state in ("calling", "trying", "proceeding") and not (name == "A" and ctx.state == "proceeding"):
                self.counters["retransmissions"] += 1
                self._out.append((ctx.data, ctx.dest))
                ctx.interval = 2 * ctx.interval if name == "A" else min(2 * ctx.interval, self.timers.t2)
                if ctx.state == "proceeding":
                    ctx.interval = self.timers.t2
                ctx.timers[name] = now + ctx.interval
        elif name in ("B", "F"):
            self.counters[f"timeouts_{name}"] += 1
            self._client_tx.pop(ctx.key, None)
            call = self._call_of(ctx)
            if call is None:
                return
            if ctx.request.method == "REFER":
                self._events.append(ev.TransferProgress(call.call_id, 408, True))
            elif ctx.key == call.reinvite_tx:
                self._send_in_dialog(call, "BYE", now)
                self._end_call(call, "timeout", 408)
            elif ctx.is_invite or ctx.request.method == "BYE":
                self._end_call(call, "timeout", 408)
        elif name in ("D", "K"):
            self._client_tx.pop(ctx.key, None)

    def _call_of(self, ctx: _ClientTransaction) -> _Call | None:
        """The call ``ctx`` was sent in, if it is still up (same Call-ID and our tag)."""
        call = self._calls.get(ctx.call_id)
        return call if call is not None and call.local_tag == ctx.local_tag else None

    def _on_response(self, parsed: ParsedMessage, source: Addr, now: float) -> None:
        response: Response = parsed.message  # type: ignore[assignment]
        key = (parsed.branch or "", parsed.cseq.method)
        ctx = self._client_tx.get(key)
        status = response.code
        call = self._calls.get(parsed.call_id)
        if ctx is None:
            if status // 100 == 2 and parsed.cseq.method == "INVITE" and call is not None and call.ack_data:
                # Retransmitted 2xx: the UA core resends the ACK (13.2.2.4).
                self._out.append((call.ack_data, call.peer))
                return
            self._drop("stray_response", source)
            return
        call = self._call_of(ctx)
        if ctx.is_invite:
            self._on_invite_response(ctx, parsed, call, source, now)
            return
        # NICT (17.1.2)
        if status < 200:
            ctx.state = "proceeding"
            return
        if ctx.state in ("trying", "proceeding"):
            ctx.state = "completed"
            ctx.timers = {"K": now + (0 if self.reliable else self.timers.t4)}
            if ctx.request.method == "REFER" and call is not None:
                self._events.append(ev.TransferProgress(call.call_id, status, status >= 300))

    def _on_invite_response(self, ctx: _ClientTransaction, parsed: ParsedMessage, call: _Call | None, source: Addr, now: float) -> None:
        response: Response = parsed.message  # type: ignore[assignment]
        status = response.code
        if call is not None and ctx.key == call.reinvite_tx:
            self._on_reinvite_response(ctx, call, response, now)
            return
        if status < 200:
            if ctx.state == "calling":
                ctx.state = "proceeding"
                ctx.timers.pop("A", None)
            if call is not None:
                call.provisional_seen = True
                if call.cancel_pending:
                    call.cancel_pending = False
                    self._send_cancel(call, now)
                elif call.state == "calling":
                    call.state = "early"
                    self._events.append(ev.CallProgress(call.call_id, status))
            return
        if status < 300:
            # 2xx: transaction ends; the UA core ACKs (17.1.1.2, 13.2.2.4).
            self._client_tx.pop(ctx.key, None)
            if call is None:
                return
            call.remote_tag = parsed.to_tag
            call.remote_uri = parsed.to_addr
            contact = response.contact
            if contact:
                call.remote_target = contact[0].uri
            call.route_set = list(reversed(response.record_route))
            call.peer = source if self.reliable else self._target_addr(call.remote_target, source)
            ack = self._build_in_dialog(call, "ACK", cseq=ctx.request.cseq.sequence)
            call.ack_data = bytes(ack)
            self._out.append((call.ack_data, call.peer))
            if call.state == "cancelling":
                self._send_in_dialog(call, "BYE", now)
                self._end_call(call, "local_bye")
                return
            call.state = "confirmed"
            self._events.append(ev.CallAnswered(call.call_id, response.body, source))
            return
        # 3xx-6xx: ACK in the transaction (17.1.1.3), Timer D.
        self._ack_non_2xx(ctx, response, now)
        if call is not None and status in (401, 407) and call.credentials and not call.auth_tried and call.state != "cancelling":
            self._retry_with_credentials(call, ctx, response, now)
            return
        if call is not None:
            self._end_call(call, "cancelled" if status == 487 else "rejected", status)

    def _ack_non_2xx(self, ctx: _ClientTransaction, response: Response, now: float) -> None:
        if ctx.ack is None:
            ack = Request("ACK", ctx.request.uri)
            ack.headers.set("Via", ctx.request.headers["Via"])
            ack.headers.set("Max-Forwards", "70")
            ack.headers.set("From", ctx.request.headers["From"])
            ack.headers.set("To", response.headers["To"])
            ack.headers.set("Call-ID", ctx.request.headers["Call-ID"])
            ack.headers.set("CSeq", f"{ctx.request.cseq.sequence} ACK")
            ack.headers.set("Content-Length", "0")
            ctx.ack = bytes(ack)
        self._out.append((ctx.ack, ctx.dest))
        if ctx.state != "completed":
            ctx.state = "completed"
            ctx.timers = {"D": now + (0 if self.reliable else 32.0)}

    def _retry_with_credentials(self, call: _Call, ctx: _ClientTransaction, response: Response, now: float) -> None:
        """22.2: resend the INVITE with Authorization/Proxy-Authorization, CSeq + 1."""
        call.auth_tried = True
        header = "WWW-Authenticate" if response.code == 401 else "Proxy-Authenticate"
        reply = "Authorization" if response.code == 401 else "Proxy-Authorization"
        old = ctx.request
        try:
            value = authorization_for(response.headers[header], call.credentials[0], call.credentials[1], "INVITE", str(old.uri))
        except (KeyError, ValueError) as exc:
            log.warning("sip: call %s: cannot answer the %d challenge: %r", call.call_id, response.code, exc)
            self._end_call(call, "rejected", response.code)
            return
        call.local_seq += 1
        request = Request("INVITE", old.uri, body=old.body)
        for name in old.headers.keys():
            request.headers.setlist(name, list(old.headers.getlist(name)))
        request.headers.set("Via", str(self._via(new_branch(), call.peer)))
        request.headers.set("CSeq", f"{call.local_seq} INVITE")
        request.headers.set(reply, value)
        call.invite_request = request
        new = self._start_client_tx(request, call.peer, call.call_id, now)
        call.invite_tx = new.key

    def _on_reinvite_response(self, ctx: _ClientTransaction, call: _Call, response: Response, now: float) -> None:
        status = response.code
        if status < 200:
            if ctx.state == "calling":
                ctx.state = "proceeding"
                ctx.timers.pop("A", None)
            return
        if status < 300:
            self._client_tx.pop(ctx.key, None)
            call.reinvite_tx = None
            ack = self._build_in_dialog(call, "ACK", cseq=ctx.request.cseq.sequence)
            self._out.append((bytes(ack), ctx.dest))
            if call.se_interval:
                self._arm_session_timer(call, now)
            return
        self._ack_non_2xx(ctx, response, now)
        call.reinvite_tx = None
        if status in (408, 481):
            # RFC 4028 section 10 / RFC 3261 14.1: the dialog is gone.
            self._send_in_dialog(call, "BYE", now)
            self._end_call(call, "timeout" if status == 408 else "failed", status)

    @staticmethod
    def _target_addr(uri: URI, fallback: Addr) -> Addr:
        """Where to send in-dialog requests: the remote target if it is an IP literal."""
        try:
            ipaddress.ip_address(uri.host.strip("[]"))
        except ValueError:
            return fallback
        return (uri.host.strip("[]"), uri.port or 5060)

    def _build_in_dialog(self, call: _Call, method: str, *, cseq: int | None = None, extra: list[tuple[str, str]] | None = None, body: bytes = b"") -> Request:
        if cseq is None:
            call.local_seq += 1
            cseq = call.local_seq
        remote = call.remote_uri
        if call.remote_tag:
            remote = with_tag(remote, call.remote_tag)
        return build_request(
            method,
            call.remote_target,
            via=self._via(new_branch(), call.peer),
            from_addr=with_tag(call.local_uri, call.local_tag),
            to_addr=remote,
            call_id=call.call_id,
            cseq=cseq,
            route=call.route_set,
            extra_headers=[("User-Agent", self.user_agent)] + (extra or []),
            body=body,
        )

    def _dialog_dest(self, call: _Call) -> Addr:
        if call.role == "uac" or self.reliable:
            return call.peer  # UAC: the 2xx's target; reliable: the dialog's connection
        return self._target_addr(call.remote_target, call.peer)

    def _send_in_dialog(self, call: _Call, method: str, now: float) -> None:
        request = self._build_in_dialog(call, method)
        self._start_client_tx(request, self._dialog_dest(call), call.call_id, now)

    def _send_cancel(self, call: _Call, now: float) -> None:
        """CANCEL per 9.1: same Request-URI, Call-ID, From, To, CSeq number and Via."""
        invite = call.invite_request
        assert invite is not None
        cancel = Request("CANCEL", invite.uri)
        cancel.headers.set("Via", invite.headers["Via"])
        cancel.headers.set("Max-Forwards", "70")
        cancel.headers.set("From", invite.headers["From"])
        cancel.headers.set("To", invite.headers["To"])
        cancel.headers.set("Call-ID", invite.headers["Call-ID"])
        cancel.headers.set("CSeq", f"{invite.cseq.sequence} CANCEL")
        cancel.headers.set("Content-Length", "0")
        call.state = "cancelling"
        self._start_client_tx(cancel, call.peer, call.call_id, now)


def _sipfrag_status(body: bytes) -> int | None:
    """The status code of a ``message/sipfrag`` status line (RFC 3420), e.g. ``SIP/2.0 200 OK``."""
    line = body.split(b"\r\n", 1)[0].split(b"\n", 1)[0].strip()
    parts = line.split(b" ", 2)
    if len(parts) >= 2 and parts[0] == b"SIP/2.0" and parts[1].isdigit() and len(parts[1]) == 3:
        return int(parts[1])
    return None
