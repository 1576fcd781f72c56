"""Prompts for the LLM, in its two modes.

``completion`` (base models such as the embedded Gemma 3 270M, which has no
chat template): the conversation is written as a
transcript and the model continues the agent's line::

    <persona>
    Caller: <example question>
    Sam: <example answer>            (tool examples end with "[end_call]" etc.)
    ...
    Caller: <what the caller said>
    Sam:

Generation stops at the next line (:func:`stop_sequences`). The persona is
followed by the facts block (``agent.facts``, one sentence per line, generated
from config so that prices and hours live in one place), then the examples,
then a bounded window of the call's history (``agent.history_turns``): one bad
turn must not poison the rest of the call, and a short prompt keeps a 270M
model on the facts.

Leave-taking and requests for a person are answered in code
(:mod:`bridge.conversation.intents`), so only the tools the model drives
(:data:`bridge.engines.tools.MODEL_TOOLS`) get examples.

``chat`` (instruct models): a system message with the persona, then the
history as user/assistant messages; tools go through the model's tool calling.
"""

from __future__ import annotations

from ..engines.tools import MODEL_TOOLS
from .facts import index_for
from .intents import about_existing_record

#: The line that carries the looked-up fact, below a caller line (completion mode).
#: Measured on the tuning set against "(Note: ...)" above the caller line and
#: "Fact: ..." below it: 19, 17 and 10 of 23 right.
NOTE = "({name} looks it up: {fact})"


def facts_block(agent) -> list[str]:
    """``agent.facts`` as prompt lines, one fact per line, in config order."""
    return [" ".join(text.split()) for text in agent.facts if text.strip()]


def history_window(agent, transcript: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The last ``agent.history_turns`` entries of ``transcript`` (the current caller line included)."""
    n = max(1, agent.history_turns)
    return transcript[-n:]


def build_completion_prompt(agent, transcript: list[tuple[str, str]]) -> str:
    """The transcript prompt for ``agent`` (AgentSettings) and the played history.

    Args:
        agent: persona, examples, tool examples (when tools are on) and name.
        transcript: ``(role, text)`` pairs, role ``caller`` or ``agent``, oldest first.
    """
    lines = [agent.persona.strip()]
    facts = facts_block(agent)
    if facts:
        lines += [""] + facts
    lines.append("")
    index = index_for(agent) if agent.fact_lookup else None

    def caller(text: str) -> None:
        lines.append(f"Caller: {' '.join(text.split())}")
        fact = index.lookup(text) if index is not None else None
        if fact:
            lines.append(NOTE.format(name=agent.name, fact=fact))

    examples = list(agent.examples)
    names = set(agent.tools) & set(MODEL_TOOLS)
    if transcript and transcript[-1][0] == "caller" and not about_existing_record(transcript[-1][1]):
        # The tool rule would refuse collect_digits on this turn anyway: do not
        # show the model an example it would copy ("please enter your number").
        names.discard("collect_digits")
    examples += [(q, a) for q, a in agent.tool_examples if any(f"[{n}" in a for n in names)]
    for question, answer in examples:
        caller(question)
        lines.append(f"{agent.name}: {answer}")
    window = history_window(agent, transcript)
    for i, (role, text) in enumerate(window):
        if role == "caller" and i == len(window) - 1:
            caller(text)  # the live turn gets its note; earlier turns do not
        else:
            speaker = "Caller" if role == "caller" else agent.name
            lines.append(f"{speaker}: {' '.join(text.split())}")
    lines.append(f"{agent.name}:")
    return "\n".join(lines)


def completion_prompt_prefix(agent, transcript: list[tuple[str, str]]) -> str:
    """The start of the next turn's completion prompt that does not depend on the
    caller's coming line: everything :func:`build_completion_prompt` writes before
    that line, given the played history ``transcript`` (what the LLM can evaluate
    while the caller is still speaking). Assumes the coming line is not about an
    existing record (it then carries no collect_digits example), the common case."""
    marker = "\x00"
    prompt = build_completion_prompt(agent, [*transcript, ("caller", marker)])
    return prompt[: prompt.index(f"Caller: {marker}")]


def stop_sequences(agent) -> list[str]:
    """Stop strings for completion mode: the next speaker line, or any newline."""
    return ["\nCaller:", f"\n{agent.name}:", "\n"]


def build_chat_messages(agent, transcript: list[tuple[str, str]]) -> list[dict]:
    """OpenAI-style messages: system persona (+ examples), then the history."""
    system = agent.persona.strip()
    facts = facts_block(agent)
    if facts:
        system += "\n\n" + "\n".join(facts)
    if agent.examples:
        system += "\n\nExamples of good answers:\n" + "\n".join(
            f"Caller: {q}\n{agent.name}: {a}" for q, a in agent.examples
        )
    system += f"\n\nAnswer in at most {agent.max_sentences} short spoken sentences."
    messages = [{"role": "system", "content": system}]
    for role, text in history_window(agent, transcript):
        messages.append({"role": "user" if role == "caller" else "assistant", "content": text})
    return messages
