"""The ``collect_digits`` tool: a number of digits the caller keys (RFC 4733 events,
Media Streams ``dtmf``) or says, gathered until the count is reached, ``#`` is pressed or
a timeout passes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger("bridge.conversation")

#: The most digits one request may ask for.
MAX_DIGITS = 20


class DigitCollector:
    """Digits for one call, one request at a time.

    Args:
        call_id: the call, for the logs.
        timeout_s: how long a request waits for the caller's digits, seconds
            (``agent.digits_timeout_s``).
        done: called with the digits (``None``: none came before the timeout) when a
            request ends; its digits are also kept in :attr:`collected`.
    """

    def __init__(self, call_id: str, timeout_s: float, done: Callable[[str | None], None]) -> None:
        self._call_id = call_id
        self._timeout_s = timeout_s
        self._done = done
        self._count = 0
        self._digits: str | None = None  # None: no request waiting
        self._timer: asyncio.TimerHandle | None = None
        #: Digit strings gathered so far, in order.
        self.collected: list[str] = []

    @property
    def waiting(self) -> bool:
        """Whether a request is waiting for the caller's digits."""
        return self._digits is not None

    def start(self, count: int) -> None:
        """Wait for ``count`` digits (clamped to 1..:data:`MAX_DIGITS`); must run on the loop."""
        self._count = max(1, min(count, MAX_DIGITS))
        self._digits = ""
        log.info("call=%s: collecting %d digits", self._call_id, self._count)
        self.cancel()
        self._timer = asyncio.get_running_loop().call_later(self._timeout_s, self._timed_out)

    def key(self, digit: str) -> None:
        """A keyed DTMF digit: ``0``-``9`` count, ``#`` ends the entry, others are ignored."""
        if self._digits is None:
            return
        if digit.isdigit():
            self.add(digit)
        elif digit == "#":  # end of entry
            self._finish(self._digits or None)

    def add(self, digits: str) -> None:
        """Digits heard (keyed, or read out of a transcript)."""
        if self._digits is None or not digits:
            return
        self._digits += digits
        if len(self._digits) >= self._count:
            self._finish(self._digits[: self._count])

    def cancel(self) -> None:
        """Stop the timeout (the call ends)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _finish(self, digits: str | None) -> None:
        self._digits = None
        self.cancel()
        if digits:
            self.collected.append(digits)
        log.info("call=%s: digits collected: %s", self._call_id, digits if digits else "(none, timed out)")
        self._done(digits)

    def _timed_out(self) -> None:
        self._timer = None
        if self._digits is not None:
            self._finish(self._digits or None)
