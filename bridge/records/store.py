"""The record store: call records written off the event loop, spooled to disk when the
database cannot take them, replayed when it can.

The conversation and the legs hand small events to :meth:`RecordStore.submit` (a
queue put: it never blocks the loop or the media path). One writer thread applies
them in order, one transaction each, so a turn is durable as soon as it ends. When a
write fails (database down, slow past its timeout, disk full on SQLite), that event
and every later one go to an append-only JSON-lines spool under
``storage.spool_dir`` (order is kept); the writer replays the spool every
``RETRY_S`` seconds until the database answers again. Every event is idempotent
(upsert by ``call_id``, insert-if-absent by ``(call_id, seq)``), so a replay cut
half way can be repeated. Nothing is dropped silently: each outcome is counted in
``bridge_records_writes_total{result}``.

At start, calls that this node (``storage.node``) left open, because the process
was killed in the middle of them, are closed with end reason ``crashed``; their
turns are kept.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from .schema import Call, Turn

log = logging.getLogger("bridge.records")

#: Seconds between attempts to reach the database while events wait in the spool.
RETRY_S = 2.0
#: Seconds a PostgreSQL connection attempt may take before the event is spooled.
CONNECT_TIMEOUT_S = 5
#: Events the writer may lag behind by (about an hour of 100 busy calls); beyond it the
#: writer thread is stuck, and further events are counted as ``lost`` and logged.
QUEUE_MAX = 100_000
_CALL_FIELDS = {c.key for c in Call.__table__.columns}
_TURN_FIELDS = {c.key for c in Turn.__table__.columns} - {"id", "call_id"}
_TIMES = {"invited_at", "answered_at", "ended_at", "started_at"}


def utcnow() -> datetime:
    """The current time, UTC, timezone-aware (what every record time is)."""
    return datetime.now(UTC)


def database_url(url: str) -> str:
    """``storage.url`` with the driver this project ships: ``postgresql://`` becomes
    ``postgresql+psycopg://`` (psycopg 3); others are used as given.

    Raises:
        sqlalchemy.exc.ArgumentError: not an SQLAlchemy URL.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def create_db_engine(url: str) -> Engine:
    """An SQLAlchemy engine for ``storage.url``.

    SQLite: the file's folder is created, and the database runs in WAL mode
    (readers such as ``bridge calls`` never block the writer) with a 5 s busy
    timeout. PostgreSQL: connections time out after ``CONNECT_TIMEOUT_S``.
    """
    full = database_url(url)
    parsed = make_url(full)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(full, connect_args={"check_same_thread": False, "timeout": 5})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")  # WAL: a killed process loses nothing committed
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    args = {"connect_timeout": CONNECT_TIMEOUT_S} if parsed.get_backend_name() == "postgresql" else {}
    return create_engine(full, connect_args=args, pool_pre_ping=True)


def upgrade(engine: Engine) -> None:
    """Create the schema or bring it to the newest Alembic revision.

    On PostgreSQL an advisory lock serializes nodes that start together.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database cannot be reached or refused DDL.
    """
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(4711240901)"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def default_node(sip_listen: str) -> str:
    """``hostname:port`` of the SIP listener: what ``storage.node`` defaults to, so
    that two nodes on one host (``scripts/run_cluster.sh``) never close each other's calls."""
    return f"{socket.gethostname()}:{sip_listen.rsplit(':', 1)[-1]}"


def _away(exc: Exception) -> bool:
    """Whether ``exc`` says the database cannot be reached (spool and retry), not that
    it refused the event (count and skip)."""
    return isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


def _decode(fields: dict) -> dict:
    return {k: (datetime.fromisoformat(v) if k in _TIMES and isinstance(v, str) else v) for k, v in fields.items()}


def _encode(fields: dict) -> dict:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in fields.items()}


def apply_event(session: Session, ev: dict) -> None:
    """Apply one event (idempotent) in ``session``; the caller commits.

    Events: ``{"op": "call", "call_id", "fields"}`` creates the call or updates the
    given fields; ``{"op": "turn", "call_id", "fields"}`` inserts turn
    ``fields["seq"]`` unless it is there.

    Raises:
        ValueError: an unknown op or field.
    """
    op, call_id, fields = ev["op"], ev["call_id"], _decode(ev.get("fields", {}))
    if op == "call":
        unknown = set(fields) - _CALL_FIELDS
        if unknown:
            raise ValueError(f"unknown call fields {sorted(unknown)}")
        call = session.get(Call, call_id)
        if call is None:
            fields.setdefault("invited_at", utcnow())
            fields.setdefault("leg", "sip")
            session.add(Call(call_id=call_id, **{"node": "", "srtp": False, "dtmf": "", **fields}))
        else:
            for key, value in fields.items():
                setattr(call, key, value)
    elif op == "turn":
        unknown = set(fields) - _TURN_FIELDS
        if unknown:
            raise ValueError(f"unknown turn fields {sorted(unknown)}")
        exists = session.scalar(select(Turn.id).where(Turn.call_id == call_id, Turn.seq == fields["seq"]))
        if exists is None:
            session.add(
                Turn(
                    call_id=call_id,
                    **{"agent_text": "", "barged_in": False, "latencies": {}, "dtmf": "", "tools": [], **fields},
                )
            )
    else:
        raise ValueError(f"unknown record event {op!r}")


def close_crashed(engine: Engine, node: str, before: datetime) -> list[str]:
    """Close the calls ``node`` left open that were invited ``before`` this process
    started (end reason ``crashed``, ended at their last turn's end or, without turns,
    at the INVITE): the database may answer only after this process has taken calls,
    and those are alive. Returns the closed call ids."""
    with Session(engine) as session, session.begin():
        calls = session.scalars(
            select(Call).where(Call.node == node, Call.ended_at.is_(None), Call.invited_at < before)
        ).all()
        for call in calls:
            last = session.scalar(select(func.max(Turn.ended_at)).where(Turn.call_id == call.call_id))
            call.ended_at = last or call.invited_at
            call.end_reason = "crashed"
        return [c.call_id for c in calls]


class RecordStore:
    """Durable call records on ``storage.url``, written by one worker thread.

    Args:
        url: an SQLAlchemy URL (``sqlite:///data/bridge.db``, ``postgresql://user@host/db``).
        spool_dir: where events wait (``records-<node>.jsonl``) while the database is away.
        node: this process's name in ``calls.node`` (:func:`default_node`).
        metrics: a :class:`bridge.observability.metrics.Metrics` or ``None``.
    """

    def __init__(self, url: str, spool_dir: str | Path, node: str, metrics=None) -> None:
        self.url = url
        self.node = node
        self.metrics = metrics
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in node)
        self.spool_path = Path(spool_dir) / f"records-{safe}.jsonl"
        self.engine = create_db_engine(url)
        self._queue: queue.Queue = queue.Queue(QUEUE_MAX)
        self._overflowed = False
        self._ready = False
        self._spooled = self._count_spooled()
        self._thread: threading.Thread | None = None
        self._last_error = ""
        #: When this store was made: open calls invited before it were left by a crash.
        self.started_at = utcnow()
        self.crashed: list[str] = []

    # ------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Create or upgrade the schema, replay the spool, close crashed calls, start the
        writer. Blocking (call it from a thread); an unreachable database is logged
        once and retried by the writer, never raised."""
        self._connect()
        self._thread = threading.Thread(target=self._run, name="records-writer", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (or spool it), then stop the writer. Blocking."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None
        self.engine.dispose()

    def submit(self, op: str, call_id: str, **fields) -> None:
        """Queue one event for the writer; returns at once (safe on the event loop). A
        full queue (the writer stuck for ``QUEUE_MAX`` events) counts the event as ``lost``."""
        try:
            self._queue.put_nowait({"op": op, "call_id": call_id, "fields": _encode(fields)})
        except queue.Full:
            if not self._overflowed:
                log.error(
                    "records: the writer is %d events behind; records are being lost (call %s)", QUEUE_MAX, call_id
                )
                self._overflowed = True
            self._count("lost")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event queued so far is written or spooled. Blocking."""
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    @property
    def spooled(self) -> int:
        """Events waiting in the spool file."""
        return self._spooled

    # ------------------------------------------------------------ the writer

    def _connect(self) -> bool:
        try:
            upgrade(self.engine)
            self._replay()
            self.crashed = close_crashed(self.engine, self.node, self.started_at)
        except (SQLAlchemyError, OSError) as exc:
            self._failed("connect", exc)
            return False
        if self.crashed:
            log.warning(
                "records: %d call(s) left open by a crash closed as crashed: %s",
                len(self.crashed),
                ", ".join(self.crashed[:10]),
            )
        if not self._ready:
            log.info("records: %s ready (node %s)", self.engine.url.render_as_string(hide_password=True), self.node)
        self._ready = True
        self._last_error = ""
        return True

    def _run(self) -> None:
        while True:
            try:
                ev = self._queue.get(timeout=RETRY_S)
            except queue.Empty:
                if not self._ready or self._spooled:
                    self._connect() if not self._ready else self._try_replay()
                continue
            if ev is None:
                return
            if isinstance(ev, threading.Event):
                ev.set()
                continue
            self._write(ev)

    def _write(self, ev: dict) -> None:
        if self._ready and self._spooled:
            self._try_replay()
        if not self._ready or self._spooled:
            self._spool(ev)
            return
        try:
            with Session(self.engine) as session, session.begin():
                apply_event(session, ev)
        except (ValueError, DBAPIError) as exc:
            if _away(exc):
                self._failed("write", exc)  # the database is away: spool, retry later
                self._ready = False
                self._spool(ev)
                return
            # The database refused this event (a constraint, a value): retrying cannot help.
            log.error("records: event for call %s refused: %s", ev.get("call_id"), str(exc).splitlines()[0][:200])
            self._count("failed")
            return
        except SQLAlchemyError as exc:
            self._failed("write", exc)
            self._ready = False
            self._spool(ev)
            return
        self._count("written")

    def _spool(self, ev: dict) -> None:
        try:
            self.spool_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.spool_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(ev) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            log.error(
                "records: event for call %s lost: database unavailable and spool %s not writable: %s",
                ev.get("call_id"),
                self.spool_path,
                exc,
            )
            self._count("lost")
            return
        self._spooled += 1
        self._count("spooled")

    def _try_replay(self) -> None:
        try:
            self._replay()
        except SQLAlchemyError as exc:
            self._failed("replay", exc)
            self._ready = False

    def _replay(self) -> None:
        """Apply the spool in order, one transaction; then remove it."""
        if not self.spool_path.exists():
            self._spooled = 0
            return
        lines = [line for line in self.spool_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                log.error("records: unreadable spool line skipped (%d bytes): a write was cut", len(line))
                self._count("lost")
        with Session(self.engine) as session, session.begin():
            for ev in events:
                try:
                    with session.begin_nested():
                        apply_event(session, ev)
                        session.flush()
                except (ValueError, DBAPIError) as exc:
                    if _away(exc):
                        raise  # away again: keep the spool, retry later
                    log.error(
                        "records: spooled event for call %s refused: %s",
                        ev.get("call_id"),
                        str(exc).splitlines()[0][:200],
                    )
                    self._count("failed")
        self.spool_path.unlink()
        self._spooled = 0
        if events:
            log.info("records: %d spooled event(s) written", len(events))
            self._count("replayed", len(events))

    def _count_spooled(self) -> int:
        try:
            with open(self.spool_path, encoding="utf-8") as f:
                return sum(1 for line in f if line.strip())
        except OSError:
            return 0

    def _failed(self, what: str, exc: Exception) -> None:
        message = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        if message != self._last_error:  # once per distinct failure, not per event
            log.warning(
                "records: %s failed, events go to %s until the database answers: %s", what, self.spool_path, message
            )
            self._last_error = message
        self._count(f"error_{what}")

    def _count(self, result: str, n: int = 1) -> None:
        """Count an outcome and refresh the spool gauge (call after ``_spooled`` changed)."""
        if self.metrics is not None:
            self.metrics.records.labels(result).inc(n)
            self.metrics.records_spooled.set(self._spooled)
