"""Waiting for what a test expects, not for a time: :func:`eventually` polls a check until
it holds (or a generous limit passes), so the test takes as long as the thing takes on
this machine and no longer. Also the test's one way to read words out of a transcript."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
    """``check()``'s first true result, polled every ``interval`` s; when ``timeout`` s pass
    first, its last result (the caller's assertion then says what was wrong)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() >= deadline:
            return result
        time.sleep(interval)


async def eventually_async(check: Callable[[], T | Awaitable[T]], timeout: float = 10.0, interval: float = 0.05) -> T:
    """:func:`eventually` on the event loop: the loop runs while it waits."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result or time.monotonic() >= deadline:
            return result  # type: ignore[return-value]
        await asyncio.sleep(interval)


def words(text: str) -> set[str]:
    """The words and numbers of ``text``, lower case."""
    return set(re.findall(r"[a-z0-9]+", text.lower()))
