"""Campaigns: many outbound calls, paced, in the callee's daytime, retried, never twice.

``bridge campaign run FILE.csv --name NAME`` loads one callee per row (a ``number``
column in E.164, checked with ``phonenumbers``; every other column is a variable for
the greeting, the voicemail message and the persona) into the records database
(:class:`CampaignStore`) and dials them (:class:`CampaignRunner`):

- **pacing**: at most ``cps`` INVITEs a second on the trunk (Twilio: 1 CPS per trunk
  and region by default, ``503`` beyond it) and ``max_concurrent`` calls at once;
- **windows**: only between ``window_start`` and ``window_end`` on ``window_days`` in
  the callee's local time, from the number's time zones (``phonenumbers.timezone``;
  a number spanning several zones is called only when the window is open in all);
- **retries**: ``busy``, ``no_answer``, ``failed`` (a ``503`` included) are dialed
  again after ``retry_delay_s`` (times ``retry_backoff`` per further attempt) up to
  ``max_attempts``;
- **do-not-call**: ``dnc_file`` and the ``dnc`` table are checked before every dial
  (outcome ``dnc``);
- **crash safety**: a callee is marked ``dialing`` (committed) before its INVITE is
  sent. A run after a crash or ``kill -9`` closes such callees with the outcome their
  call record has, else ``failed`` (``interrupted``), and never dials them again;
- **stopping**: SIGTERM stops new dials, lets calls in progress finish, and marks the
  campaign ``stopped`` (a later run resumes it).

Each callee ends as ``human``, ``voicemail_left``, ``machine_no_beep``, ``no_answer``,
``busy``, ``failed`` or ``dnc`` (:data:`OUTCOMES`).
"""

from __future__ import annotations

import asyncio
import csv
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..config import CampaignSettings
from ..records.schema import Call, Campaign, CampaignCallee, DoNotCall

log = logging.getLogger("bridge.campaign")

OUTCOMES = ("human", "voicemail_left", "machine_no_beep", "no_answer", "busy", "failed", "dnc")
#: Outcomes that are dialed again while attempts remain.
RETRY_OUTCOMES = ("busy", "no_answer", "failed")


def utcnow() -> datetime:
    """The current time, UTC, timezone-aware."""
    return datetime.now(timezone.utc)


def _iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC (SQLite hands stored times back without their zone; they are UTC)."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()


# ---------------------------------------------------------------- callees


@dataclass(frozen=True)
class CalleeRow:
    """One row of a campaign file: ``row`` (1 = the first after the header), the E.164
    ``number`` and the other columns as ``variables``."""

    row: int
    number: str
    variables: dict[str, str]


def e164(text: str) -> str | None:
    """``text`` as an E.164 number (``+14155550100``) if ``phonenumbers`` finds it a valid
    international number, else ``None``."""
    import phonenumbers

    try:
        parsed = phonenumbers.parse(text.strip(), None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def read_callees(path: str | Path) -> tuple[list[CalleeRow], list[str]]:
    """The callees of a CSV file with a header row that has a ``number`` column.
    Returns ``(callees, problems)``: a row whose number is not valid E.164, or repeats
    an earlier row's, is left out and named in ``problems``.

    Raises:
        ValueError: no ``number`` column.
        OSError: the file cannot be read.
    """
    callees, problems, seen = [], [], set()
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "number" not in [n.strip() for n in reader.fieldnames]:
            raise ValueError(f"{path}: the header needs a 'number' column")
        for i, raw in enumerate(reader, start=1):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            number = e164(row.get("number", ""))
            if number is None:
                problems.append(f"row {i}: {row.get('number', '')!r} is not a valid E.164 number")
                continue
            if number in seen:
                problems.append(f"row {i}: {number} repeats an earlier row")
                continue
            seen.add(number)
            callees.append(CalleeRow(i, number, {k: v for k, v in row.items() if k and k != "number"}))
    return callees, problems


def read_dnc_file(path: str | Path | None) -> set[str]:
    """The numbers of a do-not-call file: one a line, ``#`` starts a comment; numbers
    are normalized to E.164 where they parse.

    Raises:
        OSError: the file cannot be read.
    """
    if not path:
        return set()
    numbers = set()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            numbers.add(e164(text) or text)
    return numbers


# ---------------------------------------------------------------- windows


def time_zones(number: str) -> list[ZoneInfo]:
    """The time zones of an E.164 number (``phonenumbers.timezone``); UTC when unknown."""
    import phonenumbers
    from phonenumbers import timezone as pn_timezone

    try:
        names = pn_timezone.time_zones_for_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        names = ()
    zones = []
    for name in names:
        try:
            zones.append(ZoneInfo(name))
        except (KeyError, ValueError, OSError):
            continue
    return zones or [ZoneInfo("UTC")]


def _hhmm(text: str) -> tuple[int, int]:
    h, m = text.split(":")
    return int(h), int(m)


def window_open(zones: list[ZoneInfo], now: datetime, settings: CampaignSettings) -> bool:
    """Whether ``now`` (aware) is inside the calling window in every one of ``zones``."""
    start, end = _hhmm(settings.window_start), _hhmm(settings.window_end)
    for zone in zones:
        local = now.astimezone(zone)
        if local.isoweekday() not in settings.window_days or not (start <= (local.hour, local.minute) < end):
            return False
    return True


def next_window(zones: list[ZoneInfo], now: datetime, settings: CampaignSettings) -> datetime:
    """The first moment at or after ``now`` when :func:`window_open` holds (searched in
    5-minute steps over 8 days; ``now`` + 1 day if none)."""
    t = now
    for _ in range(8 * 24 * 12):
        if window_open(zones, t, settings):
            return t
        t = (t + timedelta(minutes=5)).replace(second=0, microsecond=0)
        t -= timedelta(minutes=t.minute % 5)
    return now + timedelta(days=1)


# ---------------------------------------------------------------- the store


class CampaignStore:
    """A campaign's state in the records database (``campaigns``, ``campaign_callees``,
    ``dnc``). Blocking: run its methods in a thread from the event loop.

    Args:
        engine: an SQLAlchemy engine on ``storage.url`` with the schema upgraded.
        name: the campaign's name.
    """

    def __init__(self, engine, name: str) -> None:
        self.engine = engine
        self.name = name

    def load(self, source: str, callees: list[CalleeRow], now: datetime) -> dict:
        """Create the campaign with ``callees``, or resume it: rows not there yet are
        added; callees left ``dialing`` by a crash are closed (never dialed again).
        Returns ``{"created": bool, "added": n, "interrupted": n}``."""
        with Session(self.engine) as session, session.begin():
            campaign = session.get(Campaign, self.name)
            created = campaign is None
            if created:
                session.add(Campaign(name=self.name, source=source, state="running", created_at=now, updated_at=now))
                session.flush()
            else:
                campaign.state, campaign.updated_at = "running", now
            known = set(session.scalars(select(CampaignCallee.number).where(CampaignCallee.campaign == self.name)))
            added = 0
            for c in callees:
                if c.number not in known:
                    session.add(CampaignCallee(campaign=self.name, row=c.row, number=c.number, variables=c.variables, status="pending",
                                               attempts=0, updated_at=now))
                    added += 1
            interrupted = 0
            for callee in session.scalars(select(CampaignCallee).where(CampaignCallee.campaign == self.name, CampaignCallee.status == "dialing")):
                call = session.get(Call, callee.last_call_id) if callee.last_call_id else None
                callee.status, callee.updated_at = "done", now
                callee.outcome = call.outcome if call is not None and call.outcome else "failed"
                callee.last_result = "interrupted: the process stopped during this call; not dialed again"
                interrupted += 1
            return {"created": created, "added": added, "interrupted": interrupted}

    def due(self, now: datetime, limit: int) -> list[CampaignCallee]:
        """Pending callees whose time has come, in file order (detached copies)."""
        with Session(self.engine, expire_on_commit=False) as session:
            rows = session.scalars(
                select(CampaignCallee).where(CampaignCallee.campaign == self.name, CampaignCallee.status == "pending",
                                             (CampaignCallee.next_at.is_(None)) | (CampaignCallee.next_at <= now))
                .order_by(CampaignCallee.next_at.is_not(None), CampaignCallee.next_at, CampaignCallee.row).limit(limit)
            ).all()
            session.expunge_all()
            return list(rows)

    def remaining(self) -> int:
        """Callees not done yet (pending or dialing)."""
        with Session(self.engine) as session:
            return session.scalar(select(func.count()).select_from(CampaignCallee).where(
                CampaignCallee.campaign == self.name, CampaignCallee.status != "done")) or 0

    def is_dnc(self, number: str) -> bool:
        """Whether the ``dnc`` table holds ``number``."""
        with Session(self.engine) as session:
            return session.get(DoNotCall, number) is not None

    def dialing(self, callee_id: int, now: datetime) -> int:
        """Mark a callee ``dialing`` before its INVITE goes out; returns its attempt number."""
        with Session(self.engine) as session, session.begin():
            callee = session.get(CampaignCallee, callee_id)
            callee.status, callee.attempts, callee.updated_at, callee.last_call_id = "dialing", callee.attempts + 1, now, None
            return callee.attempts

    def sent(self, callee_id: int, call_id: str) -> None:
        """The INVITE of the callee's attempt went out with ``call_id``."""
        with Session(self.engine) as session, session.begin():
            session.get(CampaignCallee, callee_id).last_call_id = call_id

    def finish(self, callee_id: int, outcome: str, result: str, now: datetime) -> None:
        """The callee is done with ``outcome``."""
        with Session(self.engine) as session, session.begin():
            callee = session.get(CampaignCallee, callee_id)
            callee.status, callee.outcome, callee.last_result, callee.updated_at = "done", outcome, result[:64], now

    def later(self, callee_id: int, at: datetime, result: str, now: datetime) -> None:
        """Dial the callee again at ``at`` (a retry, or the window was closed)."""
        with Session(self.engine) as session, session.begin():
            callee = session.get(CampaignCallee, callee_id)
            callee.status, callee.next_at, callee.last_result, callee.updated_at = "pending", at, result[:64], now

    def set_state(self, state: str, now: datetime) -> None:
        """``running``, ``stopped`` or ``done``."""
        with Session(self.engine) as session, session.begin():
            campaign = session.get(Campaign, self.name)
            if campaign is not None:
                campaign.state, campaign.updated_at = state, now

    def status(self) -> dict | None:
        """The campaign's progress: state, callees by status and by outcome, attempts; ``None``: no such campaign."""
        with Session(self.engine) as session:
            campaign = session.get(Campaign, self.name)
            if campaign is None:
                return None
            by_status = dict(session.execute(select(CampaignCallee.status, func.count()).where(CampaignCallee.campaign == self.name)
                                             .group_by(CampaignCallee.status)).all())
            by_outcome = dict(session.execute(select(CampaignCallee.outcome, func.count()).where(
                CampaignCallee.campaign == self.name, CampaignCallee.outcome.is_not(None)).group_by(CampaignCallee.outcome)).all())
            attempts = session.scalar(select(func.coalesce(func.sum(CampaignCallee.attempts), 0)).where(CampaignCallee.campaign == self.name))
            total = sum(by_status.values())
            return {
                "name": campaign.name, "state": campaign.state, "source": campaign.source, "callees": total,
                "done": by_status.get("done", 0), "pending": by_status.get("pending", 0), "dialing": by_status.get("dialing", 0),
                "attempts": int(attempts or 0), "outcomes": {o: by_outcome.get(o, 0) for o in OUTCOMES if by_outcome.get(o)},
                "created_at": _iso(campaign.created_at), "updated_at": _iso(campaign.updated_at),
            }

    def callees(self) -> list[dict]:
        """Every callee of the campaign, in file order."""
        with Session(self.engine) as session:
            rows = session.scalars(select(CampaignCallee).where(CampaignCallee.campaign == self.name).order_by(CampaignCallee.row)).all()
            return [{"row": c.row, "number": c.number, "status": c.status, "outcome": c.outcome, "attempts": c.attempts,
                     "last_result": c.last_result, "call_id": c.last_call_id, "next_at": _iso(c.next_at)}
                    for c in rows]


def all_campaigns(engine) -> list[str]:
    """The names of every campaign, newest first."""
    with Session(engine) as session:
        return list(session.scalars(select(Campaign.name).order_by(Campaign.created_at.desc())))


# ---------------------------------------------------------------- the runner


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

    def __init__(self, server, store: CampaignStore, settings: CampaignSettings, dnc: set[str] | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.server = server
        self.store = store
        self.settings = settings
        self.dnc = dnc or set()
        self.clock = clock
        self.in_flight: dict[int, str] = {}  # callee id -> number
        self.stopping = False
        self.dials = 0
        self._last_dial = -1e9
        self._writes: set[asyncio.Task] = set()
        self._zones: dict[str, list[ZoneInfo]] = {}

    def stop(self) -> None:
        """No new dials; :meth:`run` returns once the calls in progress ended."""
        if not self.stopping:
            log.info("campaign %s: stopping: no new dials, %d call(s) in progress finish", self.store.name, len(self.in_flight))
        self.stopping = True

    async def run(self) -> str:
        """Dial until every callee is done (returns ``done``) or :meth:`stop` (``stopped``)."""
        s = self.settings
        while True:
            if self.stopping:
                break
            if len(self.in_flight) < s.max_concurrent and time.monotonic() - self._last_dial >= 1.0 / s.cps:
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
                self._count("dnc")
                return True
            zones = self._zones.setdefault(callee.number, time_zones(callee.number))
            if not window_open(zones, now, self.settings):
                at = next_window(zones, now, self.settings)
                await asyncio.to_thread(self.store.later, callee.id, at, "outside the calling window", now)
                log.info("campaign %s: %s is outside its calling window until %s", self.store.name, callee.number, at.isoformat())
                continue
            await self._dial(callee, now)
            return True
        return False

    async def _dial(self, callee: CampaignCallee, now: datetime) -> None:
        from .dialing import DialOptions

        attempt = await asyncio.to_thread(self.store.dialing, callee.id, now)  # committed before the INVITE goes out
        self.in_flight[callee.id] = callee.number
        self._last_dial = time.monotonic()
        self.dials += 1
        options = DialOptions(amd=self.settings.amd, variables=dict(callee.variables or {}), campaign=self.store.name,
                              on_outcome=lambda outcome, status, c=callee, a=attempt: self._outcome(c, a, outcome, status),
                              ring_timeout_s=self.settings.ring_timeout_s)
        try:
            call_id = await self.server.dial(callee.number, options=options)
        except (ValueError, OSError) as exc:
            log.warning("campaign %s: cannot dial %s: %s", self.store.name, callee.number, exc)
            self._outcome(callee, attempt, "failed", None, str(exc))
            return
        log.info("campaign %s: dialing %s (row %d, attempt %d): call %s", self.store.name, callee.number, callee.row, attempt, call_id)
        self._write(self.store.sent, callee.id, call_id)

    def _outcome(self, callee: CampaignCallee, attempt: int, outcome: str, status: int | None, detail: str = "") -> None:
        """A call of the campaign ended (from the SIP side, on the loop)."""
        now = self.clock()
        result = f"{outcome} {status}" if status else (detail or outcome)
        if outcome in RETRY_OUTCOMES and attempt < self.settings.max_attempts:
            at = now + timedelta(seconds=self.settings.retry_delay_s * self.settings.retry_backoff ** (attempt - 1))
            log.info("campaign %s: %s: %s (attempt %d of %d); again at %s", self.store.name, callee.number, result, attempt,
                     self.settings.max_attempts, at.isoformat())
            self._write(self.store.later, callee.id, at, result, now)
        else:
            log.info("campaign %s: %s: %s after %d attempt(s)", self.store.name, callee.number, outcome, attempt)
            self._write(self.store.finish, callee.id, outcome, result, now)
        self._count(outcome)
        self.in_flight.pop(callee.id, None)

    def _write(self, fn, *args) -> None:
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(fn, *args))
        self._writes.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task) -> None:
        self._writes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("campaign %s: saving state failed: %s", self.store.name, task.exception())

    def _count(self, outcome: str) -> None:
        metrics = getattr(self.server, "metrics", None)
        if metrics is not None and outcome == "dnc":
            metrics.outbound_outcomes.labels(outcome).inc()
