"""The end of a call waits for the engine work it still has in worker threads
(bridge/conversation/work.py): a hang-up during synthesis returns from close() only
once the TTS call has returned, so the end-of-call heap trim frees that memory too."""

from __future__ import annotations

import asyncio
import logging
import threading

from bridge.config import load_settings
from bridge.conversation.work import WorkerThreads


async def test_settle_waits_for_running_calls_and_reports_the_rest(caplog):
    threads = WorkerThreads()
    release = threading.Event()
    future = threads.run(release.wait, 10)
    future.cancel()  # the awaiting side gives up (a barge-in); the thread runs on
    assert threads.running == 1
    with caplog.at_level(logging.WARNING, logger="bridge.conversation"):
        assert await threads.settle(0.1) == 1
    assert "1 engine call(s) still running" in caplog.text
    release.set()
    assert await threads.settle(5) == 0
    assert threads.running == 0


async def test_a_failing_call_is_an_engine_error_and_is_not_counted_after():
    from bridge.conversation.failures import EngineError

    threads = WorkerThreads()

    def broken():
        raise RuntimeError("model gone")

    try:
        await threads.call("tts", broken)
    except EngineError as exc:
        assert exc.stage == "tts" and "model gone" in str(exc)
    else:
        raise AssertionError("no EngineError")
    await asyncio.sleep(0.05)
    assert threads.running == 0


async def test_hanging_up_during_synthesis_waits_for_the_tts_call(engines):
    from bridge.conversation.engine import Conversation
    from bridge.evaluation.harness import RecordingLeg

    greeting = "Hello, this is Sam at the dental clinic, thank you for calling us today. How can I help you?"
    agent = load_settings(None).agent.model_copy(update={"greeting": greeting, "reprompt_after_s": 0})
    conv = Conversation(engines, agent, RecordingLeg("hangup"))
    conv.start()
    for _ in range(2000):  # until the greeting's first sentence is being synthesized
        if conv.threads.running:
            break
        await asyncio.sleep(0.001)
    assert conv.threads.running, "the greeting was never synthesized"
    await conv.close()  # the caller hangs up now
    assert conv.threads.running == 0, "close() returned while a TTS call still ran"
