"""``bridge calls list|show|export|purge`` as subprocesses on a real SQLite database,
and the retention job inside ``serve``: what has expired is deleted, nothing else."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.records.calls import CallRecords
from bridge.records.schema import Call
from bridge.records.store import RecordStore, create_db_engine, utcnow

from .conftest import ROOT, BridgeProcess
from .postgres import new_database

pytestmark = pytest.mark.slow  # PostgreSQL, subprocesses

DAY = timedelta(days=1)


def seed(tmp_path: Path, url: str | None = None) -> tuple[str, dict[str, Path]]:
    """Calls that ended 40, 10 and 1 day(s) ago, each with a recording file, and one
    invited 50 days ago that never ended (in progress, or crashed unseen)."""
    url = url or f"sqlite:///{tmp_path}/records.db"
    store = RecordStore(url, tmp_path / "spool", "seed")
    store.open()
    records = CallRecords(store, "seed")
    now = utcnow()
    files = {}
    for call_id, age in (("old", 40), ("recent", 10), ("fresh", 1)):
        path = tmp_path / "recordings" / f"{call_id}.wav"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"RIFF")
        files[call_id] = path
        records.started(
            call_id,
            "sip",
            caller="+14155550111",
            called="+14155550100",
            invited_at=now - age * DAY - timedelta(minutes=2),
        )
        records.update(call_id, answered_at=now - age * DAY - timedelta(minutes=2), recording_path=str(path))
        store.submit(
            "turn",
            call_id,
            seq=0,
            started_at=now - age * DAY - timedelta(minutes=2),
            ended_at=now - age * DAY - timedelta(minutes=1),
            caller_text=None,
            agent_text=f"Hello {call_id}.",
            latencies={},
        )
        store.submit(
            "turn",
            call_id,
            seq=1,
            started_at=now - age * DAY - timedelta(minutes=1),
            ended_at=now - age * DAY,
            caller_text="Are you open on Saturday?",
            agent_text="Yes, from nine to two.",
            latencies={"first_packet": 0.8, "endpoint": 0.3},
        )
        store.submit("call", call_id, ended_at=now - age * DAY, end_reason="caller_hangup")
    records.started("open", "sip", invited_at=now - 50 * DAY)
    assert store.flush()
    store.close()
    return url, files


def config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "calls.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "storage": {"url": url, "spool_dir": str(tmp_path / "spool")},
                "records": {"retention_days": 30},
                "recording": {"retention_days": 7},
            }
        )
    )
    return path


def bridge_calls(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("BRIDGE_STORAGE__")}
    return subprocess.run(
        [sys.executable, "-m", "bridge", "calls", *args, "--config", str(cfg)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ids(url: str) -> dict[str, str | None]:
    engine = create_db_engine(url)  # postgresql:// gets the project's driver too
    with Session(engine) as session:
        out = {c.call_id: c.recording_path for c in session.scalars(select(Call)).all()}
    engine.dispose()
    return out


def test_list_show_and_export(tmp_path):
    url, _ = seed(tmp_path)
    cfg = config(tmp_path, url)
    listed = bridge_calls(cfg, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    calls = json.loads(listed.stdout)
    assert [c["call_id"] for c in calls] == ["fresh", "recent", "old", "open"]  # newest first
    since = (utcnow() - 5 * DAY).isoformat()
    assert [c["call_id"] for c in json.loads(bridge_calls(cfg, "list", "--json", "--since", since).stdout)] == ["fresh"]
    table = bridge_calls(cfg, "list")
    assert "fresh" in table.stdout and "caller_hangup" in table.stdout and "in progress" in table.stdout
    shown = bridge_calls(cfg, "show", "fresh")
    assert (
        shown.returncode == 0
        and "caller: Are you open on Saturday?" in shown.stdout
        and "voice-to-voice 0.80 s" in shown.stdout
    ), shown.stdout
    data = json.loads(bridge_calls(cfg, "show", "fresh", "--json").stdout)
    assert [t["agent"] for t in data["turns"]] == ["Hello fresh.", "Yes, from nine to two."] and data[
        "end_reason"
    ] == "caller_hangup"
    missing = bridge_calls(cfg, "show", "nope")
    assert missing.returncode == 1 and "no call 'nope'" in missing.stderr
    lines = bridge_calls(cfg, "export", "--format", "jsonl").stdout.splitlines()
    assert [json.loads(line)["call_id"] for line in lines] == ["open", "old", "recent", "fresh"]  # oldest first
    assert json.loads(lines[-1])["turns"][1]["caller"] == "Are you open on Saturday?"
    rows = list(csv.DictReader(io.StringIO(bridge_calls(cfg, "export", "--format", "csv").stdout)))
    assert [r["call_id"] for r in rows] == ["open", "old", "recent", "fresh"] and json.loads(rows[-1]["turns"])[0][
        "agent"
    ] == "Hello fresh."


def test_no_database_says_so(tmp_path):
    cfg = config(tmp_path, f"sqlite:///{tmp_path}/none.db")
    result = bridge_calls(cfg, "list")
    assert result.returncode == 2 and "no call records" in result.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_purge_deletes_what_expired_and_nothing_else(tmp_path, backend, request):
    url, files = seed(tmp_path, new_database(request.getfixturevalue("postgres")) if backend == "postgresql" else None)
    cfg = config(tmp_path, url)
    dry = bridge_calls(cfg, "purge", "--dry-run")
    assert dry.returncode == 0 and "would delete 1 call record(s) and 2 recording(s)" in dry.stdout, dry.stdout
    assert set(ids(url)) == {"old", "recent", "fresh", "open"} and all(p.exists() for p in files.values())
    done = bridge_calls(cfg, "purge")
    assert done.returncode == 0 and "deleted 1 call record(s) and 2 recording(s)" in done.stdout, done.stdout
    left = ids(url)
    assert set(left) == {"recent", "fresh", "open"}, "only the 40-day-old record goes; the unended call stays"
    assert left["recent"] is None and left["fresh"] == str(files["fresh"])
    assert not files["old"].exists() and not files["recent"].exists() and files["fresh"].exists()
    again = bridge_calls(cfg, "purge")
    assert "deleted 0 call record(s) and 0 recording(s)" in again.stdout


def test_serve_applies_retention_periodically(tmp_path):
    url, files = seed(tmp_path)
    server = BridgeProcess(
        tmp_path,
        {
            "agent": {"kind": "echo"},
            "storage": {"url": url, "spool_dir": str(tmp_path / "spool"), "node": "n"},
            "records": {"retention_days": 30, "purge_interval_s": 1},
            "recording": {"retention_days": 7},
        },
    )
    server.start()
    try:
        deadline = time.monotonic() + 20
        while "old" in ids(url) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = ids(url)
    finally:
        assert server.stop() == 0
    assert set(left) == {"recent", "fresh", "open"} and left["recent"] is None
    assert not files["old"].exists() and files["fresh"].exists()
    assert "retention: deleted 1 call record(s) and 2 recording(s)" in server.log_text()
