"""The UAC: placing a call (RFC 3261 section 13.2), its responses (provisional, 2xx with
the ACK of 13.2.2.4, non-2xx with the ACK of 17.1.1.3), a digest challenge answered once
(22.2), our re-INVITE's answer (14.1), and CANCEL (9.1). Sans-IO, composed into
:class:`bridge.sip.core.SipCore` with the same outbox, transactions and dialogs.
"""

from __future__ import annotations

import logging

from sipmessage import URI, Address, Request, Response

from . import events as ev
from .addressing import LocalAddress
from .dialog import Dialogs, target_addr
from .digest import authorization_for
from .message import ParsedMessage, build_request, new_branch, new_call_id, new_tag, with_tag
from .outbox import Outbox
from .state import ALLOWED_METHODS, Addr, CallState
from .transaction import ClientTransaction, Transactions

log = logging.getLogger("bridge.sip")


class Uac:
    """Outgoing calls of one core.

    Args:
        outbox: the core's output.
        transactions: the core's transactions.
        dialogs: the core's dialogs.
        address: our address in Via, Contact and From.
        user_agent: the ``User-Agent`` value.
        reliable: TCP or TLS (the peer is the connection).
    """

    def __init__(
        self,
        outbox: Outbox,
        transactions: Transactions,
        dialogs: Dialogs,
        address: LocalAddress,
        user_agent: str,
        reliable: bool,
    ) -> None:
        self._outbox = outbox
        self._tx = transactions
        self._dialogs = dialogs
        self._address = address
        self._user_agent = user_agent
        self._reliable = reliable

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
        """See :meth:`bridge.sip.core.SipCore.invite`.

        Raises:
            ValueError: ``target`` is not a valid SIP URI.
        """
        uri = URI.parse(target)
        call_id = new_call_id(self._address.host(dest))
        local_tag = new_tag()
        local = self._address.uri(from_user, dest)
        remote = Address(uri=uri)
        call = CallState(
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
        request = build_request(
            "INVITE",
            uri,
            via=self._address.via(new_branch(), dest),
            from_addr=with_tag(local, local_tag),
            to_addr=remote,
            call_id=call_id,
            cseq=call.local_seq,
            contact=self._address.contact(dest),
            extra_headers=[("Allow", ", ".join(ALLOWED_METHODS)), ("User-Agent", self._user_agent)]
            + (extra_headers or []),
            body=sdp,
        )
        call.invite_request = request
        self._dialogs.add(call)
        ctx = self._tx.start_client(request, dest, call_id, local_tag, now)
        call.invite_tx = ctx.key
        return call_id

    def receive(self, parsed: ParsedMessage, source: Addr, now: float) -> None:
        """A response: matched to its client transaction (17.1.3) and handled; a
        retransmitted 2xx to our INVITE gets its ACK again (13.2.2.4); a stray one is
        dropped and counted."""
        response: Response = parsed.message  # type: ignore[assignment]
        ctx = self._tx.client((parsed.branch or "", parsed.cseq.method))
        status = response.code
        if ctx is None:
            call = self._dialogs.get(parsed.call_id)
            if status // 100 == 2 and parsed.cseq.method == "INVITE" and call is not None and call.ack_data:
                # Retransmitted 2xx: the UA core resends the ACK (13.2.2.4).
                self._outbox.send(call.ack_data, call.peer)
                return
            self._outbox.drop("stray_response", source)
            return
        call = self._call_of(ctx)
        if ctx.is_invite:
            self.on_response(ctx, parsed, call, source, now)
            return
        # NICT (17.1.2)
        if status < 200:
            ctx.provisional()
            return
        if ctx.final(now) and ctx.request.method == "REFER" and call is not None:
            self._outbox.emit(ev.TransferProgress(call.call_id, status, status >= 300))

    def timed_out(self, ctx: ClientTransaction, now: float) -> None:
        """Timer B or F: no final response. A REFER's transfer failed (408); our re-INVITE,
        INVITE or BYE ends the call (RFC 3261 section 17.1.1.2, RFC 4028 section 10)."""
        call = self._call_of(ctx)
        if call is None:
            return
        if ctx.request.method == "REFER":
            self._outbox.emit(ev.TransferProgress(call.call_id, 408, True))
        elif ctx.key == call.reinvite_tx:
            self._dialogs.send(call, "BYE", now)
            self._dialogs.end(call, "timeout", 408)
        elif ctx.is_invite or ctx.request.method == "BYE":
            self._dialogs.end(call, "timeout", 408)

    def _call_of(self, ctx: ClientTransaction) -> CallState | None:
        """The call ``ctx`` was sent in, if it is still up (same Call-ID and our tag)."""
        call = self._dialogs.get(ctx.call_id)
        return call if call is not None and call.local_tag == ctx.local_tag else None

    def on_response(
        self, ctx: ClientTransaction, parsed: ParsedMessage, call: CallState | None, source: Addr, now: float
    ) -> None:
        """A response to our INVITE (or re-INVITE) ``ctx`` of ``call`` (``None``: ended)."""
        response: Response = parsed.message  # type: ignore[assignment]
        status = response.code
        if call is not None and ctx.key == call.reinvite_tx:
            self._on_reinvite_response(ctx, call, response, now)
            return
        if status < 200:
            ctx.provisional()
            if call is not None:
                call.provisional_seen = True
                if call.cancel_pending:
                    call.cancel_pending = False
                    self.cancel(call, now)
                elif call.state == "calling":
                    call.state = "early"
                    self._outbox.emit(ev.CallProgress(call.call_id, status))
            return
        if status < 300:
            # 2xx: the transaction ends; the UA core ACKs (17.1.1.2, 13.2.2.4).
            self._tx.end_client(ctx)
            if call is None:
                return
            call.remote_tag = parsed.to_tag
            call.remote_uri = parsed.to_addr
            contact = response.contact
            if contact:
                call.remote_target = contact[0].uri
            call.route_set = list(reversed(response.record_route))
            # 12.2.1.1: with a route set, requests go to its first (loose-routing) hop.
            hop = call.route_set[0].uri if call.route_set else call.remote_target
            call.peer = source if self._reliable else target_addr(hop, source)
            ack = self._dialogs.build_request(call, "ACK", cseq=ctx.request.cseq.sequence)
            call.ack_data = bytes(ack)
            self._outbox.send(call.ack_data, call.peer)
            if call.state == "cancelling":
                self._dialogs.send(call, "BYE", now)
                self._dialogs.end(call, "local_bye")
                return
            call.state = "confirmed"
            self._outbox.emit(ev.CallAnswered(call.call_id, response.body, source))
            return
        # 3xx-6xx: ACK in the transaction (17.1.1.3), Timer D.
        self._outbox.send(ctx.ack_non_2xx(response, now), ctx.dest)
        if (
            call is not None
            and status in (401, 407)
            and call.credentials
            and not call.auth_tried
            and call.state != "cancelling"
        ):
            self._retry_with_credentials(call, ctx, response, now)
            return
        if call is not None:
            self._dialogs.end(call, "cancelled" if status == 487 else "rejected", status)

    def cancel(self, call: CallState, now: float) -> None:
        """CANCEL our INVITE (9.1): same Request-URI, Call-ID, From, To, CSeq number and Via."""
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
        self._tx.start_client(cancel, call.peer, call.call_id, call.local_tag, now)

    def _retry_with_credentials(self, call: CallState, ctx: ClientTransaction, response: Response, now: float) -> None:
        """22.2: resend the INVITE with Authorization/Proxy-Authorization, CSeq + 1."""
        call.auth_tried = True
        header = "WWW-Authenticate" if response.code == 401 else "Proxy-Authenticate"
        reply = "Authorization" if response.code == 401 else "Proxy-Authorization"
        old = ctx.request
        assert call.credentials is not None
        try:
            value = authorization_for(
                response.headers[header], call.credentials[0], call.credentials[1], "INVITE", str(old.uri)
            )
        except (KeyError, ValueError) as exc:
            log.warning("sip: call %s: cannot answer the %d challenge: %r", call.call_id, response.code, exc)
            self._dialogs.end(call, "rejected", response.code)
            return
        call.local_seq += 1
        request = Request("INVITE", old.uri, body=old.body)
        for name in old.headers.keys():
            request.headers.setlist(name, list(old.headers.getlist(name)))
        request.headers.set("Via", str(self._address.via(new_branch(), call.peer)))
        request.headers.set("CSeq", f"{call.local_seq} INVITE")
        request.headers.set(reply, value)
        call.invite_request = request
        new = self._tx.start_client(request, call.peer, call.call_id, call.local_tag, now)
        call.invite_tx = new.key

    def _on_reinvite_response(self, ctx: ClientTransaction, call: CallState, response: Response, now: float) -> None:
        status = response.code
        if status < 200:
            ctx.provisional()
            return
        if status < 300:
            self._tx.end_client(ctx)
            call.reinvite_tx = None
            ack = self._dialogs.build_request(call, "ACK", cseq=ctx.request.cseq.sequence)
            self._outbox.send(bytes(ack), ctx.dest)
            if call.se_interval:
                self._dialogs.arm_session_timer(call, now)
            return
        self._outbox.send(ctx.ack_non_2xx(response, now), ctx.dest)
        call.reinvite_tx = None
        if status in (408, 481):
            # RFC 4028 section 10 / RFC 3261 14.1: the dialog is gone.
            self._dialogs.send(call, "BYE", now)
            self._dialogs.end(call, "timeout" if status == 408 else "failed", status)
