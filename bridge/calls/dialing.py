"""What an outbound SIP call adds to the SIP leg (:mod:`bridge.calls.sip`): the options a
dial carries, the agent an answered dial gets, and the report of a dial nobody answered."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ..agents import build_agent
from ..conversation.engine import Conversation
from ..outbound.templates import fill, outbound_agent
from ..records.store import utcnow
from .gate import AnsweringGate

log = logging.getLogger("bridge.outbound")


@dataclass
class DialOptions:
    """How one outbound call runs.

    Attributes:
        amd: detect who answered before the agent speaks.
        variables: the callee's fields for the greeting, message and persona.
        campaign: the campaign that placed the call (its record's ``campaign``), or ``None``.
        on_outcome: called once with ``(outcome, SIP status or None)`` when the call ends,
            answered or not.
    """

    amd: bool = False
    variables: dict[str, str] = field(default_factory=dict)
    campaign: str | None = None
    on_outcome: Callable[[str, int | None], None] | None = None
    #: Cancel the INVITE (outcome ``no_answer``) when nobody answered within this many seconds; 0 = never.
    ring_timeout_s: float = 0.0


def failure_outcome(reason: str, status: int | None) -> str:
    """The outcome of an outbound call that ended before an answer: ``busy`` (486, 600),
    ``no_answer`` (408, 480, 487, our CANCEL after the ring timeout, a transaction
    timeout), else ``failed`` (a ``503 Trunk CPS limit exceeded`` among them)."""
    if status in (486, 600):
        return "busy"
    if status in (408, 480, 487) or reason in ("cancelled", "timeout"):
        return "no_answer"
    return "failed"


def agent_for_dial(settings, engines, leg, metrics, profile):
    """The agent of an answered outbound call on ``leg`` (its ``dial`` options set): the
    callee's variables in the greeting and persona, behind an
    :class:`~bridge.calls.gate.AnsweringGate` (detection when the dial asked for it and
    the agent has models; the outcome either way)."""
    out, options = settings.outbound, leg.dial
    if profile.agent.kind != "echo":
        profile = dataclasses.replace(profile, agent=outbound_agent(profile.agent, out, options.variables))
    agent = build_agent(settings, engines, leg, metrics, profile)
    detect = options.amd and isinstance(agent, Conversation)
    if options.amd and not detect:
        log.warning(
            "call %s: answering-machine detection needs the llm agent's models; the %s agent starts at once",
            leg.call_id,
            profile.agent.kind,
        )
    return AnsweringGate(
        agent,
        profile.engines or engines,
        out,
        leg,
        fill(out.voicemail_message, options.variables),
        metrics,
        options.on_outcome,
        detect=detect,
    )


def report_unanswered(
    records,
    metrics,
    caller_id: str,
    called: str | None,
    transport: str,
    options: DialOptions | None,
    call_id: str,
    reason: str,
    status: int | None,
) -> str:
    """A dial ended before an answer: its outcome (:func:`failure_outcome`) counted, written
    as a call record (``records``: :class:`bridge.records.calls.CallRecords`), and handed
    to the dial's ``on_outcome``. Returns the outcome."""
    outcome = failure_outcome(reason, status)
    metrics.outbound_outcomes.labels(outcome).inc()
    records.started(
        call_id,
        "sip",
        caller=caller_id,
        called=called,
        transport=transport,
        outcome=outcome,
        end_reason=f"{reason} {status or ''}".strip()[:64],
        ended_at=utcnow(),
        campaign=options.campaign if options else None,
    )
    if options is not None and options.on_outcome is not None:
        options.on_outcome(outcome, status)
    return outcome
