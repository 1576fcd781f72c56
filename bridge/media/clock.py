"""One send tick for every paced stream on an event loop.

Each RTP stream (and each Media Streams leg) sends one 20 ms packet per 20 ms,
its deadlines counted from its own start (RFC 3550 section 5.1: timestamps advance by the sampling clock). With one asyncio
task per stream, 500 streams are 25,000 task wake-ups a second, each a timer
handle, a future and a task step; the loop falls behind by tens of
milliseconds. :class:`SendClock` keeps every stream's next deadline in one heap
and arms one loop timer for the earliest; when it fires, every stream due by
then (within ``coalesce`` seconds) is served in deadline order. A stream keeps
its own phase, so the interval between its packets stays 20 ms however many
streams share the tick.

The clock is sans-policy: it calls ``tick(now)`` on each due stream and takes
back the stream's next deadline (or ``None`` to stop). What a tick sends is the
stream's business (:class:`bridge.media.stream.RtpStream`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import weakref
from typing import Protocol

log = logging.getLogger("bridge.rtp")

#: Streams whose deadlines fall within this many seconds after the earliest are
#: served in the same wake-up (0.5 ms: no packet leaves more than that early).
COALESCE_S = 0.0005


class Ticking(Protocol):
    """A paced sender driven by :class:`SendClock`."""

    def tick(self, now: float) -> float | None:
        """Send what is due by ``now`` (loop monotonic seconds); return the next
        deadline (seconds), or ``None`` when the stream is done. Must not raise."""


class SendClock:
    """The shared pacing timer of one event loop (see the module docstring).

    Use :meth:`for_loop` to get the loop's clock. Not thread-safe: call it from
    the loop's thread only.

    Args:
        loop: the event loop whose ``time()`` and ``call_at`` are used.
        coalesce: see :data:`COALESCE_S`, seconds.
    """

    _clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SendClock] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop, coalesce: float = COALESCE_S) -> None:
        self.loop = loop
        self.coalesce = coalesce
        self._heap: list[tuple[float, int, Ticking]] = []
        self._order = itertools.count()
        self._members: dict[int, int] = {}  # id(stream) -> its one live heap entry's order
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at: float | None = None
        #: Wake-ups so far, and streams served (``served / wakeups``: streams per wake-up).
        self.wakeups = 0
        self.served = 0

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop | None = None) -> SendClock:
        """The clock of ``loop`` (default: the running loop), made on first use."""
        loop = loop or asyncio.get_running_loop()
        clock = cls._clocks.get(loop)
        if clock is None:
            clock = cls._clocks[loop] = cls(loop)
        return clock

    def __len__(self) -> int:
        return len(self._members)

    def add(self, stream: Ticking, deadline: float) -> None:
        """Serve ``stream`` from ``deadline`` on (loop monotonic seconds)."""
        order = next(self._order)
        self._members[id(stream)] = order
        heapq.heappush(self._heap, (deadline, order, stream))
        self._arm()

    def remove(self, stream: Ticking) -> None:
        """Stop serving ``stream`` (its heap entry is skipped when reached)."""
        self._members.pop(id(stream), None)
        if not self._members and self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._armed_at = None
            self._heap.clear()

    def _arm(self) -> None:
        if not self._heap:
            return
        first = self._heap[0][0]
        if self._timer is not None and self._armed_at is not None and self._armed_at <= first:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = first
        self._timer = self.loop.call_at(first, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._armed_at = None
        self.wakeups += 1
        now = self.loop.time()
        horizon = now + self.coalesce
        heap = self._heap
        due = []
        while heap and heap[0][0] <= horizon:
            due.append(heapq.heappop(heap))
        for _deadline, order, stream in due:
            if self._members.get(id(stream)) != order:
                continue  # removed (or added again under a newer entry)
            self.served += 1
            try:
                following = stream.tick(now)
            except Exception:  # noqa: BLE001 - one broken stream must not stop the others' packets
                log.exception("send clock: a stream's tick raised; it is no longer served")
                following = None
            if following is None:
                del self._members[id(stream)]
            else:
                heapq.heappush(heap, (following, order, stream))
        self._arm()
