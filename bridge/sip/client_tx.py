"""The client transaction layer of :class:`bridge.sip.core.SipCore` (RFC 3261 section
17.1: INVITE client transactions with timers A, B, D; non-INVITE with E, F, K; a response
matched to its transaction by branch and CSeq method, 17.1.3) and the requests we send
inside a dialog (section 12.2.1.1: Request-URI the remote target, route set, CSeq; the
next hop by 8.1.2). A mixin: the dialog state and the UAC's INVITE responses
(:mod:`.uac`) are the core's.
"""

from __future__ import annotations

import ipaddress

from sipmessage import URI, Request, Response

from . import events as ev
from .message import ParsedMessage, build_request, new_branch, with_tag
from .state import Addr, CallState, ClientTransaction


class ClientTransactionMixin:
    """Client-transaction methods of :class:`bridge.sip.core.SipCore` (see the module docstring)."""

    def _start_client_tx(self, request: Request, dest: Addr, call_id: str, now: float) -> ClientTransaction:
        branch = request.via[0].parameters["branch"]
        data = bytes(request)
        ctx = ClientTransaction(
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

    def _client_timer(self, ctx: ClientTransaction, name: str, now: float) -> None:
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

    def _call_of(self, ctx: ClientTransaction) -> CallState | None:
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

    @staticmethod
    def _target_addr(uri: URI, fallback: Addr) -> Addr:
        """Where to send in-dialog requests: the remote target if it is an IP literal."""
        try:
            ipaddress.ip_address(uri.host.strip("[]"))
        except ValueError:
            return fallback
        return (uri.host.strip("[]"), uri.port or 5060)

    def _build_in_dialog(
        self,
        call: CallState,
        method: str,
        *,
        cseq: int | None = None,
        extra: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Request:
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

    def _dialog_dest(self, call: CallState) -> Addr:
        """Next hop of an in-dialog request: the dialog's connection on TCP/TLS; else the
        first route of the route set (12.2.1.1, 8.1.2: a loose router such as Kamailio in
        front of the nodes; strict routers are not supported), else the remote target."""
        if call.role == "uac" or self.reliable:
            return call.peer  # UAC: set from the 2xx (first route or target); reliable: the connection
        if call.route_set:
            return self._target_addr(call.route_set[0].uri, call.peer)
        return self._target_addr(call.remote_target, call.peer)

    def _send_in_dialog(self, call: CallState, method: str, now: float) -> None:
        request = self._build_in_dialog(call, method)
        self._start_client_tx(request, self._dialog_dest(call), call.call_id, now)
