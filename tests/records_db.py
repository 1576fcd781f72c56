"""Reading the call records a test's server wrote (any SQLAlchemy URL)."""

from __future__ import annotations

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
