"""What the SIP core has to write and to tell, sans-IO: datagrams queued for the transport,
events for the call layer, and counters of what happened (drops logged once per reason)."""

from __future__ import annotations

import collections
import logging

from . import events as ev
from .state import Addr

log = logging.getLogger("bridge.sip")


class Outbox:
    """The core's output, drained by the transport (:meth:`take_datagrams`,
    :meth:`next_event`); every part of the core writes to the same one."""

    def __init__(self) -> None:
        self._datagrams: list[tuple[bytes, Addr]] = []
        self._events: collections.deque[ev.Event] = collections.deque()
        #: What happened, by name (``requests_received``, ``responses_sent_200``,
        #: ``retransmissions``, ``timeouts_B``, ``dropped_<reason>``, ...).
        self.counters: collections.Counter[str] = collections.Counter()
        self._logged_reasons: set[str] = set()

    def send(self, data: bytes, dest: Addr) -> None:
        """Queue ``data`` (one SIP message) for ``dest``, ``(host, port)``."""
        self._datagrams.append((data, dest))

    def emit(self, event: ev.Event) -> None:
        """Queue an event for the call layer."""
        self._events.append(event)

    def count(self, name: str) -> None:
        """Add one to counter ``name``."""
        self.counters[name] += 1

    def drop(self, reason: str, addr: Addr, detail: str = "") -> None:
        """A datagram from ``addr`` was dropped: counted as ``dropped_<reason>`` and logged,
        at WARNING the first time for each reason."""
        self.counters[f"dropped_{reason}"] += 1
        if reason not in self._logged_reasons:
            self._logged_reasons.add(reason)
            log.warning(
                "sip: dropped datagram from %s:%s: %s %s (logged once per reason; see counters)",
                addr[0],
                addr[1],
                reason,
                detail,
            )
        else:
            log.debug("sip: dropped datagram from %s:%s: %s", addr[0], addr[1], reason)

    def take_datagrams(self) -> list[tuple[bytes, Addr]]:
        """Return and forget the datagrams queued so far."""
        out, self._datagrams = self._datagrams, []
        return out

    def next_event(self) -> ev.Event | None:
        """Pop the next event, or ``None``."""
        return self._events.popleft() if self._events else None
