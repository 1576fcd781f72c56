"""The engine work one conversation has in worker threads, so that its end can wait for it.

Cancelling an asyncio task that awaits ``run_in_executor`` does not stop the thread: an
ASR pass, a TTS sentence or the LLM's next token runs on after a hang-up or a barge-in
(the LLM stops at its next token, the others when they are done). A call that ended
while such work still ran would free that work's memory only after the end-of-call
``malloc_trim`` (:mod:`bridge.memory`) had been, and the resident size would then carry
tens of MB of a finished call until the next call ended (measured: +25-33 MB on
test_leaks at random). :class:`WorkerThreads` counts what a conversation started, and
:meth:`WorkerThreads.settle` waits until it has all returned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from .failures import awaited

log = logging.getLogger("bridge.conversation")


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class WorkerThreads:
    """Engine calls in the event loop's default thread pool, each known until its thread returns.

    Use from the event loop's thread only.
    """

    def __init__(self) -> None:
        self._running: set[asyncio.Future] = set()

    @property
    def running(self) -> int:
        """Calls whose thread has not returned yet (cancelled or not)."""
        return len(self._running)

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future:
        """``loop.run_in_executor(None, fn, *args)``, counted until ``fn`` returns or raises.

        The returned future is the executor's: cancelling it stops waiting, not ``fn``.
        """
        loop = asyncio.get_running_loop()
        returned = loop.create_future()
        self._running.add(returned)
        returned.add_done_callback(self._running.discard)

        def call() -> Any:
            try:
                return fn(*args)
            finally:
                try:
                    loop.call_soon_threadsafe(_resolve, returned)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    pass

        return loop.run_in_executor(None, call)

    async def call(self, stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Await ``fn(*args)`` in a worker thread; its exception becomes
        :class:`~bridge.conversation.failures.EngineError` (:func:`~bridge.conversation.failures.awaited`).

        Raises:
            EngineError: ``fn`` raised (``stage`` names the engine: "asr", "tts").
            asyncio.CancelledError: the turn was cancelled (barge-in, hang-up); ``fn`` runs on, counted.
        """
        return await awaited(stage, self.run(fn, *args))

    async def settle(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds until every call's thread has returned; returns
        how many still run then (0: all done), logged once if any."""
        pending = set(self._running)
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        left = self.running
        if left:
            log.warning("conversation: %d engine call(s) still running %.1f s after the end of the call", left, timeout)
        return left


class Tasks:
    """The asyncio tasks one conversation started: each is kept until it ends, a failure
    is logged (ERROR, with ``what`` and the traceback) instead of lost, and
    :meth:`cancel` stops them all at the end of the call.

    Args:
        what: the log line for a task that failed (the call named in it).
    """

    def __init__(self, what: str) -> None:
        self._what = what
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        """Run ``coro`` as a task on the running loop."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    async def cancel(self) -> None:
        """Cancel every task still running and wait until they have ended."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(self._what, exc_info=task.exception())
