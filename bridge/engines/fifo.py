"""A lock that serves its waiters in arrival order: the oldest waiting turn first.

The models that take one call at a time (Piper on the CPU, an unbatched Whisper pass)
wait behind a lock. ``threading.Lock`` promises no order: with four calls whose turns
coincide, a turn that came last could take the model before one that has waited for a
second. :class:`FifoLock` hands the lock to the waiter that asked first, and says how
many wait (:attr:`FifoLock.waiting`). (The LLM needs none: its turns decode together,
:mod:`bridge.engines.llm`.)
"""

from __future__ import annotations

import threading
from collections import deque


class FifoLock:
    """A non-reentrant mutual-exclusion lock, granted first come, first served.

    Usable as ``with lock:``; ``acquire(blocking=False)`` fails while the lock is held
    or anybody waits for it (it never jumps the queue).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[object] = deque()
        self._held = False

    @property
    def waiting(self) -> int:
        """Threads blocked in :meth:`acquire` now."""
        return len(self._queue)

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock, after every thread that asked before; returns whether it was taken."""
        with self._cond:
            if not self._held and not self._queue:
                self._held = True
                return True
            if not blocking:
                return False
            ticket = object()
            self._queue.append(ticket)
            while self._held or self._queue[0] is not ticket:
                self._cond.wait()
            self._queue.popleft()
            self._held = True
            return True

    def release(self) -> None:
        """Give the lock to the oldest waiter, if any.

        Raises:
            RuntimeError: the lock is not held.
        """
        with self._cond:
            if not self._held:
                raise RuntimeError("release of an unheld FifoLock")
            self._held = False
            self._cond.notify_all()

    def __enter__(self) -> FifoLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
