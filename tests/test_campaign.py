"""Campaigns: the callee file, calling windows on an injected clock, outcomes of failed
dials, and whole campaigns against the scripted trunk (tests/answering_uas.py) on
127.0.0.1: pacing measured on the trunk's side, retries of busy and of a 503, a
callee on the do-not-call list, ringing until the ring timeout, a ``kill -9`` mid-campaign
and a resume that calls nobody twice, and SIGTERM letting calls in progress finish."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.calls.campaign_runner import CampaignRunner
from bridge.calls.dialing import failure_outcome
from bridge.config import CampaignSettings, load_settings
from bridge.outbound.callees import read_callees, read_dnc_file
from bridge.outbound.campaign import CampaignStore
from bridge.outbound.windows import next_window, time_zones, window_open
from bridge.records.schema import Call, CampaignCallee
from bridge.records.store import create_db_engine, upgrade
from bridge.server import BridgeServer

from .answering_uas import Answer, AnsweringUas
from .conftest import ROOT, free_port, rtp_range

UTC = UTC


# ------------------------------------------------------------------ fast: no calls


def test_callees_are_checked_as_e164_and_variables_kept(tmp_path):
    path = tmp_path / "callees.csv"
    path.write_text(
        "number,name,when\n+14155550101,Dana,Tuesday\n4155550102,Sam,Monday\n+1 415 555 0103,Ann,Friday\n+14155550101,Dup,x\n"
    )
    callees, problems = read_callees(path)
    assert [c.number for c in callees] == ["+14155550101", "+14155550103"]
    assert callees[0].variables == {"name": "Dana", "when": "Tuesday"} and callees[1].row == 3
    assert any("row 2" in p for p in problems) and any("row 4" in p and "repeats" in p for p in problems)
    (tmp_path / "bad.csv").write_text("phone,name\n+14155550101,x\n")
    with pytest.raises(ValueError, match="number"):
        read_callees(tmp_path / "bad.csv")


def test_the_do_not_call_file_is_normalized(tmp_path):
    path = tmp_path / "dnc.txt"
    path.write_text("# opted out\n+1 (415) 555-0105\n+14155550106  # asked twice\n\n")
    assert read_dnc_file(path) == {"+14155550105", "+14155550106"}


def test_the_calling_window_is_the_callees_local_daytime():
    s = CampaignSettings(window_start="10:00", window_end="19:00", window_days=[1, 2, 3, 4, 5])
    sf = time_zones("+14155550101")  # San Francisco: America/Los_Angeles
    ny = time_zones("+12125550199")
    wednesday_9am_pst = datetime(2026, 12, 2, 17, 0, tzinfo=UTC)
    assert [str(z) for z in sf] == ["America/Los_Angeles"]
    assert not window_open(sf, wednesday_9am_pst, s) and window_open(ny, wednesday_9am_pst, s)  # noon in New York
    assert next_window(sf, wednesday_9am_pst, s) == datetime(2026, 12, 2, 18, 0, tzinfo=UTC)
    friday_7pm_pst = datetime(2026, 12, 5, 3, 0, tzinfo=UTC)
    assert next_window(sf, friday_7pm_pst, s) == datetime(
        2026, 12, 7, 18, 0, tzinfo=UTC
    )  # Monday 10:00, the weekend skipped
    london = time_zones("+442071234567")
    assert window_open(london, datetime(2026, 12, 2, 12, 0, tzinfo=UTC), s)


def test_failed_dials_map_to_outcomes():
    assert failure_outcome("rejected", 486) == "busy"
    assert failure_outcome("rejected", 480) == "no_answer"
    assert failure_outcome("cancelled", None) == "no_answer"
    assert failure_outcome("timeout", 408) == "no_answer"
    assert failure_outcome("rejected", 503) == "failed"
    assert failure_outcome("rejected", 404) == "failed"


# ------------------------------------------------------------------ whole campaigns


def hello(engines) -> np.ndarray:
    from bridge.client import last_voiced_frame
    from bridge.evaluation.voices import voice

    pcm = voice("espeak", engines.tts)("Hello?")
    return np.concatenate([np.zeros(3200, np.int16), pcm[: (last_voiced_frame(pcm) + 1) * 160]])


def voicemail(engines) -> np.ndarray:
    from bridge.evaluation.voices import voice

    pcm = voice("piper", engines.tts, deterministic=True)(
        "Hi, you've reached Lee. Please leave a message after the tone."
    )
    tone = (7000 * np.sin(2 * np.pi * 900 * np.arange(3200) / 8000)).astype(np.int16)
    return np.concatenate([np.zeros(3200, np.int16), pcm, np.zeros(3200, np.int16), tone])


def campaign_settings(uas_port: int, tmp_path, kind: str = "llm", **campaign):
    return load_settings(
        overrides={
            "sip": {"listen": f"127.0.0.1:{free_port()}"},
            "media": {"rtp_ports": rtp_range(6)},
            "agent": {"kind": kind},
            "models": {"cache_dir": str(ROOT / "models")},
            "observability": {"metrics_listen": ""},
            "storage": {"url": f"sqlite:///{tmp_path}/records.db", "spool_dir": str(tmp_path / "spool")},
            "outbound": {
                "termination_uri": f"sip:127.0.0.1:{uas_port}",
                "voicemail_message": "Hello {name}, please call us back.",
                "campaign": {
                    "cps": 2.0,
                    "max_concurrent": 2,
                    "retry_delay_s": 0.5,
                    "retry_backoff": 1.0,
                    "max_attempts": 2,
                    "ring_timeout_s": 2.0,
                    **campaign,
                },
            },
        }
    )


def store_for(tmp_path, name: str) -> CampaignStore:
    engine = create_db_engine(f"sqlite:///{tmp_path}/records.db")
    upgrade(engine)
    return CampaignStore(engine, name)


@pytest.mark.e2e
async def test_a_campaign_paces_retries_and_ends_every_callee_with_its_outcome(engines, tmp_path):
    person, machine = hello(engines), voicemail(engines)
    seen: dict[str, int] = {}

    def script(number: str) -> Answer:
        n = seen[number] = seen.get(number, 0) + 1
        return {
            "+14155550101": Answer(pcm=person, hold_s=3.0),
            "+14155550102": Answer(pcm=machine, hold_s=12.0),
            "+14155550103": Answer(reject=486) if n == 1 else Answer(pcm=person, hold_s=3.0),
            "+14155550104": Answer(reject=503) if n == 1 else Answer(pcm=machine, hold_s=12.0),
            "+14155550106": Answer(ring=True),
        }.get(number, Answer(reject=404))

    uas = AnsweringUas(script)
    await uas.start()
    (tmp_path / "c.csv").write_text("number,name\n" + "".join(f"+1415555010{i},Callee{i}\n" for i in range(1, 7)))
    (tmp_path / "dnc.txt").write_text("+14155550105\n")
    settings = campaign_settings(uas.port, tmp_path)
    callees, _ = read_callees(tmp_path / "c.csv")
    store = store_for(tmp_path, "spring")
    now = datetime(2026, 12, 2, 19, 0, tzinfo=UTC)  # Wednesday 11:00 in San Francisco
    store.load(str(tmp_path / "c.csv"), callees, now)
    server = BridgeServer(settings, engines)
    await server.start()
    try:
        t0 = time.monotonic()
        runner = CampaignRunner(
            server,
            store,
            settings.outbound.campaign,
            read_dnc_file(tmp_path / "dnc.txt"),
            clock=lambda: now + timedelta(seconds=time.monotonic() - t0),
        )
        state = await asyncio.wait_for(runner.run(), 240)
        await server.wait_idle()
    finally:
        await server.stop()
        uas.close()
    assert state == "done"
    outcomes = {c["number"]: (c["outcome"], c["attempts"]) for c in store.callees()}
    assert outcomes == {
        "+14155550101": ("human", 1),
        "+14155550102": ("voicemail_left", 1),
        "+14155550103": ("human", 2),
        "+14155550104": ("voicemail_left", 2),
        "+14155550105": ("dnc", 0),
        "+14155550106": ("no_answer", 2),
    }, outcomes
    assert "+14155550105" not in seen  # never dialed
    invites = sorted(c.invited for c in uas.calls.values())
    gaps = np.diff(invites)
    assert gaps.min() >= 0.5 * 0.9, f"INVITEs {gaps.min():.3f} s apart at cps 2"
    spans = [(c.invited, c.ended_at) for c in uas.calls.values()]
    assert max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans) <= 2, "more than max_concurrent calls at once"
    status = store.status()
    assert status["state"] == "done" and status["outcomes"] == {
        "human": 2,
        "voicemail_left": 2,
        "no_answer": 1,
        "dnc": 1,
    }
    with Session(store.engine) as session:
        records = session.scalars(select(Call).where(Call.campaign == "spring")).all()
        assert sorted(r.outcome for r in records) == sorted(
            ["human", "voicemail_left", "busy", "human", "failed", "voicemail_left", "no_answer", "no_answer"]
        )


@pytest.mark.e2e
async def test_nobody_is_called_outside_their_window_until_the_clock_reaches_it(tmp_path):
    uas = AnsweringUas(lambda number: Answer(pcm=np.zeros(1600, np.int16), hold_s=0.5))
    await uas.start()
    settings = campaign_settings(uas.port, tmp_path, kind="echo", amd=False)
    store = store_for(tmp_path, "night")
    clock = {"now": datetime(2026, 12, 2, 11, 0, tzinfo=UTC)}  # 03:00 in San Francisco, 06:00 in New York
    store.load("-", read_callees_from(tmp_path, ["+14155550101", "+12125550199"]), clock["now"])
    server = BridgeServer(settings, None)
    await server.start()
    try:
        runner = CampaignRunner(server, store, settings.outbound.campaign, clock=lambda: clock["now"])
        task = asyncio.ensure_future(runner.run())
        await asyncio.sleep(1.0)
        assert not uas.calls, "dialed in the middle of the night"
        assert {c["number"]: c["next_at"] for c in store.callees()} == {
            "+14155550101": "2026-12-02T18:00:00+00:00",
            "+12125550199": "2026-12-02T15:00:00+00:00",
        }
        clock["now"] = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)  # 10:00 in New York, 07:00 in San Francisco
        await asyncio.sleep(1.5)
        assert [c.number for c in uas.calls.values()] == ["+12125550199"]
        clock["now"] = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)
        assert await asyncio.wait_for(task, 30) == "done"
    finally:
        await server.stop()
        uas.close()
    assert sorted(c.number for c in uas.calls.values()) == ["+12125550199", "+14155550101"]


def read_callees_from(tmp_path, numbers: list[str]):
    path = tmp_path / "callees.csv"
    path.write_text("number\n" + "".join(f"{n}\n" for n in numbers))
    return read_callees(path)[0]


def _campaign_process(tmp_path, uas_port: int, name: str) -> subprocess.Popen:
    config = tmp_path / "campaign.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "agent": {"kind": "echo"},
                "storage": {"url": f"sqlite:///{tmp_path}/records.db", "spool_dir": str(tmp_path / "spool")},
                "outbound": {
                    "termination_uri": f"sip:127.0.0.1:{uas_port}",
                    "campaign": {
                        "cps": 4.0,
                        "max_concurrent": 2,
                        "window_days": [1, 2, 3, 4, 5, 6, 7],
                        "window_start": "00:00",
                        "window_end": "23:59",
                    },
                },
            }
        )
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bridge",
            "campaign",
            "run",
            str(tmp_path / "callees.csv"),
            "--name",
            name,
            "--no-amd",
            "--config",
            str(config),
            "--sip-listen",
            f"127.0.0.1:{free_port()}",
            "--rtp-ports",
            rtp_range(4),
            "--metrics-listen",
            f"127.0.0.1:{free_port(socket.SOCK_STREAM)}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _status(tmp_path, name: str) -> dict:
    config = tmp_path / "campaign.yaml"
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "campaign", "status", name, "--json", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def campaign_dialing(tmp_path, uas: AnsweringUas, name: str, calls: int) -> subprocess.Popen:
    """``bridge campaign run`` started, once the trunk has seen ``calls`` INVITEs (or it exited)."""
    proc = _campaign_process(tmp_path, uas.port, name)
    for _ in range(600):
        if len(uas.calls) >= calls or proc.poll() is not None:
            break
        await asyncio.sleep(0.05)
    assert len(uas.calls) >= calls, proc.communicate()[1][-3000:] if proc.poll() is not None else "no dials"
    return proc


@pytest.mark.e2e
async def test_kill_9_mid_campaign_then_a_resume_calls_nobody_twice(tmp_path):
    numbers = [f"+1415555011{i}" for i in range(6)]
    read_callees_from(tmp_path, numbers)
    uas = AnsweringUas(lambda number: Answer(pcm=np.zeros(800, np.int16), hold_s=4.0))
    await uas.start()
    try:
        first = await campaign_dialing(tmp_path, uas, "k9", 3)
        first.send_signal(signal.SIGKILL)
        first.wait()
        in_progress = [c.number for c in uas.calls.values() if not c.ended.is_set()]
        assert in_progress, "the kill should land while calls are in progress"
        second = _campaign_process(tmp_path, uas.port, "k9")
        out, err = await asyncio.to_thread(second.communicate, timeout=120)
        assert second.returncode == 0, err[-3000:]
    finally:
        uas.close()
    dialed = [c.number for c in uas.calls.values()]
    assert sorted(dialed) == sorted(numbers), f"each callee exactly once: {sorted(dialed)}"
    status = await asyncio.to_thread(_status, tmp_path, "k9")
    assert status["state"] == "done" and status["done"] == 6
    interrupted = {c["number"] for c in status["callees_detail"] if (c["last_result"] or "").startswith("interrupted")}
    assert set(in_progress) <= interrupted <= set(dialed), (interrupted, in_progress)
    assert "campaign k9: done" in out


@pytest.mark.e2e
async def test_sigterm_stops_new_dials_and_lets_calls_in_progress_finish(tmp_path):
    numbers = [f"+1415555012{i}" for i in range(6)]
    read_callees_from(tmp_path, numbers)
    uas = AnsweringUas(lambda number: Answer(pcm=np.zeros(800, np.int16), hold_s=3.0))
    await uas.start()
    try:
        proc = await campaign_dialing(tmp_path, uas, "term", 2)
        proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        out, err = await asyncio.to_thread(proc.communicate, timeout=60)
        assert proc.returncode == 0, err[-3000:]
    finally:
        uas.close()
    calls = list(uas.calls.values())
    assert 2 <= len(calls) < 6
    assert all(not c.bye_from_bridge for c in calls), "a call in progress was cut by the stop"
    assert all(c.invited < stopped for c in calls), "dialed after SIGTERM"
    status = await asyncio.to_thread(_status, tmp_path, "term")
    assert status["state"] == "stopped" and status["done"] == len(calls) and status["pending"] == 6 - len(calls)
    assert "campaign term: stopped" in out


@pytest.mark.e2e
async def test_the_console_shows_each_campaigns_progress_and_outcomes(tmp_path):
    import urllib.error
    import urllib.request

    http = free_port(socket.SOCK_STREAM)
    settings = load_settings(
        overrides={
            "sip": {"listen": f"127.0.0.1:{free_port()}"},
            "media": {"rtp_ports": rtp_range(1)},
            "agent": {"kind": "echo"},
            "observability": {"metrics_listen": ""},
            "console": {"token": "tok-campaigns"},
            "storage": {"url": f"sqlite:///{tmp_path}/records.db", "spool_dir": str(tmp_path / "spool")},
            "mediastreams": {
                "http_listen": f"127.0.0.1:{http}",
                "public_url": "https://bridge.example.test",
                "auth_token": "t",
            },
        }
    )
    server = BridgeServer(settings, None)
    await server.start()
    try:
        store = store_for(tmp_path, "recall-march")
        now = datetime(2026, 12, 2, 19, 0, tzinfo=UTC)
        callees = read_callees_from(tmp_path, ["+14155550131", "+14155550132", "+14155550133"])
        store.load("recall.csv", callees, now)
        with Session(store.engine) as session:
            rows = {c.number: c.id for c in session.scalars(select(CampaignCallee))}
        store.finish(rows["+14155550131"], "voicemail_left", "voicemail_left", now)
        store.finish(rows["+14155550132"], "human", "human", now)

        def get(path: str, token: str | None = "tok-campaigns"):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            try:
                with urllib.request.urlopen(
                    urllib.request.Request(f"http://127.0.0.1:{http}{path}", headers=headers), timeout=10
                ) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, ""

        status, page = await asyncio.to_thread(get, "/campaigns")
        assert status == 200 and "recall-march" in page and 'value="2"' in page and "2 / 3" in page, page[-2000:]
        assert '<td class="outcome-voicemail_left">1</td>' in page and '<td class="outcome-human">1</td>' in page
        status, page = await asyncio.to_thread(get, "/campaigns/recall-march")
        assert status == 200 and "+14155550133" in page and "pending" in page
        assert (await asyncio.to_thread(get, "/campaigns", None))[0] == 401
        assert (await asyncio.to_thread(get, "/campaigns/nope"))[0] == 404
    finally:
        await server.stop()
