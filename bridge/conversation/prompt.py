"""Prompts for the LLM, in its two modes.

``completion`` (base models such as the embedded Gemma 3 270M, which has no
chat template; see shared/MODELS.md): the conversation is written as a
transcript and the model continues the agent's line::

    <persona>
    Caller: <example question>
    Sam: <example answer>            (tool examples end with "[end_call]" etc.)
    ...
    Caller: <what the caller said>
    Sam:

Generation stops at the next line (:func:`stop_sequences`).

``chat`` (instruct models): a system message with the persona, then the
history as user/assistant messages; tools go through the model's tool calling.
"""

from __future__ import annotations

#: How many (role, text) history entries go into the prompt.
MAX_HISTORY = 12


def build_completion_prompt(agent, transcript: list[tuple[str, str]]) -> str:
    """The transcript prompt for ``agent`` (AgentSettings) and the played history.

    Args:
        agent: persona, examples, tool examples (when tools are on) and name.
        transcript: ``(role, text)`` pairs, role ``caller`` or ``agent``, oldest first.
    """
    lines = [agent.persona.strip(), ""]
    examples = list(agent.examples)
    if agent.tools:
        names = set(agent.tools)
        examples += [(q, a) for q, a in agent.tool_examples if any(f"[{n}" in a for n in names)]
    for question, answer in examples:
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


def build_chat_messages(agent, transcript: list[tuple[str, str]]) -> list[dict]:
    """OpenAI-style messages: system persona (+ examples), then the history."""
    system = agent.persona.strip()
    if agent.examples:
        system += "\n\nExamples of good answers:\n" + "\n".join(f"Caller: {q}\n{agent.name}: {a}" for q, a in agent.examples)
    system += "\n\nAnswer in one or two short spoken sentences."
    messages = [{"role": "system", "content": system}]
    for role, text in transcript[-MAX_HISTORY:]:
        messages.append({"role": "user" if role == "caller" else "assistant", "content": text})
    return messages
