"""The server transaction layer of :class:`bridge.sip.core.SipCore` (RFC 3261 section
17.2: INVITE server transactions with timers G, H, I; non-INVITE with J; a request
matched to its transaction by branch, sent-by and method, 17.2.3) and how a response is
addressed (18.2.2 with RFC 3581 ``rport``; the top Via's ``received``, 18.2.1). A mixin:
the UAS and dialog rules that decide what to answer are the core's.
"""

from __future__ import annotations

from sipmessage import Request, Via

from .message import ParsedMessage, build_response, new_tag
from .state import Addr, CallState, ServerTransaction


class ServerTransactionMixin:
    """Server-transaction methods of :class:`bridge.sip.core.SipCore` (see the module docstring)."""

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
        vias = (
            [str(Via(top.transport, top.host, top.port, top.parameters.replace(**changes)))] if changes else [str(top)]
        )
        return vias + [str(v) for v in parsed.via[1:]]

    def _response(
        self,
        tx: ServerTransaction,
        status: int,
        call: CallState | None,
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

    def _send_server_response(self, tx: ServerTransaction, data: bytes, now: float) -> None:
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

    def _server_timer(self, tx: ServerTransaction, name: str, now: float) -> None:
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

    @staticmethod
    def _server_key(parsed: ParsedMessage, method: str) -> tuple[str, str, str]:
        top = parsed.via[0]
        return (parsed.branch or "", f"{top.host}:{top.port or 5060}", method)
