"""Outbound calls with answering-machine detection, end to end: the bridge dials a
scripted trunk (tests/answering_uas.py) on 127.0.0.1 that answers over real RTP with a
person's "Hello?", a voicemail greeting and its beep, or a greeting and no beep; the
real models listen. Asserted: the agent never speaks before the person finished their
greeting or before the beep, it does speak after, the voicemail message is heard and
the bridge hangs up, and the verdict and outcome reach the call record and /metrics."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import numpy as np
import pytest
import yaml
from prometheus_client import generate_latest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.calls.dialing import DialOptions
from bridge.config import load_settings
from bridge.evaluation.voices import voice
from bridge.records.schema import Call
from bridge.records.store import create_db_engine
from bridge.server import BridgeServer

from .answering_uas import Answer, AnsweringUas
from .conftest import ROOT, free_port, rtp_range

pytestmark = pytest.mark.e2e

LEAD = np.zeros(3200, np.int16)  # 0.4 s before the callee speaks


def said(engines, text: str, name: str = "piper") -> np.ndarray:
    """``text`` in a caller voice through G.711, cut after its last voiced frame (so that
    the end of the array is the end of the speech, as the figures count it)."""
    from bridge.client import last_voiced_frame

    pcm = voice(name, engines.tts, deterministic=True)(text)
    return pcm[: (last_voiced_frame(pcm) + 1) * 160]


def beep(hz: float, ms: int) -> np.ndarray:
    return (7000 * np.sin(2 * np.pi * hz * np.arange(ms * 8) / 8000)).astype(np.int16)


def outbound_settings(uas_port: int, tmp_path, **outbound):
    return load_settings(
        overrides={
            "sip": {"listen": f"127.0.0.1:{free_port()}"},
            "media": {"rtp_ports": rtp_range(4)},
            "models": {"cache_dir": str(ROOT / "models")},
            "storage": {"url": f"sqlite:///{tmp_path}/records.db", "spool_dir": str(tmp_path / "spool")},
            "observability": {"metrics_listen": ""},
            "outbound": {"termination_uri": f"sip:127.0.0.1:{uas_port}", "amd": {"enabled": True}, **outbound},
        }
    )


async def dial_one(engines, tmp_path, pcm: np.ndarray, hold_s: float, **outbound):
    uas = AnsweringUas(lambda number: Answer(pcm=pcm, hold_s=hold_s))
    await uas.start()
    server = BridgeServer(outbound_settings(uas.port, tmp_path, **outbound), engines)
    await server.start()
    outcomes = []
    try:
        await server.dial(
            "+14155550100",
            options=DialOptions(amd=True, variables={"name": "Dana"}, on_outcome=lambda o, s: outcomes.append(o)),
        )
        for _ in range(600):
            if uas.calls and next(iter(uas.calls.values())).ended.is_set():
                break
            await asyncio.sleep(0.1)
        await server.wait_idle()
        metrics = generate_latest(server.metrics.registry).decode()
    finally:
        await server.stop()
        uas.close()
    with Session(create_db_engine(f"sqlite:///{tmp_path}/records.db")) as session:
        record = session.scalars(select(Call)).one()
        record = {c: getattr(record, c) for c in ("amd_verdict", "amd_reason", "amd_seconds", "outcome", "end_reason")}
    return next(iter(uas.calls.values())), record, metrics, outcomes


async def test_a_person_who_says_hello_hears_the_agent_only_after_their_greeting(engines, tmp_path):
    hello = said(engines, "Hello?", "espeak")
    pcm = np.concatenate([LEAD, hello])
    greeting_end = len(pcm) / 8000
    call, record, metrics, outcomes = await dial_one(
        engines, tmp_path, pcm, hold_s=4.0, greeting="Hi {name}, this is the dental office calling."
    )
    sound = call.agent_audio_times()
    assert sound, "the agent never spoke to the person"
    assert sound[0] >= greeting_end, (
        f"the agent spoke at {sound[0]:.2f} s, inside the callee's greeting (ends {greeting_end:.2f} s)"
    )
    print(f"person: greeting end -> agent audio {sound[0] - greeting_end:.2f} s")
    heard = engines.asr.transcribe(call.agent_pcm()).lower()
    assert "dana" in heard or "dental" in heard, heard  # the outbound greeting with the callee's variable
    assert record["amd_verdict"] == "human" and record["outcome"] == "human" and outcomes == ["human"], record
    assert 'bridge_amd_verdicts_total{reason="short greeting",verdict="human"} 1.0' in metrics
    assert 'bridge_outbound_outcomes_total{outcome="human"} 1.0' in metrics


async def test_a_voicemail_gets_the_message_after_its_beep_and_never_before_it(engines, tmp_path):
    greeting = said(engines, "Hi, you've reached Sam. I can't take your call right now, please leave a message.")
    pcm = np.concatenate([LEAD, greeting, np.zeros(4000, np.int16), beep(1000, 500)])
    beep_end = len(pcm) / 8000
    call, record, metrics, outcomes = await dial_one(
        engines,
        tmp_path,
        pcm,
        hold_s=15.0,
        voicemail_message="Hello {name}, this is the dental office. Please call us back about your appointment.",
    )
    sound = call.agent_audio_times()
    assert sound, "no message was left"
    assert sound[0] >= beep_end, f"the agent spoke at {sound[0]:.2f} s, before the beep ended at {beep_end:.2f} s"
    print(f"voicemail: beep end -> message {sound[0] - beep_end:.2f} s")
    heard = engines.asr.transcribe(call.agent_pcm()).lower()
    assert "call us back" in heard or "appointment" in heard, heard
    assert call.bye_from_bridge, "the bridge must hang up once the message was played"
    assert (
        record["amd_verdict"] == "machine" and record["outcome"] == "voicemail_left" and outcomes == ["voicemail_left"]
    ), record
    assert 'bridge_voicemail_messages_total{how="beep"} 1.0' in metrics


async def test_a_greeting_without_a_beep_gets_the_message_after_the_silence(engines, tmp_path):
    greeting = said(engines, "This is Olivia, I am not available, leave a message.")
    pcm = np.concatenate([LEAD, greeting])
    greeting_end = len(pcm) / 8000
    call, record, metrics, outcomes = await dial_one(
        engines,
        tmp_path,
        pcm,
        hold_s=15.0,
        amd={"enabled": True, "no_beep_silence_s": 2.0},
        voicemail_message="Please call us back.",
    )
    sound = call.agent_audio_times()
    # The detector's speech ends at its last frame loud enough to be speech: the fading
    # last syllable may be a few frames earlier than the voice's last voiced frame.
    assert sound and sound[0] >= greeting_end + 2.0 - 0.2, (sound[:1], greeting_end)
    assert record["outcome"] == "machine_no_beep" and call.bye_from_bridge, record
    assert 'bridge_voicemail_messages_total{how="silence"} 1.0' in metrics


def test_bridge_dial_amd_reports_the_outcome(tmp_path, engines):
    """The command line: ``bridge dial --amd`` against the scripted trunk in a thread of its own."""
    greeting = said(engines, "You have reached the voicemail of Alex. Leave a message after the tone.")
    pcm = np.concatenate([LEAD, greeting, np.zeros(3200, np.int16), beep(800, 300)])

    async def scenario():
        uas = AnsweringUas(lambda number: Answer(pcm=pcm, hold_s=15.0))
        await uas.start()
        config = tmp_path / "dial.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "outbound": {
                        "termination_uri": f"sip:127.0.0.1:{uas.port}",
                        "voicemail_message": "Please call us back.",
                    },
                    "models": {"cache_dir": str(ROOT / "models")},
                }
            )
        )
        try:
            return await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "bridge",
                    "dial",
                    "+14155550100",
                    "--amd",
                    "--config",
                    str(config),
                    "--sip-listen",
                    f"127.0.0.1:{free_port()}",
                    "--rtp-ports",
                    rtp_range(2),
                    "--metrics-listen",
                    f"127.0.0.1:{free_port(socket.SOCK_STREAM)}",
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=180,
            )
        finally:
            uas.close()

    result = asyncio.run(scenario())
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "call ended: voicemail_left" in result.stdout, result.stdout + result.stderr[-3000:]
    assert "answered by machine" in result.stderr, result.stderr[-3000:]
