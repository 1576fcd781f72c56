"""Media Streams sessions as calls: admission, the agent, the end (``bridge serve`` glue).

A Twilio ``<Connect><Stream>`` session is a call like a SIP one: it counts
against ``access.max_calls`` and ``access.max_calls_per_caller`` (with the SIP
calls), is refused while draining, and its ``start`` message's ``accountSid``
must be one of ``access.twilio_accounts`` when that list is set. A second
session for a CallSid that is already live is refused; the first goes on.

Refusals close the WebSocket with a code and one log line:

- ``1013`` (Try Again Later, RFC 6455 section 7.4 / IANA registry): draining, at
  capacity, caller at capacity;
- ``1008`` (Policy Violation): wrong account, duplicate CallSid, no ``start``
  within ``mediastreams.start_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time

from . import memory
from .agents import build_agent
from .mediastreams import protocol as p

log = logging.getLogger("bridge.app")

CLOSE_TRY_AGAIN = 1013


class StreamCalls:
    """The live Media Streams legs of a :class:`bridge.app.BridgeServer`, by Call SID.

    Args:
        server: the server (settings, engines, metrics, policy, task spawner).
    """

    def __init__(self, server) -> None:
        self.server = server
        self.legs: dict[str, object] = {}

    def __len__(self) -> int:
        return len(self.legs)

    def values(self):
        return self.legs.values()

    def refusal(self, leg) -> tuple[int, str] | None:
        """Why ``leg`` (its ``start`` just arrived) may not become a call: ``(close code, reason)``."""
        server = self.server
        access = server.settings.access
        if server.policy.draining:
            return CLOSE_TRY_AGAIN, "draining"
        if access.twilio_accounts and leg.meta.get("accountSid") not in access.twilio_accounts:
            return p.CLOSE_POLICY, "wrong_account"
        if leg.call_id in self.legs or leg.call_id in server.calls:
            return p.CLOSE_POLICY, "duplicate_call_sid"
        if server.active_calls() >= access.max_calls:
            return CLOSE_TRY_AGAIN, "at_capacity"
        if leg.caller and server.caller_calls(leg.caller) >= access.max_calls_per_caller:
            return CLOSE_TRY_AGAIN, "caller_at_capacity"
        if leg.profile is None:
            return p.CLOSE_POLICY, "no_route"
        return None

    def start(self, leg):
        """A session sent ``start``: admit it and give it an agent. Returns the agent,
        or ``None`` when refused (the WebSocket is then being closed)."""
        server = self.server
        leg.profile = server.router.route(leg.meta.get("To"))  # resolved once, when the call arrives
        refused = self.refusal(leg)
        if refused is not None:
            code, reason = refused
            log.warning("call %s: media stream refused (%s), closing %d", leg.call_id, reason, code)
            server.metrics.calls.labels(f"rejected_{reason}").inc()
            leg.refuse(code, reason)
            return None
        profile = leg.profile
        agent = build_agent(server.settings, server.engines, leg, server.metrics, profile)
        if hasattr(agent, "played_by_leg"):
            agent.played_by_leg = True  # marks tell what Twilio played
        leg.agent = agent
        self.legs[leg.call_id] = leg
        server.call_started()
        meta = leg.meta
        server.records.started(
            leg.call_id, "mediastreams", caller=leg.caller or None, called=meta.get("To") or None, call_sid=leg.call_id,
            account_sid=meta.get("accountSid") or None, codec="PCMU", transport="websocket", srtp=False, route=profile.name,
        )
        server.records.answered(leg.call_id)
        server.records.attach(leg.call_id, agent)
        server.records.start_recording(leg.call_id, leg)
        server.metrics.calls.labels("media_stream").inc()
        log.info("call %s: media stream %s %s", leg.call_id, leg.meta.get("streamSid"), " ".join(f"{k}={v}" for k, v in leg.meta.items() if k != "streamSid"))
        agent.start()
        return agent

    def end(self, leg, reason: str) -> None:
        """A session ended (idempotent; a refused leg never was a call)."""
        if self.legs.get(leg.call_id) is not leg:
            return
        del self.legs[leg.call_id]
        self.server.call_ended(leg.call_id, reason)
        self.server.spawn(self._finish(leg, reason))

    async def _finish(self, leg, reason: str) -> None:
        duration = time.monotonic() - leg.started
        if leg.agent is not None:
            await leg.agent.close()
            self.server.finished.append(leg.agent)
        self.server.records.ended(leg.call_id, reason, leg.agent)
        await self.server.records.stop_recording(leg)
        leg.agent = None  # no leg <-> agent cycle: the call is freed at once (see BridgeServer._teardown)
        await memory.release_after_call(self.server.active_calls())
        # Logged last: the call's resources are all released when this line appears.
        log.info("call %s: ended (%s) after %.1f s", leg.call_id, reason, duration)
