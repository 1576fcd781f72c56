"""The LLM path for many calls on a GPU: the OpenAI-compatible backend (llama.cpp's
``llama-server --parallel N``, vLLM) holds no lock, so a turn never waits for another
call's turn in this process; the server batches the sequences."""

from __future__ import annotations

import threading

from bridge.engines.openai_llm import OpenAiLlm
from tests.fake_openai import FakeOpenAI


def test_two_calls_stream_at_once_through_the_openai_backend():
    second_arrived = threading.Event()

    def script(path, body):
        said = body["messages"][-1]["content"]
        if "first" in said:
            # The first call's answer starts only once the second call's request is in:
            # a client that serialized turns would never send it, and this would time out.
            assert second_arrived.wait(20), "the second call's request never came while the first was open"
            return "First answer.", []
        second_arrived.set()
        return "Second answer.", []

    fake = FakeOpenAI(script)
    try:
        llm = OpenAiLlm(fake.base_url, "default", timeout=30)
        out: dict[str, str] = {}

        def turn(name: str) -> None:
            pieces = llm.stream_chat([{"role": "user", "content": f"the {name} caller"}], 32, 0.0, threading.Event())
            out[name] = "".join(p for p in pieces if isinstance(p, str))

        threads = [threading.Thread(target=turn, args=(n,)) for n in ("first", "second")]
        threads[0].start()
        for _ in range(200):  # the first call's request is in (and held) before the second call speaks
            if fake.requests:
                break
            threading.Event().wait(0.05)
        threads[1].start()
        for t in threads:
            t.join(30)
        assert out == {"first": "First answer.", "second": "Second answer."}
    finally:
        fake.close()
