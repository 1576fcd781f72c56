"""Campaigns: many outbound calls, paced, in the callee's daytime, retried, never twice.

``bridge campaign run FILE.csv --name NAME`` loads one callee per row (a ``number``
column in E.164, checked with ``phonenumbers``; every other column is a variable for
the greeting, the voicemail message and the persona) into the records database
(:class:`CampaignStore`, this module) and dials them
(:class:`bridge.calls.campaign_runner.CampaignRunner`):

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

The campaign's rooms: the input (:mod:`.callees`), the calling windows
(:mod:`.windows`, pure), the state in the records database (:class:`CampaignStore`,
here) and the runner that dials through the call layer
(:mod:`bridge.calls.campaign_runner`, one injected clock).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..records.schema import Call, Campaign, CampaignCallee, DoNotCall
from .callees import CalleeRow

log = logging.getLogger("bridge.campaign")

OUTCOMES = ("human", "voicemail_left", "machine_no_beep", "no_answer", "busy", "failed", "dnc")
#: Outcomes that are dialed again while attempts remain.
RETRY_OUTCOMES = ("busy", "no_answer", "failed")


def utcnow() -> datetime:
    """The current time, UTC, timezone-aware."""
    return datetime.now(UTC)


def _iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC (SQLite hands stored times back without their zone; they are UTC)."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


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
                    session.add(
                        CampaignCallee(
                            campaign=self.name,
                            row=c.row,
                            number=c.number,
                            variables=c.variables,
                            status="pending",
                            attempts=0,
                            updated_at=now,
                        )
                    )
                    added += 1
            interrupted = 0
            for callee in session.scalars(
                select(CampaignCallee).where(CampaignCallee.campaign == self.name, CampaignCallee.status == "dialing")
            ):
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
                select(CampaignCallee)
                .where(
                    CampaignCallee.campaign == self.name,
                    CampaignCallee.status == "pending",
                    (CampaignCallee.next_at.is_(None)) | (CampaignCallee.next_at <= now),
                )
                .order_by(CampaignCallee.next_at.is_not(None), CampaignCallee.next_at, CampaignCallee.row)
                .limit(limit)
            ).all()
            session.expunge_all()
            return list(rows)

    def remaining(self) -> int:
        """Callees not done yet (pending or dialing)."""
        with Session(self.engine) as session:
            return (
                session.scalar(
                    select(func.count())
                    .select_from(CampaignCallee)
                    .where(CampaignCallee.campaign == self.name, CampaignCallee.status != "done")
                )
                or 0
            )

    def is_dnc(self, number: str) -> bool:
        """Whether the ``dnc`` table holds ``number``."""
        with Session(self.engine) as session:
            return session.get(DoNotCall, number) is not None

    def mark_dialing(self, callee_id: int, now: datetime) -> int:
        """Mark a callee ``dialing`` before its INVITE goes out; returns its attempt number."""
        with Session(self.engine) as session, session.begin():
            callee = session.get(CampaignCallee, callee_id)
            callee.status, callee.attempts, callee.updated_at, callee.last_call_id = (
                "dialing",
                callee.attempts + 1,
                now,
                None,
            )
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
            by_status = dict(
                session.execute(
                    select(CampaignCallee.status, func.count())
                    .where(CampaignCallee.campaign == self.name)
                    .group_by(CampaignCallee.status)
                ).all()
            )
            by_outcome = dict(
                session.execute(
                    select(CampaignCallee.outcome, func.count())
                    .where(CampaignCallee.campaign == self.name, CampaignCallee.outcome.is_not(None))
                    .group_by(CampaignCallee.outcome)
                ).all()
            )
            attempts = session.scalar(
                select(func.coalesce(func.sum(CampaignCallee.attempts), 0)).where(CampaignCallee.campaign == self.name)
            )
            total = sum(by_status.values())
            return {
                "name": campaign.name,
                "state": campaign.state,
                "source": campaign.source,
                "callees": total,
                "done": by_status.get("done", 0),
                "pending": by_status.get("pending", 0),
                "dialing": by_status.get("dialing", 0),
                "attempts": int(attempts or 0),
                "outcomes": {o: by_outcome.get(o, 0) for o in OUTCOMES if by_outcome.get(o)},
                "created_at": _iso(campaign.created_at),
                "updated_at": _iso(campaign.updated_at),
            }

    def callees(self) -> list[dict]:
        """Every callee of the campaign, in file order."""
        with Session(self.engine) as session:
            rows = session.scalars(
                select(CampaignCallee).where(CampaignCallee.campaign == self.name).order_by(CampaignCallee.row)
            ).all()
            return [
                {
                    "row": c.row,
                    "number": c.number,
                    "status": c.status,
                    "outcome": c.outcome,
                    "attempts": c.attempts,
                    "last_result": c.last_result,
                    "call_id": c.last_call_id,
                    "next_at": _iso(c.next_at),
                }
                for c in rows
            ]


def all_campaigns(engine) -> list[str]:
    """The names of every campaign, newest first."""
    with Session(engine) as session:
        return list(session.scalars(select(Campaign.name).order_by(Campaign.created_at.desc())))
