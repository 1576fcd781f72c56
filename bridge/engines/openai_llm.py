"""An OpenAI-compatible HTTP LLM backend (llama.cpp's server, vLLM, Ollama, ...), streamed.

``/v1/completions`` for ``completion`` mode and ``/v1/chat/completions`` for ``chat``
mode, both with ``"stream": true``, through the ``openai`` package's client and its
server-sent-events parser. The request runs in the conversation's worker thread; it
goes to the configured ``base_url`` only, is never retried (a turn that waits for a
retry is a turn the caller hears as silence; the conversation apologizes instead), and
stops reading as soon as the turn is cancelled.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import openai

from .tools import ToolCall

log = logging.getLogger("bridge.engines.llm")

#: Sent as the bearer token to a server configured without a key (the client needs one;
#: llama.cpp's server, vLLM and Ollama without ``--api-key`` ignore it).
NO_KEY = "unused"


class LlmError(Exception):
    """The server refused the request or broke the stream (status and text in the message)."""


class OpenAiLlm:
    """Streams completions from an OpenAI-compatible server.

    Args:
        base_url: e.g. ``http://127.0.0.1:8080/v1``.
        model: the ``model`` field to send.
        api_key: sent as ``Authorization: Bearer`` (empty: :data:`NO_KEY`).
        timeout: seconds to wait for the connection and between chunks.
    """

    def __init__(self, base_url: str, model: str, api_key: str = "", timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self._client = openai.OpenAI(base_url=self.base_url, api_key=api_key or NO_KEY, timeout=timeout, max_retries=0)
        log.info("llm: OpenAI-compatible server %s model %s", self.base_url, model)

    @classmethod
    def from_settings(cls, m, device: str) -> OpenAiLlm:
        return cls(m.openai_base_url, m.openai_model, m.openai_api_key, m.openai_timeout)

    def _open(self, path: str, create: Any, **body: Any) -> Any:
        """Start a streamed request (``create``: the client's method for ``path``).

        Raises:
            LlmError: HTTP error, connection failure or timeout.
        """
        try:
            return create(model=self.model, stream=True, **body)
        except openai.APIStatusError as exc:
            raise LlmError(f"{path}: HTTP {exc.status_code}: {exc.response.text[:300]!r}") from exc
        except openai.APIError as exc:
            raise LlmError(f"{path}: {exc}") from exc

    @staticmethod
    def _chunks(path: str, stream: Any, cancel: threading.Event) -> Iterator[Any]:
        """The stream's chunks until it ends or ``cancel`` is set (then it is closed).

        Raises:
            LlmError: the stream broke (a read timeout, a reset, a cut chunk, a bad event).
        """
        try:
            for chunk in stream:
                if cancel.is_set():
                    return
                yield chunk
        except Exception as exc:  # noqa: BLE001 - whatever the transport raised mid-stream is the turn's LLM failure
            raise LlmError(f"{path}: stream broke: {exc!r}") from exc
        finally:
            stream.close()

    def warm(self, prompt: str) -> None:
        """Have the server evaluate ``prompt`` once (one token generated), so that its KV
        cache holds the prefix every prompt of this agent starts with: llama.cpp's server
        and llama-cpp-python's reuse the longest common prefix of the previous request
        (vLLM's prefix caching likewise). Measured with the embedded persona, 2 nodes on
        one shared llama-cpp-python server, 2 cores (scripts/bench_cluster.sh): the
        prefix takes 4.4 s; without the warm-up the first turns paid it (voice-to-voice
        p95 7.75 s), with it p95 2.61 s. A server that cannot be reached
        is logged, not raised: the node still starts, and the first turn pays."""
        # Several nodes starting together queue behind each other on a one-sequence
        # server: the warm-up may wait longer than a turn would.
        client = self._client.with_options(timeout=max(self.timeout, 120.0))
        try:
            stream = self._open("/completions", client.completions.create, prompt=prompt, max_tokens=1, temperature=0.0)
            for _ in self._chunks("/completions", stream, threading.Event()):
                pass
        except LlmError as exc:
            log.warning("llm: could not warm the server's prompt cache: %s", exc)

    def stream(
        self,
        prompt: str,
        stop: list[str],
        max_tokens: int,
        temperature: float,
        cancel: threading.Event,
        repeat_penalty: float = 1.0,
        presence_penalty: float = 0.0,
    ) -> Iterator[str]:
        """Completion mode: yield text pieces of the completion of ``prompt``.

        ``repeat_penalty`` is llama.cpp's own and not sent; ``presence_penalty`` is
        OpenAI's, sent when set.

        Raises:
            LlmError: HTTP error, connection failure, or a broken stream.
        """
        extra: dict[str, Any] = {"presence_penalty": presence_penalty} if presence_penalty else {}
        stream = self._open(
            "/completions",
            self._client.completions.create,
            prompt=prompt,
            max_tokens=max_tokens,
            temperature=temperature,
            stop=stop[:4],
            **extra,
        )
        for chunk in self._chunks("/completions", stream, cancel):
            for choice in chunk.choices or []:
                if choice.text:
                    yield choice.text

    def stream_chat(
        self,
        messages: Iterable[Any],
        max_tokens: int,
        temperature: float,
        cancel: threading.Event,
        tools: list[Any] | None = None,
    ) -> Iterator[str | ToolCall]:
        """Chat mode: yield content pieces, and a :class:`ToolCall` for each tool call.

        Tool calls arrive in fragments (``delta.tool_calls[i].function.arguments``);
        they are assembled and yielded when the stream ends.

        Raises:
            LlmError: as :meth:`stream`.
        """
        extra: dict[str, Any] = {"tools": tools} if tools else {}
        stream = self._open(
            "/chat/completions",
            self._client.chat.completions.create,
            messages=list(messages),
            max_tokens=max_tokens,
            temperature=temperature,
            **extra,
        )
        calls: dict[int, dict[str, str]] = {}
        for chunk in self._chunks("/chat/completions", stream, cancel):
            for choice in chunk.choices or []:
                delta = choice.delta
                if delta is None:
                    continue
                if delta.content:
                    yield delta.content
                for part in delta.tool_calls or []:
                    slot = calls.setdefault(part.index or 0, {"name": "", "arguments": ""})
                    if part.function is not None:
                        slot["name"] += part.function.name or ""
                        slot["arguments"] += part.function.arguments or ""
        for slot in calls.values():
            try:
                arguments = json.loads(slot["arguments"]) if slot["arguments"] else {}
            except json.JSONDecodeError:
                arguments = {}
            yield ToolCall(slot["name"], arguments if isinstance(arguments, dict) else {})
