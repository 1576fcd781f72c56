"""The record store on a real SQLite file and a real PostgreSQL server: schema by
Alembic, idempotent events, the spool while the database is down, crash recovery."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import create_engine, inspect

from bridge.observability.metrics import Metrics
from bridge.records.calls import CallRecords, end_reason, number_of
from bridge.records.store import RecordStore, database_url, utcnow

from .postgres import new_database
from .records_db import load
from .waiting import eventually


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/records.db"
    return new_database(request.getfixturevalue("postgres"))


def counted(metrics: Metrics, result: str) -> float:
    return metrics.registry.get_sample_value("bridge_records_writes_total", {"result": result}) or 0.0


def test_schema_is_made_by_alembic_and_events_are_idempotent(url, tmp_path):
    metrics = Metrics()
    store = RecordStore(url, tmp_path / "spool", "node-a", metrics)
    store.open()
    records = CallRecords(store, "node-a")
    records.started(
        "c1",
        "sip",
        caller="+14155550111",
        called="+14155550100",
        codec="PCMU",
        transport="UDP",
        srtp=False,
        call_sid="CA" + "1" * 32,
    )
    records.answered("c1")
    t0 = utcnow()
    turn = {
        "seq": 0,
        "started_at": t0,
        "ended_at": t0 + timedelta(seconds=2),
        "caller_text": None,
        "agent_text": "Hello.",
        "latencies": {},
    }
    store.submit("turn", "c1", **turn)
    store.submit("turn", "c1", **turn)  # a replayed event: no second row
    records.ended("c1", "remote_bye")
    assert store.flush()
    store.close()
    tables = set(inspect(create_engine(database_url(url))).get_table_names())
    assert {"calls", "turns", "alembic_version"} <= tables
    calls, turns = load(url)
    c = calls["c1"]
    assert (c.leg, c.node, c.caller, c.called, c.codec, c.end_reason) == (
        "sip",
        "node-a",
        "+14155550111",
        "+14155550100",
        "PCMU",
        "caller_hangup",
    )
    assert c.answered_at is not None and c.ended_at is not None and c.call_sid.startswith("CA")
    assert [(t.seq, t.agent_text) for t in turns["c1"]] == [(0, "Hello.")]
    assert counted(metrics, "written") == 5 and counted(metrics, "spooled") == 0
    # A second start upgrades nothing and closes nothing.
    again = RecordStore(url, tmp_path / "spool", "node-a")
    again.open()
    assert again.crashed == []
    again.close()


def test_open_calls_of_this_node_are_closed_as_crashed_with_their_turns(url, tmp_path):
    store = RecordStore(url, tmp_path / "spool", "node-a")
    store.open()
    t0 = utcnow()
    for call_id, node in (("mine", "node-a"), ("other", "node-b")):
        CallRecords(store, node).started(call_id, "sip", invited_at=t0)
    store.submit(
        "turn", "mine", seq=0, started_at=t0, ended_at=t0 + timedelta(seconds=3), caller_text="Hi", agent_text="Hello."
    )
    assert store.flush()
    store.close()  # as if killed: no end event
    restarted = RecordStore(url, tmp_path / "spool", "node-a")
    restarted.open()
    restarted.close()
    assert restarted.crashed == ["mine"]
    calls, turns = load(url)
    assert calls["mine"].end_reason == "crashed" and calls["mine"].ended_at is not None
    assert calls["other"].end_reason is None, "another node's live call was closed"
    assert [t.caller_text for t in turns["mine"]] == ["Hi"] and "other" not in turns


def test_a_database_outage_spools_to_disk_and_nothing_is_lost(postgres, tmp_path):
    """PostgreSQL stops in the middle of a call: events go to the spool file (counted),
    submit never blocks, and once the server is back they are written in order."""
    metrics = Metrics()
    url = new_database(postgres)
    store = RecordStore(url, tmp_path / "spool", "node-o", metrics)
    store.open()
    records = CallRecords(store, "node-o")
    records.started("outage", "sip", caller="+1555")
    assert store.flush()
    postgres.stop()
    try:
        t0 = utcnow()
        for seq in range(3):
            store.submit(
                "turn", "outage", seq=seq, started_at=t0, ended_at=t0, caller_text=f"q{seq}", agent_text=f"a{seq}"
            )
        records.ended("outage", "remote_bye")
        assert store.flush(30)
        assert store.spooled == 4 and store.spool_path.exists()
        assert counted(metrics, "spooled") == 4 and counted(metrics, "error_write") >= 1
    finally:
        postgres.start()
    assert store.flush()
    assert eventually(lambda: store.spooled == 0, 30), "the spool was not replayed"
    store.close()
    calls, turns = load(url)
    assert calls["outage"].end_reason == "caller_hangup"
    assert [t.caller_text for t in turns["outage"]] == ["q0", "q1", "q2"]
    assert counted(metrics, "replayed") == 4 and not store.spool_path.exists()


def test_end_reasons_and_numbers():
    assert (
        end_reason("remote_bye") == "caller_hangup"
        and end_reason("transferred") == "transfer"
        and end_reason("drained") == "drained"
    )
    assert number_of("sip:+14155550100@bridge.example.com;transport=tcp") == "+14155550100"
    assert number_of('"Alice" <sip:+14155550111@pstn.twilio.com>;tag=1') == "+14155550111"
    assert number_of("+14155550100") == "+14155550100" and number_of("") is None


@pytest.mark.allow_errors
def test_an_event_the_database_refuses_is_counted_and_does_not_block_the_rest(url, tmp_path):
    """A turn for a call the database does not have violates its foreign key: that
    event is refused (counted, logged), not spooled for ever, and the next ones are written."""
    metrics = Metrics()
    store = RecordStore(url, tmp_path / "spool", "node-p", metrics)
    store.open()
    t0 = utcnow()
    store.submit("turn", "ghost", seq=0, started_at=t0, ended_at=t0, caller_text="Hi", agent_text="Hello.")
    CallRecords(store, "node-p").started("real", "sip")
    assert store.flush()
    store.close()
    calls, turns = load(url)
    assert set(calls) == {"real"} and not turns
    assert counted(metrics, "failed") == 1 and counted(metrics, "written") == 1 and counted(metrics, "spooled") == 0
    assert store.spooled == 0
