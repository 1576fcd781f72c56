"""Media Streams sessions as calls: admission and the agent.

A Twilio ``<Connect><Stream>`` session is a call like a SIP one: it counts against
``access.max_calls`` and ``access.max_calls_per_caller`` (with the SIP calls), is
refused while draining, and its ``start`` message's ``accountSid`` must be one of
``access.twilio_accounts`` when that list is set. A second session for a CallSid that
is already live is refused; the first goes on. The rules both legs share are
:meth:`bridge.calls.registry.CallRegistry.refusal`'s.

Refusals close the WebSocket with a code and one log line:

- ``1013`` (Try Again Later, RFC 6455 section 7.4.2 / IANA registry): draining, at
  capacity, caller at capacity;
- ``1008`` (Policy Violation): wrong account, duplicate CallSid, no route, no ``start``
  within ``mediastreams.start_timeout`` seconds.
"""

from __future__ import annotations

import logging

from ..agents import build_agent
from ..config import Settings
from ..mediastreams import protocol as p
from ..observability.metrics import Metrics
from ..routing import Router
from .registry import CallRegistry

log = logging.getLogger("bridge.calls")

CLOSE_TRY_AGAIN = 1013

#: Close codes for the shared refusals.
_CLOSE_FOR = {
    "draining": CLOSE_TRY_AGAIN,
    "at_capacity": CLOSE_TRY_AGAIN,
    "caller_at_capacity": CLOSE_TRY_AGAIN,
    "duplicate_call_id": p.CLOSE_POLICY,
}


class StreamCalls:
    """Admits Media Streams sessions as calls (see the module docstring).

    Args:
        settings, engines, metrics: the server's.
        registry: every live call of both legs.
        router: called number -> agent profile.
    """

    def __init__(self, settings: Settings, engines, metrics: Metrics, registry: CallRegistry, router: Router) -> None:
        self.settings = settings
        self.engines = engines
        self.metrics = metrics
        self.registry = registry
        self.router = router

    def refusal(self, leg) -> tuple[int, str] | None:
        """Why ``leg`` (its ``start`` just arrived) may not become a call: ``(close code, reason)``."""
        accounts = self.settings.access.twilio_accounts
        shared = self.registry.refusal(leg.call_id, leg.caller)
        if shared == "draining":
            return CLOSE_TRY_AGAIN, shared
        if accounts and leg.meta.get("accountSid") not in accounts:
            return p.CLOSE_POLICY, "wrong_account"
        if shared is not None:
            return _CLOSE_FOR[shared], "duplicate_call_sid" if shared == "duplicate_call_id" else shared
        if leg.profile is None:
            return p.CLOSE_POLICY, "no_route"
        return None

    def start(self, leg):
        """A session sent ``start``: admit it and give it an agent. Returns the agent,
        or ``None`` when refused (the WebSocket is then being closed)."""
        leg.profile = self.router.route(leg.meta.get("To"))  # resolved once, when the call arrives
        refused = self.refusal(leg)
        if refused is not None:
            code, reason = refused
            log.warning("call %s: media stream refused (%s), closing %d", leg.call_id, reason, code)
            self.metrics.calls.labels(f"rejected_{reason}").inc()
            leg.refuse(code, reason)
            return None
        profile = leg.profile
        agent = build_agent(
            self.settings, self.engines, leg, self.metrics, profile, played_by_leg=True
        )  # marks tell what Twilio played
        leg.conversation = agent
        meta = leg.meta
        self.registry.open(
            leg,
            caller=leg.caller or None,
            called=meta.get("To") or None,
            call_sid=leg.call_id,
            account_sid=meta.get("accountSid") or None,
            codec="PCMU",
            transport="websocket",
            srtp=False,
            route=profile.name,
        )
        self.registry.answered(leg)
        self.metrics.calls.labels("media_stream").inc()
        log.info(
            "call %s: media stream %s %s",
            leg.call_id,
            meta.get("streamSid"),
            " ".join(f"{k}={v}" for k, v in meta.items() if k != "streamSid"),
        )
        agent.start()
        return agent
