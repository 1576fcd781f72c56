"""The UAC side of :class:`bridge.sip.core.SipCore`: placing a call (RFC 3261 section 13.2),
its responses (provisional, 2xx with the ACK of 13.2.2.4, non-2xx with the ACK of
17.1.1.3), a digest challenge answered once (22.2), our re-INVITE's answer (14.1), and
CANCEL (9.1). A mixin: the transaction layer and the dialog state are the core's.
"""

from __future__ import annotations

import logging

from sipmessage import URI, Address, Request, Response

from . import events as ev
from .digest import authorization_for
from .message import ParsedMessage, build_request, new_branch, new_call_id, new_tag, with_tag
from .state import ALLOWED_METHODS, Addr, CallState, ClientTransaction

log = logging.getLogger("bridge.sip")


class UacMixin:
    """UAC methods of :class:`bridge.sip.core.SipCore` (see the module docstring)."""

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
        local = Address(
            uri=URI(scheme="sip", user=from_user, host=f"[{host}]" if ":" in host else host, port=self.public_port)
        )
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
            extra_headers=[("Allow", ", ".join(ALLOWED_METHODS)), ("User-Agent", self.user_agent)]
            + (extra_headers or []),
            body=sdp,
        )
        call.invite_request = request
        self._calls[call_id] = call
        ctx = self._start_client_tx(request, dest, call_id, now)
        call.invite_tx = ctx.key
        return call_id

    def _on_invite_response(
        self, ctx: ClientTransaction, parsed: ParsedMessage, call: CallState | None, source: Addr, now: float
    ) -> None:
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
            # 12.2.1.1: with a route set, requests go to its first (loose-routing) hop.
            hop = call.route_set[0].uri if call.route_set else call.remote_target
            call.peer = source if self.reliable else self._target_addr(hop, source)
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
            self._end_call(call, "cancelled" if status == 487 else "rejected", status)

    def _ack_non_2xx(self, ctx: ClientTransaction, response: Response, now: float) -> None:
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

    def _retry_with_credentials(self, call: CallState, ctx: ClientTransaction, response: Response, now: float) -> None:
        """22.2: resend the INVITE with Authorization/Proxy-Authorization, CSeq + 1."""
        call.auth_tried = True
        header = "WWW-Authenticate" if response.code == 401 else "Proxy-Authenticate"
        reply = "Authorization" if response.code == 401 else "Proxy-Authorization"
        old = ctx.request
        try:
            value = authorization_for(
                response.headers[header], call.credentials[0], call.credentials[1], "INVITE", str(old.uri)
            )
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

    def _on_reinvite_response(self, ctx: ClientTransaction, call: CallState, response: Response, now: float) -> None:
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

    def _send_cancel(self, call: CallState, now: float) -> None:
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
