"""Agent tools: ``end_call``, ``transfer``, ``collect_digits``.

Chat mode uses the model's tool calling (OpenAI ``tools`` schema below).
Completion mode (base models, no tool calling) uses a small text convention
that the prompt's examples teach: the agent's line may end with one command
in square brackets, which is executed and never spoken::

    Sam: Thanks for calling, goodbye! [end_call]
    Sam: Let me put you through to a colleague. [transfer]
    Sam: Please enter your four digit patient number. [collect_digits 4]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TOOL_NAMES = ("end_call", "transfer", "collect_digits")
#: Tools the model itself may start. ``end_call`` and ``transfer`` follow the
#: caller's words, decided in code (:mod:`bridge.conversation.intents`).
MODEL_TOOLS = ("collect_digits",)

#: OpenAI-style tool definitions for chat mode.
TOOL_SCHEMAS = [
    {
        "type": "function",
        "function": {
            "name": "end_call",
            "description": "Hang up after saying goodbye.",
            "parameters": {"type": "object", "properties": {}},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "transfer",
            "description": "Transfer the caller to a human colleague.",
            "parameters": {"type": "object", "properties": {}},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "collect_digits",
            "description": "Collect digits from the caller (keypad or spoken), e.g. an account number.",
            "parameters": {
                "type": "object",
                "properties": {"count": {"type": "integer", "minimum": 1, "maximum": 20}},
                "required": ["count"],
            },
        },
    },
]

_COMMAND = re.compile(r"\[\s*(end_call|transfer|collect_digits)(?:\s+(\d{1,2}))?\s*\]", re.I)
_SPOKEN_DIGITS = {
    "zero": "0",
    "oh": "0",
    "o": "0",
    "one": "1",
    "two": "2",
    "to": "2",
    "too": "2",
    "three": "3",
    "four": "4",
    "for": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}


@dataclass(frozen=True)
class ToolCall:
    """A tool the model asked for: ``name`` in :data:`TOOL_NAMES`, ``arguments`` as JSON values."""

    name: str
    arguments: dict = field(default_factory=dict)


def split_commands(text: str) -> tuple[str, list[ToolCall]]:
    """Completion-mode convention: remove ``[command]`` markers; return (speakable text, calls)."""
    calls = []
    for m in _COMMAND.finditer(text):
        name = m.group(1).lower()
        args = {"count": int(m.group(2))} if name == "collect_digits" and m.group(2) else {}
        calls.append(ToolCall(name, args))
    spoken = _COMMAND.sub("", text)
    spoken = re.sub(r"\[[^\]]*\]?$", "", spoken)  # a half-written command at the end
    return " ".join(spoken.split()), calls


def digits_in(text: str) -> str:
    """Digits a caller said: numerals and number words (``"four two one"`` -> ``"421"``)."""
    out = []
    for token in re.findall(r"[a-z]+|\d", text.lower()):
        if token.isdigit():
            out.append(token)
        elif token in _SPOKEN_DIGITS:
            out.append(_SPOKEN_DIGITS[token])
    return "".join(out)
