"""The asyncio side of the SIP layer: sockets driving a sans-IO :class:`SipCore`.

One core per listening transport (UDP, TCP, TLS). The transport reads bytes,
feeds the core with ``loop.time()``, writes what the core returns, arms the
core's next timer, and hands the core's events to a callback. Nothing here
knows SIP beyond framing (:mod:`bridge.sip.framing`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

from . import events as ev
from .core import SipCore
from .framing import FramingError, StreamFramer

log = logging.getLogger("bridge.sip")


class _Driver:
    """Timer and event plumbing shared by the UDP and stream transports."""

    def __init__(self, core: SipCore, on_event: Callable[[ev.Event], None]) -> None:
        self.core = core
        self.on_event = on_event
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def now(self) -> float:
        """The core's clock: the loop's monotonic time in seconds."""
        assert self._loop is not None
        return self._loop.time()

    def _write(self, data: bytes, addr: tuple[str, int]) -> None:
        raise NotImplementedError

    def _feed(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.core.receive_datagram(data, addr, self.now())
        except Exception:  # noqa: BLE001 - a bug must not take the listener down
            log.exception("sip: core failed on a message from %s", addr)
            self.core.counters["dropped_internal_error"] += 1
        self.flush()

    def flush(self) -> None:
        """Send what the core queued, deliver its events, re-arm its timer."""
        if self._loop is None:
            return
        for data, addr in self.core.datagrams_to_send():
            self._write(data, addr)
        while (event := self.core.next_event()) is not None:
            try:
                self.on_event(event)
            except Exception:  # noqa: BLE001
                log.exception("sip: event handler failed for %r", event)
            for data, addr in self.core.datagrams_to_send():
                self._write(data, addr)
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

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class SipUdpTransport(_Driver, asyncio.DatagramProtocol):
    """Binds ``core.local_addr`` over UDP and runs ``core``.

    Args:
        core: the sans-IO core (``transport="UDP"``).
        on_event: called on the loop with each event from the core. Exceptions
            it raises are logged and never stop the transport.
    """

    def __init__(self, core: SipCore, on_event: Callable[[ev.Event], None]) -> None:
        _Driver.__init__(self, core, on_event)
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> tuple[str, int]:
        """Bind the socket; returns the bound ``(host, port)`` (port 0 picks one)."""
        self._loop = asyncio.get_running_loop()
        self._transport, _ = await self._loop.create_datagram_endpoint(lambda: self, local_addr=self.core.local_addr)
        host, port = self._transport.get_extra_info("sockname")[:2]
        if self.core.local_addr[1] == 0:
            self.core.bound((host, port))
        return host, port

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._feed(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("sip: socket error %r", exc)

    def _write(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(data, addr)

    def close(self) -> None:
        """Close the socket and cancel the timer."""
        self._cancel_timer()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._loop = None


class SipStreamTransport(_Driver):
    """SIP over TCP or TLS (RFC 3261 section 18, framing by Content-Length).

    Listens on ``core.local_addr``; each connection is known by its remote
    ``(host, port)``, which is the address the core sees and answers to. A
    message for an address with no open connection opens one (TLS with
    ``client_ssl``).

    Args:
        core: the sans-IO core (``transport="TCP"`` or ``"TLS"``).
        on_event: as for :class:`SipUdpTransport`.
        server_ssl: the TLS server context (certificate and key) for ``TLS``.
        client_ssl: the TLS context for connections we open.
        max_message_size: largest message accepted on a connection, bytes.
        idle_timeout: close a connection after this many seconds without data.
    """

    def __init__(
        self,
        core: SipCore,
        on_event: Callable[[ev.Event], None],
        *,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        max_message_size: int = 65536,
        idle_timeout: float = 600.0,
    ) -> None:
        super().__init__(core, on_event)
        self.server_ssl = server_ssl
        self.client_ssl = client_ssl
        self.max_message_size = max_message_size
        self.idle_timeout = idle_timeout
        self._server: asyncio.base_events.Server | None = None
        self._conns: dict[tuple[str, int], asyncio.StreamWriter] = {}
        self._pending: dict[tuple[str, int], list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def connections(self) -> int:
        """Open connections (for leak checks)."""
        return len(self._conns)

    async def start(self) -> tuple[str, int]:
        """Listen; returns the bound ``(host, port)``."""
        self._loop = asyncio.get_running_loop()
        host, port = self.core.local_addr
        self._server = await asyncio.start_server(self._accept, host, port, ssl=self.server_ssl)
        name = self._server.sockets[0].getsockname()
        bound = (str(name[0]), int(name[1]))
        if port == 0:
            self.core.bound(bound)
        return bound

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        await self._serve(reader, writer, (peer[0], peer[1]))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, addr: tuple[str, int]) -> None:
        self._conns[addr] = writer
        framer = StreamFramer(self.max_message_size)
        try:
            while True:
                data = await asyncio.wait_for(reader.read(65536), self.idle_timeout)
                if not data:
                    break
                for item in framer.feed(data):
                    if isinstance(item, bytes):
                        self._feed(item, addr)
                    else:  # framing.PING: a keepalive
                        writer.write(b"\r\n")  # RFC 5626 pong
        except FramingError as exc:
            self.core.counters[f"dropped_stream_{exc.reason}"] += 1
            log.warning("sip: closing %s connection from %s:%s: %s", self.core.transport, addr[0], addr[1], exc.reason)
        except (TimeoutError, ConnectionError, ssl.SSLError, OSError) as exc:
            log.debug("sip: connection %s closed: %r", addr, exc)
        finally:
            if self._conns.get(addr) is writer:
                del self._conns[addr]
            writer.close()

    def _write(self, data: bytes, addr: tuple[str, int]) -> None:
        writer = self._conns.get(addr)
        if writer is not None and not writer.is_closing():
            writer.write(data)
            return
        queue = self._pending.setdefault(addr, [])
        queue.append(data)
        if len(queue) == 1:
            task = asyncio.ensure_future(self._connect(addr))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connect(self, addr: tuple[str, int]) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    addr[0], addr[1], ssl=self.client_ssl, server_hostname=addr[0] if self.client_ssl else None
                ),
                10,
            )
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            log.warning("sip: cannot connect to %s:%s over %s: %r", addr[0], addr[1], self.core.transport, exc)
            self._pending.pop(addr, None)  # the transaction's Timer B/F reports the failure
            return
        for data in self._pending.pop(addr, []):
            writer.write(data)
        await self._serve(reader, writer, addr)

    def close(self) -> None:
        """Stop listening and close every connection."""
        self._cancel_timer()
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._conns.values()):
            writer.close()
        self._conns.clear()
        for task in list(self._tasks):
            task.cancel()
        self._loop = None
