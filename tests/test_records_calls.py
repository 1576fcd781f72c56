"""Call records from real calls on ``bridge serve`` with the embedded models, on SQLite
and on a real PostgreSQL: a SIP call (bridge's own SIP client) and a Media Streams
call leave a record whose turns hold the caller's words and the agent's reply; a
``kill -9`` in the middle of a call, then a restart, leaves that call ``crashed``
with its finished turns."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import urllib.request
import wave

import av
import numpy as np
import pytest

from bridge.client import place_call, read_wav_8k

from .conftest import TEST_CONFIG, BridgeProcess, free_port
from .postgres import PostgresServer, new_database
from .records_db import load
from .twilio_ms import TwilioStream
from .waiting import eventually

pytestmark = pytest.mark.e2e

TOKEN = "recordstoken"
PUBLIC = "https://bridge.example.test"
CALLED = "+14155550100"


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/records.db"
    else:
        url = new_database(request.getfixturevalue("postgres"))
    return {"url": url, "spool_dir": str(tmp_path / "spool"), "node": "node-test"}


def server_with(tmp_path, storage: dict, **extra) -> BridgeProcess:
    http = free_port(socket.SOCK_STREAM)
    config = {
        **TEST_CONFIG,
        "storage": storage,
        "agent": {"reprompt_after_s": 0},
        "mediastreams": {"http_listen": f"127.0.0.1:{http}", "public_url": PUBLIC, "auth_token": TOKEN},
        **extra,
    }
    server = BridgeProcess(tmp_path, config)
    server.http_port = http
    server.start()
    return server


def stereo(path: str) -> tuple[np.ndarray, int, str]:
    """A recording's samples (N x 2), rate and codec, read back with PyAV."""
    with av.open(path) as container:
        stream = container.streams.audio[0]
        assert stream.channels == 2, f"{path}: {stream.channels} channel(s)"
        samples = np.concatenate([f.to_ndarray().reshape(-1, 2) for f in container.decode(stream)])
        return samples, stream.rate, stream.codec_context.name


def rms_per_second(channel: np.ndarray) -> list[int]:
    return [
        int(np.sqrt(np.mean(channel[i : i + 8000].astype(np.float64) ** 2)))
        for i in range(0, len(channel) - 7999, 8000)
    ]


def test_calls_on_both_legs_leave_records_with_their_turns(tmp_path, speech, storage):
    server = server_with(
        tmp_path, storage, recording={"enabled": True, "dir": str(tmp_path / "recordings"), "format": "wav"}
    )
    try:
        report = asyncio.run(
            place_call(f"sip:{CALLED}@127.0.0.1:{server.sip_port}", [speech["saturday"]], None, reply_timeout=20)
        )
        assert report.answered and report.latencies, "the SIP call got no reply"
        twilio = TwilioStream(
            f"ws://127.0.0.1:{server.http_port}/media-stream",
            TOKEN,
            "wss://bridge.example.test/media-stream",
            call_sid="CA" + "7" * 32,
            latency=0.0,
        )
        asyncio.run(
            twilio.run(
                [(5.0, read_wav_8k(speech["saturday"]))], duration=14.0, custom={"From": "+14155550123", "To": CALLED}
            )
        )
        assert twilio.close_code == 1000
        calls = eventually(
            lambda: (lambda c: c if len(c) == 2 and all(x.ended_at for x in c.values()) else None)(
                load(storage["url"])[0]
            ),
            20,
        )
        assert calls, f"two ended calls expected: {load(storage['url'])[0]}"
        _, turns = load(storage["url"])
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log_text()
    sip = next(c for c in calls.values() if c.leg == "sip")
    ms = calls["CA" + "7" * 32]
    assert (sip.called, sip.codec, sip.transport, sip.srtp, sip.node) == (CALLED, "PCMU", "UDP", False, "node-test")
    assert sip.answered_at is not None and sip.end_reason == "caller_hangup"
    assert (ms.leg, ms.caller, ms.called, ms.call_sid, ms.account_sid) == (
        "mediastreams",
        "+14155550123",
        CALLED,
        "CA" + "7" * 32,
        "AC" + "3" * 32,
    )
    assert ms.end_reason == "caller_hangup"
    for call in (sip, ms):
        said = turns[call.call_id]
        assert said[0].caller_text is None and said[0].agent_text.startswith("Hello"), "the greeting is the first turn"
        answered = [t for t in said if t.caller_text and "saturday" in t.caller_text.lower()]
        assert answered, [(t.caller_text, t.agent_text) for t in said]
        turn = answered[0]
        assert turn.agent_text and not turn.barged_in
        assert {"endpoint", "asr_final", "first_packet"} <= set(turn.latencies), turn.latencies
        assert 0 < turn.latencies["first_packet"] < 10
        assert [t.seq for t in said] == list(range(len(said)))
        # The recording: stereo 8 kHz, as long as the call, the agent's greeting on the
        # right while the caller is quiet, the caller's question on the left.
        assert call.recording_path and call.recording_path.startswith(str(tmp_path / "recordings"))
        samples, rate, codec = stereo(call.recording_path)
        assert (rate, codec) == (8000, "pcm_s16le")
        length = (call.ended_at - call.answered_at).total_seconds()
        assert abs(len(samples) / 8000 - length) < 1.5, (len(samples) / 8000, length)
        left, right = rms_per_second(samples[:, 0]), rms_per_second(samples[:, 1])
        assert right[0] > 300 and left[0] < 100, (left[:4], right[:4])
        assert max(left) > 300, left


def test_a_killed_server_leaves_the_call_crashed_with_its_finished_turns(tmp_path, speech):
    """On SQLite (on PostgreSQL, crash recovery is tested in test_records_store.py)."""
    storage = {"url": f"sqlite:///{tmp_path}/records.db", "spool_dir": str(tmp_path / "spool"), "node": "node-test"}
    server = server_with(tmp_path, storage)
    call = None
    try:

        async def call_and_kill():
            task = asyncio.ensure_future(
                place_call(
                    f"sip:{CALLED}@127.0.0.1:{server.sip_port}",
                    [speech["saturday"]],
                    None,
                    duration=60,
                    reply_timeout=20,
                )
            )

            def answered_turn():
                calls, turns = load(storage["url"])
                return next((cid for cid, ts in turns.items() if any(t.caller_text for t in ts)), None)

            found = await asyncio.to_thread(eventually, answered_turn, 60)
            os.kill(server.proc.pid, signal.SIGKILL)
            server.proc.wait(10)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return found

        call = asyncio.run(call_and_kill())
        assert call, "no turn with the caller's words was recorded during the call"
        calls, _ = load(storage["url"])
        assert calls[call].ended_at is None, "the call was closed although the server was killed"
    finally:
        if server.proc.poll() is None:
            server.stop()
    restarted = server_with(tmp_path, storage)
    try:
        assert restarted.wait_for_log("closed as crashed", 30), restarted.log_text()[-2000:]
        calls, turns = load(storage["url"])
    finally:
        assert restarted.stop() == 0
    assert calls[call].end_reason == "crashed" and calls[call].ended_at is not None
    assert any(t.caller_text and "saturday" in t.caller_text.lower() and t.agent_text for t in turns[call])


def test_a_spoken_card_number_is_masked_in_the_record_and_the_log(tmp_path, engines):
    """``privacy.redact: [card]``: the caller reads a card number (Piper, through G.711
    on a real SIP call); the stored transcript and every log line show ``[card]``."""
    from bridge.evaluation.voices import voice

    pcm = voice("piper", engines.tts)("My card number is 4111 1111 1111 1111.")
    clip = tmp_path / "card.wav"
    with wave.open(str(clip), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(pcm.astype("<i2").tobytes())
    storage = {"url": f"sqlite:///{tmp_path}/records.db", "spool_dir": str(tmp_path / "spool"), "node": "node-redact"}
    server = server_with(tmp_path, storage, privacy={"redact": ["card"]}, observability={"log_level": "DEBUG"})
    try:
        report = asyncio.run(place_call(f"sip:{CALLED}@127.0.0.1:{server.sip_port}", [clip], None, reply_timeout=20))
        assert report.answered
        turns = eventually(lambda: [t for ts in load(storage["url"])[1].values() for t in ts if t.caller_text], 20)
    finally:
        assert server.stop() == 0
    said = " ".join(t.caller_text for t in turns)
    assert "[card]" in said and not re.search(r"\d{3}", said), said
    log_text = server.log_text()
    # Interim passes log partial numbers at DEBUG: no run of 8 or more digits may show.
    runs = [
        m.group(0)
        for m in re.finditer(r"\d[\d ,.-]*\d", log_text)
        if len(re.sub(r"\D", "", m.group(0))) >= 8 and "1111" in m.group(0)
    ]
    assert "[card]" in log_text and not runs, runs[:5]


def metric(server: BridgeProcess, name: str, labels: str = "") -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([\d.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_calls_go_on_while_the_database_is_down_and_their_records_arrive_later(tmp_path, speech):
    """PostgreSQL is down when serve starts and during a call: the call is answered and
    gets its reply, its records wait in the spool (counted in /metrics); once the
    database is up, serve creates the schema and writes them, in order."""
    pg = PostgresServer(free_port(socket.SOCK_STREAM))  # initialized, not started
    storage = {"url": pg.url, "spool_dir": str(tmp_path / "spool"), "node": "node-outage"}
    server = server_with(tmp_path, storage)
    try:
        report = asyncio.run(
            place_call(f"sip:{CALLED}@127.0.0.1:{server.sip_port}", [speech["saturday"]], None, reply_timeout=20)
        )
        assert report.answered and report.latencies, "the call suffered from the database outage"
        assert eventually(lambda: metric(server, "bridge_records_spooled") >= 4, 15), "the records were not spooled"
        assert metric(server, "bridge_records_writes_total", '{result="spooled"}') >= 4
        pg.start()
        assert eventually(lambda: metric(server, "bridge_records_spooled") == 0, 30), "the spool was not replayed"
        calls, turns = load(pg.url)
    finally:
        assert server.stop() == 0
        pg.remove()
    (call,) = calls.values()
    assert call.end_reason == "caller_hangup" and call.answered_at is not None
    assert any(t.caller_text and "saturday" in t.caller_text.lower() and t.agent_text for t in turns[call.call_id])
    log = server.log_text()
    assert log.count("records: connect failed") == 1, "the outage is logged once, not per event"


def test_a_drained_call_is_recorded_to_its_end(tmp_path, speech):
    """SIGTERM while a call is up: at the drain deadline the call gets a BYE, its record
    ends as ``drained``, and its recording is a complete, readable stereo file."""
    storage = {"url": f"sqlite:///{tmp_path}/records.db", "spool_dir": str(tmp_path / "spool"), "node": "node-drain"}
    server = server_with(
        tmp_path,
        storage,
        recording={"enabled": True, "dir": str(tmp_path / "recordings"), "format": "flac"},
        sip={**TEST_CONFIG["sip"], "drain_timeout": 3},
    )

    async def call_then_drain():
        task = asyncio.ensure_future(
            place_call(
                f"sip:{CALLED}@127.0.0.1:{server.sip_port}", [speech["saturday"]], None, duration=60, reply_timeout=20
            )
        )
        await asyncio.to_thread(
            eventually, lambda: any(t.caller_text for ts in load(storage["url"])[1].values() for t in ts), 40
        )
        server.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(task, 30)

    try:
        report = asyncio.run(call_then_drain())
        assert report.answered
        assert server.proc.wait(30) == 0
    finally:
        server.stop()
    (call,) = load(storage["url"])[0].values()
    assert call.end_reason == "drained", call.end_reason
    samples, rate, codec = stereo(call.recording_path)
    assert (rate, codec) == (8000, "flac") and call.recording_path.endswith(".flac")
    assert abs(len(samples) / 8000 - (call.ended_at - call.answered_at).total_seconds()) < 1.5
