"""``bridge calls list|show|export|purge``: the operator's view of the call records.

They read the same configuration and database as ``bridge serve`` and work while it
runs (SQLite in WAL mode lets readers and the writer go on together; PostgreSQL is a
server). They never create the schema: an empty or missing database says so.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import UTC, datetime

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session, selectinload

from ..config import load_settings
from ..runtime import setup_logging
from .retention import purge
from .schema import Call
from .store import create_db_engine

CSV_FIELDS = [
    "call_id",
    "leg",
    "node",
    "call_sid",
    "account_sid",
    "caller",
    "called",
    "route",
    "codec",
    "transport",
    "srtp",
    "invited_at",
    "answered_at",
    "ended_at",
    "end_reason",
    "transfer_target",
    "transfer_outcome",
    "dtmf",
    "recording_path",
    "amd_verdict",
    "amd_reason",
    "amd_seconds",
    "outcome",
    "campaign",
    "turns",
]


class NoRecords(Exception):
    """Records are off, or the database holds no call records yet."""


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # SQLite returns UTC without the zone
    return value.isoformat(timespec="milliseconds")


def call_dict(call: Call, with_turns: bool = False) -> dict:
    """A call record as JSON-ready data (times ISO 8601 UTC; ``turns`` with ``with_turns``)."""
    out = {key: getattr(call, key) for key in CSV_FIELDS if key != "turns"}
    for key in ("invited_at", "answered_at", "ended_at"):
        out[key] = _iso(out[key])
    if with_turns:
        out["turns"] = [
            {
                "seq": t.seq,
                "started_at": _iso(t.started_at),
                "ended_at": _iso(t.ended_at),
                "caller": t.caller_text,
                "agent": t.agent_text,
                "barged_in": t.barged_in,
                "endpoint_rule": t.endpoint_rule,
                "latencies": t.latencies,
                "dtmf": t.dtmf,
                "tools": t.tools,
            }
            for t in call.turns
        ]
    return out


def _engine(settings):
    if not settings.storage.url:
        raise NoRecords("call records are off (storage.url is empty)")
    engine = create_db_engine(settings.storage.url)
    if "calls" not in inspect(engine).get_table_names():
        raise NoRecords(
            f"no call records in {engine.url.render_as_string(hide_password=True)} (has bridge serve run with this configuration?)"
        )
    return engine


def _between(query, since: str | None, until: str | None):
    """``query`` limited to calls invited at or after ``since`` and before ``until`` (ISO 8601)."""
    start, end = _since(since), _since(until)
    if start:
        query = query.where(Call.invited_at >= start)
    if end:
        query = query.where(Call.invited_at < end)
    return query


def _since(text: str | None) -> datetime | None:
    if not text:
        return None
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def query_calls(
    engine, since: str | None = None, limit: int = 50, number: str | None = None, until: str | None = None
) -> list[dict]:
    """The newest calls first, without turns (:func:`call_dict`), from ``engine``.

    Args:
        since, until: ISO 8601 times (UTC when no zone is given) bounding the INVITE.
        number: only calls from or to this number.

    Raises:
        ValueError: a time that is not ISO 8601.
    """
    query = select(Call).order_by(Call.invited_at.desc()).limit(limit)
    query = _between(query, since, until)
    if number:
        query = query.where((Call.caller == number) | (Call.called == number))
    with Session(engine) as session:
        return [call_dict(c) for c in session.scalars(query).all()]


def load_call(engine, call_id: str) -> dict | None:
    """One call with its turns (:func:`call_dict`), or ``None``."""
    with Session(engine) as session:
        call = session.scalars(select(Call).options(selectinload(Call.turns)).where(Call.call_id == call_id)).first()
        return call_dict(call, with_turns=True) if call is not None else None


def list_calls(
    settings, since: str | None = None, limit: int = 50, number: str | None = None, until: str | None = None
) -> list[dict]:
    """:func:`query_calls` on the configured database. Raises :class:`NoRecords`, ``ValueError``."""
    engine = _engine(settings)
    try:
        return query_calls(engine, since, limit, number, until)
    finally:
        engine.dispose()


def show_call(settings, call_id: str) -> dict | None:
    """:func:`load_call` on the configured database. Raises :class:`NoRecords`."""
    engine = _engine(settings)
    try:
        return load_call(engine, call_id)
    finally:
        engine.dispose()


def _duration(call: dict) -> str:
    if not call["answered_at"] or not call["ended_at"]:
        return "-"
    return f"{(datetime.fromisoformat(call['ended_at']) - datetime.fromisoformat(call['answered_at'])).total_seconds():.0f}s"


def _print_list(calls: list[dict]) -> None:
    print(f"{'invited (UTC)':24} {'call id':36} {'leg':12} {'from':16} {'to':16} {'length':>6}  {'outcome':15} end")
    for c in calls:
        print(
            f"{(c['invited_at'] or '')[:23]:24} {c['call_id'][:36]:36} {c['leg']:12} {(c['caller'] or '-')[:16]:16} {(c['called'] or '-')[:16]:16} "
            f"{_duration(c):>6}  {(c.get('outcome') or '-'):15} {c['end_reason'] or 'in progress'}"
        )


def _print_call(call: dict) -> None:
    print(
        f"call {call['call_id']} ({call['leg']}, {call['transport'] or '-'}, {call['codec'] or '-'}{', SRTP' if call['srtp'] else ''})"
    )
    print(
        f"  from {call['caller'] or '-'} to {call['called'] or '-'}"
        + (f", CallSid {call['call_sid']}" if call["call_sid"] else "")
    )
    print(
        f"  invited {call['invited_at']}, answered {call['answered_at'] or '-'}, ended {call['ended_at'] or '-'} ({call['end_reason'] or 'in progress'})"
    )
    if call["transfer_target"]:
        print(f"  transfer to {call['transfer_target']}: {call['transfer_outcome']}")
    print(f"  recording: {call['recording_path'] or '-'}")
    if call.get("amd_verdict") or call.get("outcome"):
        amd = (
            f"{call['amd_verdict']} ({call['amd_reason']}) after {call['amd_seconds']} s"
            if call.get("amd_verdict")
            else "not detected"
        )
        print(
            f"  outbound: answered by {amd}; outcome {call.get('outcome') or '-'}"
            + (f"; campaign {call['campaign']}" if call.get("campaign") else "")
        )
    for t in call["turns"]:
        lat = t["latencies"] or {}
        timing = f"  [voice-to-voice {lat['first_packet']:.2f} s]" if "first_packet" in lat else ""
        if t["caller"] is not None:
            print(f"  {t['started_at'][11:23]} caller: {t['caller']}")
        print(f"  {t['started_at'][11:23]} agent:  {t['agent']}{' (interrupted)' if t['barged_in'] else ''}{timing}")
        if t["dtmf"] or t["tools"]:
            print(
                f"               {'dtmf ' + t['dtmf'] if t['dtmf'] else ''}{' tools ' + ','.join(t['tools']) if t['tools'] else ''}"
            )


def run(settings, args) -> int:
    """Dispatch ``bridge calls ACTION`` (:func:`add_parser`). Exit status:
    0, 1 for an unknown call id, 2 for no records."""
    try:
        if args.action == "list":
            calls = list_calls(settings, args.since, args.limit, args.number, args.until)
            if args.json:
                print(json.dumps(calls, indent=1))
            else:
                _print_list(calls)
        elif args.action == "show":
            if not args.call_id:
                print("bridge calls show: CALL_ID is required", file=sys.stderr)
                return 2
            call = show_call(settings, args.call_id)
            if call is None:
                print(f"bridge calls show: no call {args.call_id!r}", file=sys.stderr)
                return 1
            print(json.dumps(call, indent=1)) if args.json else _print_call(call)
        elif args.action == "export":
            export(settings, args.format, args.since, args.until)
        elif args.action == "purge":
            report = purge(
                _engine(settings),
                settings.records.retention_days,
                settings.recording.retention_days,
                dry_run=args.dry_run,
            )
            print(report.summary())
            for call_id in report.records:
                print(f"  record {call_id}")
            for path in report.recordings:
                print(f"  recording {path}")
    except NoRecords as exc:
        print(f"bridge calls: {exc}", file=sys.stderr)
        return 2
    return 0


def export(settings, fmt: str, since: str | None = None, until: str | None = None, out=None) -> int:
    """Every call (oldest first) to ``out`` (stdout): ``jsonl`` one call with its turns
    per line, or ``csv`` one call per row with its turns as JSON. Returns the count."""
    out = out or sys.stdout
    engine = _engine(settings)
    query = select(Call).options(selectinload(Call.turns)).order_by(Call.invited_at)
    query = _between(query, since, until)
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    count = 0
    with Session(engine) as session:
        for call in session.scalars(query).yield_per(200):
            data = call_dict(call, with_turns=True)
            if writer is not None:
                writer.writerow({**data, "turns": json.dumps(data["turns"])})
            else:
                out.write(json.dumps(data) + "\n")
            count += 1
    engine.dispose()
    return count


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``calls`` sub-command on the ``bridge`` parser."""
    calls = sub.add_parser(
        "calls", help="call records: list, show CALL_ID, export, purge (same config and database as serve)"
    )
    calls.add_argument("action", choices=["list", "show", "export", "purge"])
    calls.add_argument("call_id", nargs="?", help="show: the call id (SIP Call-ID or Twilio CallSid)")
    calls.add_argument("--config", help="YAML merged over config/default.yaml")
    calls.add_argument(
        "--since", metavar="ISO", help="list/export: calls invited at or after this time (UTC unless a zone is given)"
    )
    calls.add_argument("--until", metavar="ISO", help="list/export: calls invited before this time")
    calls.add_argument("--number", help="list: calls from or to this number")
    calls.add_argument("--limit", type=int, default=50, help="list: at most N calls, newest first (default 50)")
    calls.add_argument("--json", action="store_true", help="list/show: JSON")
    calls.add_argument("--format", choices=["jsonl", "csv"], default="jsonl", help="export: jsonl (default) or csv")
    calls.add_argument("--dry-run", action="store_true", help="purge: say what would be deleted, delete nothing")
    calls.set_defaults(func=_calls)
    return calls


def _calls(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    setup_logging("WARNING")
    return run(settings, args)
