"""An OpenAI-compatible HTTP LLM backend (llama.cpp's server, vLLM, ...), streamed.

``/v1/completions`` for ``completion`` mode and ``/v1/chat/completions`` for
``chat`` mode, both with ``"stream": true`` (server-sent events, one
``data: {json}`` line per chunk, ``data: [DONE]`` at the end). Standard
library HTTP only: the request runs in the conversation's worker thread.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

from .tools import ToolCall

log = logging.getLogger("bridge.engines.llm")


class LlmError(Exception):
    """The server refused the request or broke the stream (status and text in the message)."""


class OpenAiLlm:
    """Streams completions from an OpenAI-compatible server.

    Args:
        base_url: e.g. ``http://127.0.0.1:8080/v1``.
        model: the ``model`` field to send.
        api_key: sent as ``Authorization: Bearer`` when set.
        timeout: seconds to wait for the connection and between chunks.
    """

    def __init__(self, base_url: str, model: str, api_key: str = "", timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        log.info("llm: OpenAI-compatible server %s model %s", self.base_url, model)

    @classmethod
    def from_settings(cls, m, device: str) -> OpenAiLlm:
        return cls(m.openai_base_url, m.openai_model, m.openai_api_key, m.openai_timeout)

    def _events(self, path: str, body: dict, cancel: threading.Event, timeout: float | None = None) -> Iterator[dict]:
        """The server-sent events of a streamed request, as JSON objects.

        Raises:
            LlmError: HTTP error, connection failure, a read timeout or a cut stream
                (also in the middle of the stream), or a malformed event.
        """
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method="POST")
        try:
            response = urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            raise LlmError(f"{path}: HTTP {exc.code}: {exc.read()[:300]!r}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise LlmError(f"{path}: {exc}") from exc
        with response:
            while True:
                try:
                    raw = response.readline()
                except (OSError, http.client.HTTPException) as exc:  # read timeout, reset, cut chunk
                    raise LlmError(f"{path}: stream broke: {exc!r}") from exc
                if not raw:
                    return
                if cancel.is_set():
                    return
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    return
                try:
                    yield json.loads(payload)
                except json.JSONDecodeError as exc:
                    raise LlmError(f"{path}: bad event {payload[:200]!r}") from exc

    def warm(self, prompt: str) -> None:
        """Have the server evaluate ``prompt`` once (one token generated), so that its KV
        cache holds the prefix every prompt of this agent starts with: llama.cpp's server
        and llama-cpp-python's reuse the longest common prefix of the previous request
        (vLLM's prefix caching likewise). Measured with the embedded persona, 2 nodes on
        one shared llama-cpp-python server, 2 cores (scripts/bench_cluster.sh): the
        prefix takes 4.4 s; without the warm-up the first turns paid it (voice-to-voice
        p95 7.75 s), with it p95 2.61 s. A server that cannot be reached
        is logged, not raised: the node still starts, and the first turn pays."""
        body = {"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0, "stream": True}
        try:
            # Several nodes starting together queue behind each other on a one-sequence
            # server: the warm-up may wait longer than a turn would.
            for _ in self._events("/completions", body, threading.Event(), timeout=max(self.timeout, 120.0)):
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

        Raises:
            LlmError: HTTP error, connection failure, or a malformed event.
        """
        body = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stop": stop[:4],
            "stream": True,
        }
        if presence_penalty:
            body["presence_penalty"] = presence_penalty  # OpenAI's name; repeat_penalty is llama.cpp's own and not sent

        for event in self._events("/completions", body, cancel):
            for choice in event.get("choices", []):
                text = choice.get("text")
                if text:
                    yield text

    def stream_chat(
        self,
        messages: list[dict],
        max_tokens: int,
        temperature: float,
        cancel: threading.Event,
        tools: list[dict] | None = None,
    ) -> Iterator[str | ToolCall]:
        """Chat mode: yield content pieces, and a :class:`ToolCall` for each tool call.

        Tool calls arrive in fragments (``delta.tool_calls[i].function.arguments``);
        they are assembled and yielded when the stream ends.

        Raises:
            LlmError: as :meth:`stream`.
        """
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
        }
        if tools:
            body["tools"] = tools
        calls: dict[int, dict] = {}
        for event in self._events("/chat/completions", body, cancel):
            for choice in event.get("choices", []):
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    yield delta["content"]
                for part in delta.get("tool_calls") or []:
                    slot = calls.setdefault(part.get("index", 0), {"name": "", "arguments": ""})
                    function = part.get("function") or {}
                    slot["name"] += function.get("name") or ""
                    slot["arguments"] += function.get("arguments") or ""
        for slot in calls.values():
            try:
                arguments = json.loads(slot["arguments"]) if slot["arguments"] else {}
            except json.JSONDecodeError:
                arguments = {}
            yield ToolCall(slot["name"], arguments if isinstance(arguments, dict) else {})
