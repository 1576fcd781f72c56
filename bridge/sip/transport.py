"""The one asyncio module of the SIP layer: a UDP socket driving a :class:`SipCore`.

It reads datagrams, feeds the core with ``loop.time()``, writes what the core
returns, arms the core's next timer, and hands events to a callback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from . import events as ev
from .core import SipCore

log = logging.getLogger("bridge.sip")


class SipUdpTransport(asyncio.DatagramProtocol):
    """Binds ``core.local_addr`` over UDP and runs ``core``.

    Args:
        core: the sans-IO core.
        on_event: called on the loop with each event from the core. Exceptions
            it raises are logged and never stop the transport.
    """

    def __init__(self, core: SipCore, on_event: Callable[[ev.Event], None]) -> None:
        self.core = core
        self.on_event = on_event
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> tuple[str, int]:
        """Bind the socket; returns the bound ``(host, port)`` (port 0 picks one)."""
        self._loop = asyncio.get_running_loop()
        self._transport, _ = await self._loop.create_datagram_endpoint(lambda: self, local_addr=self.core.local_addr)
        host, port = self._transport.get_extra_info("sockname")[:2]
        if self.core.local_addr[1] == 0:
            self.core.local_addr = (host, port)
            self.core.public_port = port
        return host, port

    def now(self) -> float:
        """The core's clock: the loop's monotonic time in seconds."""
        assert self._loop is not None
        return self._loop.time()

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            self.core.receive_datagram(data, (addr[0], addr[1]), self.now())
        except Exception:  # noqa: BLE001 - a bug must not take the listener down
            log.exception("sip: core failed on a datagram from %s", addr)
            self.core.counters["dropped_internal_error"] += 1
        self.flush()

    def error_received(self, exc: Exception) -> None:
        log.debug("sip: socket error %r", exc)

    def flush(self) -> None:
        """Send what the core queued, deliver its events, re-arm its timer."""
        if self._transport is None:
            return
        for data, addr in self.core.datagrams_to_send():
            self._transport.sendto(data, addr)
        while (event := self.core.next_event()) is not None:
            try:
                self.on_event(event)
            except Exception:  # noqa: BLE001
                log.exception("sip: event handler failed for %r", event)
            for data, addr in self.core.datagrams_to_send():
                self._transport.sendto(data, addr)
        self._arm()

    def _arm(self) -> None:
        deadline = self.core.get_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.core.handle_timer(self.now())
        self.flush()

    def close(self) -> None:
        """Close the socket and cancel the timer."""
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
