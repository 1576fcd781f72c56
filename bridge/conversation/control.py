"""Call control and the agent's tools: what the caller's words and the model's tool calls
make the call do (hang up, transfer, collect digits). Decided here, carried out by the
conversation once the agent's words have been heard.

The model proposes, the caller's words dispose (:mod:`.intents`): ``end_call`` only when
the caller took leave, ``transfer`` only on an explicit request for a person,
``collect_digits`` only about an existing appointment or account. Leave-taking and a
request for a person are answered in code before the model is asked at all.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from ..engines.tools import ToolCall
from .intents import about_existing_record, wants_person, wants_to_end

log = logging.getLogger("bridge.conversation")

#: What the call does after the agent's words: ``hangup``, ``transfer`` (to ``target``),
#: ``collect`` (``count`` digits) or ``none``.
Effect = str


@dataclass(frozen=True)
class Decision:
    """A call-control outcome: ``effect`` (see :data:`Effect`) with its ``target`` or
    ``count``; ``tool``: the tool it counts as in the turn's record; ``phrase``: what
    the agent says first (call control answered in code), else empty."""

    effect: Effect
    tool: str
    phrase: str = ""
    target: str = ""
    count: int = 0


def asked_anything_else(before: list[tuple[str, str]]) -> bool:
    """Whether the agent's last words before this turn asked if the caller needs
    anything else (then a plain "no" takes leave)."""
    for role, said in reversed(before):
        if role == "agent":
            return bool(re.search(r"\banything else\b", said, re.I))
    return False


class CallControl:
    """Call control for one call.

    Args:
        agent: :class:`bridge.config.AgentSettings` (``tools``, ``goodbye``, ``end_call_pattern``).
        transfer: :class:`bridge.config.TransferSettings` or ``None`` (no transfer).
        call_id: the call, for the logs.
        metrics: a :class:`bridge.observability.metrics.Metrics` or ``None``.
        transfer_unavailable: the leg's sentence for "this call cannot be transferred"
            (a browser call), or empty where it can.
    """

    def __init__(self, agent, transfer, call_id: str, metrics=None, transfer_unavailable: str = "") -> None:
        self._agent = agent
        self._target = transfer.target if transfer is not None else ""
        self._announce = transfer.announce if transfer is not None else ""
        self._call_id = call_id
        self._metrics = metrics
        self._unavailable = transfer_unavailable
        self._end_call_re = re.compile(agent.end_call_pattern, re.I) if agent.end_call_pattern else None

    def answer_in_code(self, caller: str, before: list[tuple[str, str]]) -> Decision | None:
        """Leave-taking (``agent.goodbye``, then hang up) and an explicit request for a
        person (``transfer.announce``, then transfer; on a leg that cannot transfer its
        sentence, and nothing) when their tool is enabled; ``None`` for the model to answer."""
        tools = self._agent.tools
        if "end_call" in tools and wants_to_end(caller, asked_anything_else(before)):
            return Decision("hangup", "end_call", phrase=self._agent.goodbye)
        if "transfer" in tools and self._target and wants_person(caller):
            if self._unavailable:
                return Decision("none", "transfer", phrase=self._unavailable)
            log.info("transfer call=%s to %s (the caller asked for a person)", self._call_id, self._target)
            return Decision("transfer", "transfer", phrase=self._announce, target=self._target)
        return None

    def after_reply(
        self, calls: list[ToolCall], said: str, caller: str, before: list[tuple[str, str]]
    ) -> Decision | None:
        """The effect of the model's tool calls (the first permitted one), or of an
        ``agent.end_call_pattern`` match in what it ``said`` when the ``caller`` took leave.
        A call of a tool not enabled, or not asked for by the caller, is logged (and the
        latter counted), never run."""
        allowed = set(self._agent.tools)
        permitted = {
            "end_call": lambda: wants_to_end(caller, asked_anything_else(before)),
            "transfer": lambda: wants_person(caller),
            "collect_digits": lambda: about_existing_record(caller),
        }
        for call in calls:
            if call.name not in allowed:
                log.info("call=%s: tool %s not enabled, ignored", self._call_id, call.name)
                continue
            if not permitted[call.name]():
                log.info(
                    "call=%s: tool %s refused: the caller did not ask for it (%r)",
                    self._call_id,
                    call.name,
                    caller[:80],
                )
                if self._metrics:
                    self._metrics.tools_refused.labels(call.name).inc()
                continue
            log.info("tool call=%s %s %s", self._call_id, call.name, call.arguments or "")
            if call.name == "end_call":
                return Decision("hangup", "end_call")
            if call.name == "transfer":
                if not self._target:
                    log.warning("call=%s: transfer asked but transfer.target is not configured", self._call_id)
                    return None
                return Decision("transfer", "transfer", target=self._target)
            count = call.arguments.get("count", 4)
            return Decision("collect", "collect_digits", count=int(count) if str(count).isdigit() else 4)
        if self._end_call_re and self._end_call_re.search(said) and wants_to_end(caller, asked_anything_else(before)):
            return Decision("hangup", "end_call")
        return None
