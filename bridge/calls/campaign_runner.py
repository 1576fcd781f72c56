"""The campaign runner: dials a campaign's callees through the call layer, paced, inside
their calling windows, retried, on one injected clock (see :mod:`bridge.outbound.campaign`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from ..config import CampaignSettings
from ..outbound.campaign import RETRY_OUTCOMES, CampaignStore, utcnow
from ..outbound.windows import next_window, time_zones, window_open
from ..records.schema import CampaignCallee
from .dialing import DialOptions

log = logging.getLogger("bridge.campaign")


class CampaignRunner:
    """Dials a campaign's callees through a started :class:`bridge.server.BridgeServer`.

    Args:
        server: the server (its ``dial`` places the calls).
        store: the campaign's :class:`CampaignStore`.
        settings: :class:`bridge.config.CampaignSettings`.
        dnc: numbers of the do-not-call file.
        clock: the wall clock for windows and retries (aware UTC ``datetime``; injected in tests).
    """

    #: Seconds between looks at the queue when nothing can be dialed.
    TICK_S = 0.05

    def __init__(
        self,
        server,
        store: CampaignStore,
        settings: CampaignSettings,
        dnc: set[str] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.server = server
        self.store = store
        self.settings = settings
        self.dnc = dnc or set()
        self.clock = clock
        self.in_flight: dict[int, str] = {}  # callee id -> number
        self.stopping = False
        self.dials = 0
        self._last_dial: datetime | None = None
        self._writes: set[asyncio.Task] = set()
        self._zones: dict[str, list[ZoneInfo]] = {}

    def stop(self) -> None:
        """No new dials; :meth:`run` returns once the calls in progress ended."""
        if not self.stopping:
            log.info(
                "campaign %s: stopping: no new dials, %d call(s) in progress finish",
                self.store.name,
                len(self.in_flight),
            )
        self.stopping = True

    def _paced(self, cps: float) -> bool:
        """Whether ``1 / cps`` seconds have passed on :attr:`clock` since the last dial (a
        clock stepped back does not hold the campaign)."""
        if self._last_dial is None:
            return True
        elapsed = (self.clock() - self._last_dial).total_seconds()
        return elapsed < 0 or elapsed >= 1.0 / cps

    async def run(self) -> str:
        """Dial until every callee is done (returns ``done``) or :meth:`stop` (``stopped``)."""
        s = self.settings
        while True:
            if self.stopping:
                break
            if len(self.in_flight) < s.max_concurrent and self._paced(s.cps):
                if await self._dial_next():
                    continue
            if not self.in_flight and not self._writes and await asyncio.to_thread(self.store.remaining) == 0:
                break
            await asyncio.sleep(self.TICK_S)
        while self.in_flight or self._writes:
            await asyncio.sleep(self.TICK_S)
        state = "stopped" if self.stopping and await asyncio.to_thread(self.store.remaining) else "done"
        await asyncio.to_thread(self.store.set_state, state, self.clock())
        return state

    async def _dial_next(self) -> bool:
        """Dial the next due callee whose window is open; whether one was dialed (or closed as dnc)."""
        now = self.clock()
        for callee in await asyncio.to_thread(self.store.due, now, 20):
            if callee.id in self.in_flight:
                continue
            if callee.number in self.dnc or await asyncio.to_thread(self.store.is_dnc, callee.number):
                log.info("campaign %s: %s is on the do-not-call list", self.store.name, callee.number)
                await asyncio.to_thread(self.store.finish, callee.id, "dnc", "on the do-not-call list", now)
                self._count_dnc()
                return True
            zones = self._zones.setdefault(callee.number, time_zones(callee.number))
            if not window_open(zones, now, self.settings):
                at = next_window(zones, now, self.settings)
                await asyncio.to_thread(self.store.later, callee.id, at, "outside the calling window", now)
                log.info(
                    "campaign %s: %s is outside its calling window until %s",
                    self.store.name,
                    callee.number,
                    at.isoformat(),
                )
                continue
            await self._dial(callee, now)
            return True
        return False

    async def _dial(self, callee: CampaignCallee, now: datetime) -> None:
        attempt = await asyncio.to_thread(
            self.store.mark_dialing, callee.id, now
        )  # committed before the INVITE goes out
        self.in_flight[callee.id] = callee.number
        self._last_dial = now
        self.dials += 1
        options = DialOptions(
            amd=self.settings.amd,
            variables=dict(callee.variables or {}),
            campaign=self.store.name,
            on_outcome=lambda outcome, status, c=callee, a=attempt: self._outcome(c, a, outcome, status),
            ring_timeout_s=self.settings.ring_timeout_s,
        )
        try:
            call_id = await self.server.dial(callee.number, options=options)
        except (ValueError, OSError) as exc:
            log.warning("campaign %s: cannot dial %s: %s", self.store.name, callee.number, exc)
            self._outcome(callee, attempt, "failed", None, str(exc))
            return
        log.info(
            "campaign %s: dialing %s (row %d, attempt %d): call %s",
            self.store.name,
            callee.number,
            callee.row,
            attempt,
            call_id,
        )
        self._write(self.store.sent, callee.id, call_id)

    def _outcome(
        self, callee: CampaignCallee, attempt: int, outcome: str, status: int | None, detail: str = ""
    ) -> None:
        """A call of the campaign ended (from the SIP side, on the loop)."""
        now = self.clock()
        result = f"{outcome} {status}" if status else (detail or outcome)
        if outcome in RETRY_OUTCOMES and attempt < self.settings.max_attempts:
            at = now + timedelta(seconds=self.settings.retry_delay_s * self.settings.retry_backoff ** (attempt - 1))
            log.info(
                "campaign %s: %s: %s (attempt %d of %d); again at %s",
                self.store.name,
                callee.number,
                result,
                attempt,
                self.settings.max_attempts,
                at.isoformat(),
            )
            self._write(self.store.later, callee.id, at, result, now)
        else:
            log.info("campaign %s: %s: %s after %d attempt(s)", self.store.name, callee.number, outcome, attempt)
            self._write(self.store.finish, callee.id, outcome, result, now)
        self.in_flight.pop(callee.id, None)

    def _write(self, fn, *args) -> None:
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(fn, *args))
        self._writes.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task) -> None:
        self._writes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("campaign %s: saving state failed: %s", self.store.name, task.exception())

    def _count_dnc(self) -> None:
        """A callee closed as ``dnc`` before any dial (the SIP side counts every other outcome)."""
        metrics = getattr(self.server, "metrics", None)
        if metrics is not None:
            metrics.outbound_outcomes.labels("dnc").inc()
