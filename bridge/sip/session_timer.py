"""RFC 4028 session timers for :class:`bridge.sip.core.SipCore`: read ``Session-Expires``
and ``Min-SE`` (422 when too small), answer with the interval and the refresher, refresh
with a re-INVITE when we are the refresher, and end the call with BYE when the peer that
should refresh does not (section 10). A mixin: the dialog state is the core's.
"""

from __future__ import annotations

import logging

from sipmessage import Request

from .state import CallState

log = logging.getLogger("bridge.sip")


class SessionTimerMixin:
    """Session-timer methods of :class:`bridge.sip.core.SipCore` (see the module docstring)."""

    def _read_session_expires(self, call: CallState, request: Request, now: float) -> int | None:
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

    def _session_timer_headers(self, call: CallState, now: float) -> list[tuple[str, str]]:
        if not call.se_interval:
            return []
        self._arm_session_timer(call, now)
        headers = [("Session-Expires", f"{call.se_interval};refresher={call.se_refresher}")]
        if call.peer_supports_timer:
            headers.append(("Require", "timer"))
        return headers

    def _we_refresh(self, call: CallState) -> bool:
        # The refresher names a role in the dialog-creating transaction.
        return (call.se_refresher == "uas") == (call.role == "uas")

    def _arm_session_timer(self, call: CallState, now: float) -> None:
        interval = call.se_interval
        if self._we_refresh(call):
            call.se_deadline = now + interval / 2  # 10: refresh at half the interval
        else:
            call.se_deadline = now + interval - min(32, interval / 3)  # 10: BYE before expiry

    def _session_timer(self, call: CallState, now: float) -> None:
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
