"""Retention: recordings and call records past their configured age are deleted.

A call's age counts from its end (its INVITE when it never ended). Only ended calls
are touched, never one in progress. ``recording.retention_days`` deletes the
recording file and clears ``calls.recording_path``, keeping the record;
``records.retention_days`` deletes the record, its turns and its recording. ``0``
keeps forever. ``bridge serve`` runs :func:`purge` at start and every
``records.purge_interval_s``; ``bridge calls purge [--dry-run]`` runs it on demand.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from .schema import Call, Turn

log = logging.getLogger("bridge.records")


@dataclass
class PurgeReport:
    """What a purge deleted (or, dry, would delete): call ids and recording paths."""

    records: list[str] = field(default_factory=list)
    recordings: list[str] = field(default_factory=list)
    missing_files: int = 0
    dry_run: bool = False

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return f"{verb} {len(self.records)} call record(s) and {len(self.recordings)} recording(s)" + (
            f" ({self.missing_files} recording file(s) already gone)" if self.missing_files else ""
        )


def purge(
    engine: Engine, records_days: float, recording_days: float, now: datetime | None = None, dry_run: bool = False
) -> PurgeReport:
    """Delete what is older than its retention (see the module doc).

    Args:
        engine: the records database.
        records_days: ``records.retention_days`` (0 = keep).
        recording_days: ``recording.retention_days`` (0 = keep).
        now: the reference time (UTC; default now).
        dry_run: report only.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database failed (nothing is half-deleted:
            one transaction; files are removed after it commits).
    """
    now = now or datetime.now(UTC)
    report = PurgeReport(dry_run=dry_run)
    age = func.coalesce(Call.ended_at, Call.invited_at)
    files: list[str] = []
    with Session(engine) as session, session.begin():
        if records_days > 0:
            cutoff = now - timedelta(days=records_days)
            old = session.execute(
                select(Call.call_id, Call.recording_path).where(Call.ended_at.is_not(None), age < cutoff)
            ).all()
            report.records = [call_id for call_id, _ in old]
            files += [path for _, path in old if path]
            if old and not dry_run:
                for chunk in range(0, len(report.records), 500):
                    ids = report.records[chunk : chunk + 500]
                    session.execute(delete(Turn).where(Turn.call_id.in_(ids)))
                    session.execute(delete(Call).where(Call.call_id.in_(ids)))
        if recording_days > 0:
            cutoff = now - timedelta(days=recording_days)
            query = select(Call).where(Call.ended_at.is_not(None), Call.recording_path.is_not(None), age < cutoff)
            if report.records:
                query = query.where(Call.call_id.not_in(report.records))
            for call in session.scalars(query).all():
                files.append(call.recording_path)
                if not dry_run:
                    call.recording_path = None
    report.recordings = files
    if not dry_run:
        for path in files:
            try:
                os.remove(path)
            except FileNotFoundError:
                report.missing_files += 1
            except OSError as exc:
                log.warning("retention: cannot delete %s: %s", path, exc)
    if report.records or report.recordings:
        log.info("retention: %s", report.summary())
    return report
