"""Reply sources: who writes the agent's words for a turn.

The reply writer (:class:`.reply.ReplyWriter`) takes its words from a :class:`ReplySource`:
text in (the transcript so far, the caller's line last), pieces out, cancellable. The
embedded llama.cpp engine and an OpenAI-compatible server both stand behind
:class:`LlmReplySource`; turn-taking, barge-in, ASR, guards and TTS stay the
conversation's whatever the source.

What a source's :meth:`ReplySource.stream` yields (:data:`ReplyPiece`):

- ``str``: words to speak, in order, any split (the writer finds the sentences);
- :class:`bridge.engines.tools.ToolCall`: a tool the source asks for;
- :class:`bridge.engines.llm.Probe`: once, first, the probability that the caller's line
  ends where it stops, read from the same evaluation (asked for with ``probe``).

A source that speaks for an operator's application adds its own piece types beside
these (text with ``interruptible``/``preemptible``/``lang`` flags, audio to play, digits
to send, the end of the session); the writer dispatches on the piece's type, so a new
kind of piece is a new branch there, not a new protocol.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Protocol

from ..engines.llm import Probe
from ..engines.tools import TOOL_SCHEMAS, ToolCall
from .prompt import build_chat_messages, build_completion_prompt, completion_prompt_prefix, stop_sequences
from .turns import EitherEvent, probe_text

#: One piece of a source's reply (see the module docstring).
ReplyPiece = str | ToolCall | Probe

#: A transcript: ``(role, text)`` lines, role ``caller`` or ``agent``, oldest first.
Transcript = list[tuple[str, str]]


class ReplySource(Protocol):
    """Writes the agent's reply to a transcript. Blocking methods run in worker threads."""

    #: Whether :meth:`end_probability` and ``probe`` give the end-of-line probability.
    scores_end: bool

    def stream(
        self, transcript: Transcript, cancel: threading.Event | EitherEvent, probe: bool = False
    ) -> Iterator[ReplyPiece]:
        """Worker thread: the reply to ``transcript`` (its last line the caller's), piece by
        piece; stops early once ``cancel`` is set. ``probe``: yield a :class:`Probe` first.

        Raises:
            Exception: whatever the engine or server raised (the writer reports it as an
                :class:`~.failures.EngineError` of stage ``llm``).
        """
        ...

    def ahead(self, transcript: Transcript) -> Callable[[], object] | None:
        """Work that readies the source for the caller's coming line after ``transcript``
        (blocking, for a worker thread), or ``None`` when there is nothing new to do."""
        ...

    def end_probability(self, transcript: Transcript, text: str) -> float:
        """Worker thread: the probability (0..1) that the caller's line ``text``, said
        after ``transcript``, ends there. Only when :attr:`scores_end`."""
        ...


class LlmReplySource:
    """The agent's language model as a reply source: a completion prompt (persona, facts,
    examples, a bounded transcript: :mod:`.prompt`) or chat messages with tool schemas,
    by ``agent.llm_mode``.

    Args:
        agent: :class:`bridge.config.AgentSettings`.
        llm: the engine (:class:`bridge.engines.llm.LlamaCppLlm` or
            :class:`bridge.engines.openai_llm.OpenAiLlm`).
    """

    def __init__(self, agent, llm) -> None:
        self._agent = agent
        self._llm = llm
        self._completion = agent.llm_mode == "completion"
        self.scores_end = agent.turn_text_threshold > 0 and self._completion and hasattr(llm, "end_probability")
        #: The prompt prefix last evaluated ahead of a turn.
        self._primed = ""

    def stream(
        self, transcript: Transcript, cancel: threading.Event | EitherEvent, probe: bool = False
    ) -> Iterator[ReplyPiece]:
        """See :meth:`ReplySource.stream`; ``probe`` only in completion mode on an engine
        that reads it (in-process llama.cpp)."""
        agent = self._agent
        if not self._completion:
            tools = [t for t in TOOL_SCHEMAS if t["function"]["name"] in agent.tools] or None
            return self._llm.stream_chat(
                build_chat_messages(agent, transcript), agent.max_tokens, agent.temperature, cancel, tools=tools
            )
        prompt = build_completion_prompt(agent, transcript)
        extra = {}
        if probe:
            at = prompt.rindex("Caller: ") + len("Caller: ")  # the live caller line is the last one
            extra["probe"] = prompt[:at] + probe_text(" ".join(transcript[-1][1].split()))
        return self._llm.stream(
            prompt,
            stop_sequences(agent),
            agent.max_tokens,
            agent.temperature,
            cancel,
            repeat_penalty=agent.repeat_penalty,
            presence_penalty=agent.presence_penalty,
            **extra,
        )

    def ahead(self, transcript: Transcript) -> Callable[[], object] | None:
        """Evaluate the prompt up to the caller's coming line (:func:`.prompt.completion_prompt_prefix`),
        so that the turn's first token waits only for the caller's own line and its fact
        note (measured on 2 cores: first token 106 -> 53 ms on the third turn).
        Completion mode on an engine with ``prime`` (in-process llama.cpp) only; once per
        prefix."""
        prime = getattr(self._llm, "prime", None)
        if prime is None or not self._completion:
            return None
        prefix = completion_prompt_prefix(self._agent, transcript)
        if prefix == self._primed:
            return None
        self._primed = prefix
        return lambda: prime(prefix)

    def end_probability(self, transcript: Transcript, text: str) -> float:
        """See :meth:`ReplySource.end_probability`: the prompt up to the caller's line, then
        ``text`` without its final punctuation."""
        prompt = completion_prompt_prefix(self._agent, transcript) + "Caller: " + probe_text(text)
        return self._llm.end_probability(prompt)
