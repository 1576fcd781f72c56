"""Agent behaviour through a real SIP+RTP leg: tools, endpointing, reprompt; and the
OpenAI-compatible backend against a local server speaking that API."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time

import numpy as np
import pytest

from bridge.client import place_call
from bridge.conversation.turns import sentence_state
from bridge.engines import Engines
from bridge.engines.openai_llm import LlmError, OpenAiLlm
from bridge.engines.tools import ToolCall, digits_in, split_commands

from .fake_openai import FakeOpenAI, scripted
from .test_conversation_sip import start_server

pytestmark = pytest.mark.e2e


def test_openai_backend_streams_text_and_tool_calls():
    fake = FakeOpenAI(
        lambda path, body: (
            "We open at nine. See you then.",
            [("collect_digits", {"count": 4})] if "chat" in path else [],
        )
    )
    try:
        llm = OpenAiLlm(fake.base_url, "test-model", api_key="k")
        pieces = list(llm.stream("Caller: hi\nSam:", ["\n"], 40, 0.2, threading.Event()))
        assert "".join(pieces) == "We open at nine. See you then." and len(pieces) > 3
        path, body = fake.requests[-1]
        assert (
            path == "/v1/completions"
            and body["stream"] is True
            and body["model"] == "test-model"
            and body["stop"] == ["\n"]
        )
        out = list(
            llm.stream_chat(
                [{"role": "user", "content": "hi"}], 40, 0.2, threading.Event(), tools=[{"type": "function"}]
            )
        )
        assert "".join(p for p in out if isinstance(p, str)) == "We open at nine. See you then."
        assert out[-1] == ToolCall("collect_digits", {"count": 4})
        path, body = fake.requests[-1]
        assert (
            path == "/v1/chat/completions"
            and body["messages"][0]["content"] == "hi"
            and body["tools"] == [{"type": "function"}]
        )
        fake.fail_next = True
        with pytest.raises(LlmError):
            list(llm.stream("x", [], 5, 0.0, threading.Event()))
    finally:
        fake.close()


def test_tool_convention_and_digits():
    assert split_commands("Goodbye! [end_call]") == ("Goodbye!", [ToolCall("end_call")])
    assert split_commands("Please enter it. [collect_digits 4]") == (
        "Please enter it.",
        [ToolCall("collect_digits", {"count": 4})],
    )
    assert split_commands("Let me transfer you [transfer") == ("Let me transfer you", [])
    assert digits_in("four two one, 9") == "4219"
    assert sentence_state("What time do you open on Saturday?") == "finished"
    assert sentence_state("I would like to book an appointment and") == "unfinished"
    assert sentence_state("So I was thinking, um.") == "unfinished"
    assert sentence_state("I was wondering...") == "unfinished"
    assert sentence_state("maybe tomorrow") == "unknown"


async def wait_finished(server, n: int = 1):
    for _ in range(100):
        if len(server.finished) >= n:
            return server.finished[-1]
        await asyncio.sleep(0.1)
    raise AssertionError("the call did not end")


async def test_silence_reprompts_then_hangs_up(engines):
    fake = FakeOpenAI(lambda path, body: ("Sure.", []))
    server = await start_server(scripted(engines, fake), reprompt_after_s=2, max_reprompts=1, greeting="Hi.")
    try:
        report = await place_call(
            f"sip:agent@127.0.0.1:{server.core.local_addr[1]}", [], None, duration=40, wait_greeting=False
        )
        assert report.end_reason == "remote_bye"
        conversation = await wait_finished(server)
        said = [text for role, text in conversation.transcript() if role == "agent"]
        assert said[1] == server.settings.agent.reprompt and said[-1] == server.settings.agent.goodbye
    finally:
        await server.stop()
        fake.close()


async def test_silero_vad_conversation(engines, speech):
    """agent.vad: silero drives the same turn-taking: the question is heard and answered."""
    from bridge.engines.vad import silero_vad_factory

    fake = FakeOpenAI(lambda path, body: ("We open at nine on Saturday.", []))
    silero = Engines(
        silero_vad_factory(0.5), engines.asr, OpenAiLlm(fake.base_url, "scripted"), engines.tts, engines.device
    )
    server = await start_server(silero, vad="silero")
    try:
        report = await place_call(f"sip:agent@127.0.0.1:{server.core.local_addr[1]}", [speech["saturday"]], None)
        assert len(report.latencies) == 1
        conversation = await wait_finished(server)
        assert "saturday" in conversation.turn_log[0]["caller"].lower()
        assert type(conversation.vad).__name__ == "SileroVad"
    finally:
        await server.stop()
        fake.close()


async def test_interim_transcripts_while_the_caller_speaks(engines, tmp_path):
    """Streaming ASR (``interim_always``): interim passes run during a long utterance to a
    quiet agent; the turn gets the final text."""
    import subprocess

    long_question = tmp_path / "long.wav"
    subprocess.run(
        [
            "espeak-ng",
            "-s",
            "140",
            "-w",
            str(long_question),
            "Hello, I would like to book a cleaning for my daughter and a check-up for my son, next Tuesday or Wednesday afternoon, "
            "if you have any time available",
        ],
        check=True,
    )
    fake = FakeOpenAI(lambda path, body: ("Sure, Tuesday works.", []))
    # An interval well above a pass (tiny.en: 0.35-1.1 s on 2 cores): passes longer than
    # half the interval are skipped (see the next test).
    server = await start_server(scripted(engines, fake), interim_interval_ms=3000, interim_always=True)
    try:
        await place_call(f"sip:agent@127.0.0.1:{server.core.local_addr[1]}", [long_question], None)
        conversation = await wait_finished(server)
        assert len(conversation.interims) >= 2, conversation.interims
        first_words = conversation.interims[0].lower().split()[:2]
        assert first_words and "hello" in first_words[0]
        final = conversation.turn_log[0]["caller"].lower()
        assert "time" in re.findall(r"[a-z]+", final)[-4:] and len(final) > len(
            conversation.interims[0]
        )  # the end of the sentence ("...any time available"), not in the first interim
    finally:
        await server.stop()
        fake.close()


async def test_interim_passes_are_skipped_where_a_pass_is_slower_than_half_the_interval(engines, tmp_path):
    """An interim pass that runs as the caller stops holds the final pass back: with
    passes slower than half the interval, no interim pass starts once one pass has been
    timed; the turn still gets its text. The interval is set from this machine's own pass."""
    import subprocess

    question = tmp_path / "long.wav"
    subprocess.run(
        [
            "espeak-ng",
            "-s",
            "140",
            "-w",
            str(question),
            "Hello, I would like to book a cleaning for my daughter next Tuesday afternoon",
        ],
        check=True,
    )
    engines.asr.transcribe(np.zeros(8000, dtype=np.int16))  # one timed pass
    interval_ms = max(20, int(engines.asr.pass_seconds * 1000))  # a pass takes twice half of it
    fake = FakeOpenAI(lambda path, body: ("Sure, Tuesday works.", []))
    server = await start_server(scripted(engines, fake), interim_interval_ms=interval_ms, interim_always=True)
    try:
        await place_call(f"sip:agent@127.0.0.1:{server.core.local_addr[1]}", [question], None)
        conversation = await wait_finished(server)
        assert conversation.interims == []
        assert "cleaning" in conversation.turn_log[0]["caller"].lower()
    finally:
        await server.stop()
        fake.close()


def test_openai_backend_stream_that_stalls_or_breaks_midway_is_an_llm_error():
    """A server that starts a stream and then stalls past the timeout, or cuts the
    connection mid-chunk: LlmError (the turn's engine-failure rule), never a raw
    TimeoutError; warm() against a dead server logs and returns."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    event = b'data: {"choices": [{"text": "We open"}]}\n\n'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"

    def serve(mode):
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(head + f"{len(event):x}\r\n".encode() + event + b"\r\n")
        if mode == "cut":
            conn.sendall(b'40\r\ndata: {"choi')  # a chunk announced longer than what comes
            conn.close()
        else:
            time.sleep(3)
            conn.close()

    for mode in ("stall", "cut"):
        t = threading.Thread(target=serve, args=(mode,), daemon=True)
        t.start()
        llm = OpenAiLlm(f"http://127.0.0.1:{port}/v1", "m", timeout=1.0)
        pieces = []
        with pytest.raises(LlmError, match="stream broke"):
            for piece in llm.stream("x", [], 5, 0.0, threading.Event()):
                pieces.append(piece)
        assert pieces == ["We open"], mode
        t.join(5)
    listener.close()
    OpenAiLlm(f"http://127.0.0.1:{port}/v1", "m", timeout=1.0).warm("prefix")  # refused: logged, not raised
