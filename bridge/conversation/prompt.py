"""Prompts for the LLM.

``completion`` mode (base models such as the embedded Gemma 3 270M, which has
no chat template; see shared/MODELS.md): the conversation is written as a
transcript and the model continues the agent's line::

    <persona>
    Caller: <example question>
    Sam: <example answer>
    ...
    Caller: <what the caller said>
    Sam:

Generation stops at the next line (``stop_sequences``).
"""

from __future__ import annotations

#: How many (role, text) history entries go into the prompt.
MAX_HISTORY = 12


def build_completion_prompt(agent, transcript: list[tuple[str, str]]) -> str:
    """The transcript prompt for ``agent`` (AgentSettings) and the played history.

    Args:
        agent: persona, examples and name.
        transcript: ``(role, text)`` pairs, role ``caller`` or ``agent``, oldest first.
    """
    lines = [agent.persona.strip(), ""]
    for question, answer in agent.examples:
        lines.append(f"Caller: {question}")
        lines.append(f"{agent.name}: {answer}")
    for role, text in transcript[-MAX_HISTORY:]:
        speaker = "Caller" if role == "caller" else agent.name
        lines.append(f"{speaker}: {' '.join(text.split())}")
    lines.append(f"{agent.name}:")
    return "\n".join(lines)


def stop_sequences(agent) -> list[str]:
    """Stop strings for completion mode: the next speaker line, or any newline."""
    return ["\nCaller:", f"\n{agent.name}:", "\n"]
