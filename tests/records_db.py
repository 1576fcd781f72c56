"""Reading the call records a test's server wrote (any SQLAlchemy URL)."""

from __future__ import annotations

import time

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from bridge.records.schema import Call, Turn
from bridge.records.store import database_url


def load(url: str) -> tuple[dict[str, Call], dict[str, list[Turn]]]:
    """Every call by id, and every call's turns in order (detached from the session)."""
    engine = create_engine(database_url(url))
    with Session(engine) as session:
        calls = {c.call_id: c for c in session.scalars(select(Call)).all()}
        turns: dict[str, list[Turn]] = {}
        for t in session.scalars(select(Turn).order_by(Turn.seq)).all():
            turns.setdefault(t.call_id, []).append(t)
        session.expunge_all()
    engine.dispose()
    return calls, turns


def wait_for(predicate, timeout: float):
    """Poll ``predicate`` every 0.3 s until it returns something true, at most ``timeout`` s; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    return predicate()
