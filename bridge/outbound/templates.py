"""The callee's variables in the outbound greeting, the voicemail message and the
agent's persona: ``str.format`` fields (``"Hello {name}"``); a field the callee has no
variable for is left as written, and a malformed template is used as it is."""

from __future__ import annotations

import string


class _Fields(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(template: str, variables: dict[str, str] | None) -> str:
    """``template`` with ``{field}`` replaced by ``variables[field]``."""
    if not template or not variables:
        return template
    try:
        return string.Formatter().vformat(template, (), _Fields({k: str(v) for k, v in variables.items()}))
    except (ValueError, IndexError, AttributeError, KeyError):
        return template


def outbound_agent(agent, outbound, variables: dict[str, str] | None):
    """A copy of ``agent`` (:class:`bridge.config.AgentSettings`) for one outbound call:
    the greeting is ``outbound.greeting`` (else the agent's), and the greeting and persona
    carry the callee's ``variables``."""
    greeting = outbound.greeting or agent.greeting
    return agent.model_copy(update={"greeting": fill(greeting, variables), "persona": fill(agent.persona, variables)})
