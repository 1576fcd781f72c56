"""A local HTTP server that speaks the OpenAI streaming API (SSE), for tests.

It stands in for an OpenAI-compatible LLM server (llama.cpp's server, vLLM)
and records every request body. ``script(request) -> (text, tool_calls)``
decides each answer.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAI:
    def __init__(self, script) -> None:
        self.script = script
        self.requests: list[tuple[str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                outer.requests.append((self.path, body))
                if outer.hang_next:
                    # A server that accepted the request and never answers (overloaded, stuck).
                    outer.hang_next = False
                    outer.hung.wait(60)
                    return
                if outer.fail_next:
                    outer.fail_next = False
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b'{"error": "boom"}')
                    return
                text, tool_calls = outer.script(self.path, body)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                chat = self.path.endswith("/chat/completions")
                for i in range(0, len(text), 7):  # small pieces, like tokens
                    piece = text[i : i + 7]
                    choice = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
                    self.wfile.write(b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n")
                for n, (name, arguments) in enumerate(tool_calls):
                    args = json.dumps(arguments)
                    for j, part in enumerate((args[: len(args) // 2], args[len(args) // 2 :])):
                        call = {"index": n, "function": {"arguments": part}}
                        if j == 0:
                            call["function"]["name"] = name
                            call["id"] = f"call_{n}"
                        self.wfile.write(
                            b"data: "
                            + json.dumps({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}).encode()
                            + b"\n\n"
                        )
                self.wfile.write(b"data: [DONE]\n\n")

        self.fail_next = False
        self.hang_next = False
        self.hung = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.hung.set()
        self.server.shutdown()
        self.server.server_close()


def scripted(engines, fake: FakeOpenAI, timeout: float = 30.0):
    """The real VAD, ASR and TTS of ``engines``, with the LLM behind the OpenAI-compatible
    backend talking to ``fake``."""
    from bridge.engines import Engines
    from bridge.engines.openai_llm import OpenAiLlm

    return Engines(
        engines.vad_factory,
        engines.asr,
        OpenAiLlm(fake.base_url, "scripted", timeout=timeout),
        engines.tts,
        engines.device,
    )
