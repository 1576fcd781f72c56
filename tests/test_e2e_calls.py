"""End to end on 127.0.0.1: real SIP peers (sipp, baresip, ``bridge call``) against ``bridge serve``
running the embedded models. Agent audio is checked by transcribing it with the ASR model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.client import read_wav_8k

from .conftest import ROOT, BridgeProcess, free_port, need, rtp_pair
from .records_db import load
from .waiting import eventually, words

pytestmark = pytest.mark.e2e
SIPP_DIR = ROOT / "tests" / "sipp"


def run_sipp(
    bridge: BridgeProcess, workdir: Path, scenario: list[str], timeout: float = 60
) -> subprocess.CompletedProcess:
    need("sipp")
    cmd = [
        "sipp",
        f"127.0.0.1:{bridge.sip_port}",
        "-s",
        "agent",
        "-i",
        "127.0.0.1",
        "-p",
        str(free_port()),
        "-m",
        "1",
        "-l",
        "1",
        "-nostdin",
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        "-trace_msg",
        "-message_file",
        str(workdir / "messages.log"),
        "-trace_err",
        "-error_file",
        str(workdir / "errors.log"),
        "-mp",
        str(free_port()),
        *scenario,
    ]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout + 30)


def test_sipp_basic_call(bridge, tmp_path):
    """sipp's built-in UAC: INVITE, 100/180/200, ACK, 2 s, BYE, 200."""
    result = run_sipp(bridge, tmp_path, ["-sn", "uac", "-d", "2000"])
    messages = (tmp_path / "messages.log").read_text()
    assert result.returncode == 0, result.stdout[-2000:] + messages[-3000:]
    assert "SIP/2.0 100 Trying" in messages
    assert "SIP/2.0 180 Ringing" in messages
    ok = messages[messages.index("SIP/2.0 200 OK") :]
    assert "Content-Type: application/sdp" in ok and "m=audio" in ok and "RTP/AVP 0" in ok
    assert re.search(r"^To: .*;tag=", ok, re.M)


def test_sipp_cancel_while_ringing(bridge, tmp_path):
    """CANCEL before the answer: 200 for the CANCEL, 487 for the INVITE (RFC 3261 section 9.2)."""
    result = run_sipp(bridge, tmp_path, ["-sf", str(SIPP_DIR / "cancel.xml")])
    messages = (tmp_path / "messages.log").read_text()
    assert result.returncode == 0, result.stdout[-2000:] + messages[-3000:]
    assert "SIP/2.0 487 Request Terminated" in messages
    call_id = re.search(r"^Call-ID: (\S+)", messages, re.M).group(1)
    assert bridge.wait_for_log(f"call {call_id}: ended (cancelled)")


def test_sipp_bye_from_bridge_on_rtp_timeout(bridge, tmp_path):
    """A peer that sends no RTP: after media.rtp_timeout (4 s here) the bridge sends BYE."""
    result = run_sipp(bridge, tmp_path, ["-sf", str(SIPP_DIR / "bye_from_bridge.xml")])
    messages = (tmp_path / "messages.log").read_text()
    assert result.returncode == 0, result.stdout[-2000:] + messages[-3000:]
    assert re.search(r"^BYE sip:sipp@127\.0\.0\.1:\d+ SIP/2\.0", messages, re.M)
    # We offered PCMA first: the answer must pick it (the caller's preference).
    ok = messages[messages.index("SIP/2.0 200 OK") :]
    assert "RTP/AVP 8" in ok and "PCMA/8000" in ok


BARESIP_CONFIG = """\
poll_method\tepoll
sip_listen\t127.0.0.1:{sip_port}
net_interface\t127.0.0.1
audio_player\taubridge,nowhere
audio_source\taufile,{wav}
audio_alert\taufile,/dev/null
audio_srate\t8000
audio_channels\t1
module_path\t/usr/lib/baresip/modules
module\tg711.so
module\taufile.so
module\tsndfile.so
module\taubridge.so
module_app\taccount.so
module_app\tmenu.so
snd_path\t{folder}
rtp_ports\t{rtp_low}-{rtp_high}
"""


def test_baresip_conversation(bridge, tmp_path, speech, asr):
    """baresip dials the bridge, plays a question after the greeting, records the agent.

    The recording, transcribed, holds the greeting and a reply.
    """
    need("baresip")
    need("sox")
    question = tmp_path / "question.wav"
    # 7 s of silence while the greeting plays, the question, then 9 s for the reply.
    subprocess.run(
        ["sox", str(speech["saturday"]), "-r", "8000", "-c", "1", "-b", "16", str(question), "pad", "7", "9"],
        check=True,
    )
    rtp_low, rtp_high = rtp_pair()
    (tmp_path / "config").write_text(
        BARESIP_CONFIG.format(sip_port=free_port(), wav=question, folder=tmp_path, rtp_low=rtp_low, rtp_high=rtp_high)
    )
    (tmp_path / "accounts").write_text("<sip:tester@127.0.0.1>;regint=0;audio_codecs=PCMU\n")
    (tmp_path / "contacts").write_text("")
    proc = subprocess.run(
        ["baresip", "-f", str(tmp_path), "-e", f"/dial {bridge.uri}", "-t", "35"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = proc.stdout + proc.stderr
    assert "Call established" in output, output[-3000:]
    heard = list(tmp_path.glob("dump-*-dec.wav"))
    assert heard, output[-3000:]
    transcript = asr.transcribe(read_wav_8k(heard[0]))
    w = words(transcript)
    assert {"thanks", "calling", "help"} <= w, transcript
    assert "dental" in w, transcript
    greeting = "hello thanks for calling maple street dental this is sam how can i help you"
    assert len(w - set(greeting.split())) >= 2, f"no reply after the greeting: {transcript!r}"
    assert bridge.wait_for_log("caller='", 10), bridge.log_text()[-3000:]

    # The call's record, read with `bridge calls` (same config and database) while serve runs.
    def cli(*args):
        result = subprocess.run(
            [sys.executable, "-m", "bridge", "calls", *args, "--json"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    deadline = time.monotonic() + 15
    while True:
        mine = [c for c in cli("list", "--limit", "200") if c["caller"] == "tester" and c["ended_at"]]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert mine, "no ended record of baresip's call"
    record = cli("show", mine[0]["call_id"])
    turns = [(t["caller"], t["agent"]) for t in record["turns"]]
    assert turns[0][0] is None and "Maple Street Dental" in turns[0][1], turns
    assert any(caller and "saturday" in caller.lower() and agent for caller, agent in turns), turns
    assert record["leg"] == "sip" and record["codec"] == "PCMU" and record["end_reason"] == "caller_hangup", record


def test_bridge_call_cli(bridge, tmp_path, speech, asr):
    """``bridge call`` dials, speaks two turns, records, reports latency per turn."""
    record = tmp_path / "agent.wav"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge",
            "call",
            bridge.uri,
            "--play",
            str(speech["saturday"]),
            "--play",
            str(speech["cleaning"]),
            "--record",
            str(record),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "answered: True" in result.stdout
    latencies = re.findall(r"turn \d: end of caller speech -> first agent audio: (\d+) ms", result.stdout)
    assert len(latencies) == 2, result.stdout
    assert all(0 < int(x) < 20000 for x in latencies)
    assert "latency p50:" in result.stdout
    transcript = asr.transcribe(read_wav_8k(record))
    assert {"thanks", "calling", "dental"} <= words(transcript), transcript
    assert len(words(transcript)) >= 18, transcript

    # The same turns are on /metrics as histograms, headline included.
    body = urllib.request.urlopen(f"http://127.0.0.1:{bridge.metrics_port}/metrics", timeout=5).read().decode()
    count = re.search(r"^bridge_voice_to_voice_seconds_count (\S+)", body, re.M)
    assert count and float(count.group(1)) >= 2, body
    for stage in ("endpoint", "asr_final", "llm_first_token", "first_sentence", "tts_first_audio", "first_packet"):
        assert f'bridge_turn_stage_seconds_count{{stage="{stage}"}}' in body, stage
    # ...and in the log, one latency line per turn.
    assert len(re.findall(r"latency call=\S+ voice_to_voice=\d", bridge.log_text())) >= 2


def test_malformed_datagrams_then_options(bridge):
    """Garbage, truncated, oversized and lying datagrams: dropped or 400; OPTIONS still gets 200."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(3)
    port = sock.getsockname()[1]
    target = ("127.0.0.1", bridge.sip_port)
    options = (
        f"OPTIONS sip:agent@127.0.0.1:{bridge.sip_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{{branch}}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@127.0.0.1:{port}>;tag=probe1\r\n"
        f"To: <sip:agent@127.0.0.1:{bridge.sip_port}>\r\n"
        "Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    garbage = [
        b"\x00\xff\xfe garbage \x80\x81",
        b"hello world\r\n\r\n",
        options.format(branch="trunc", call_id="trunc@x").encode()[:90],  # cut mid-header
        b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n"
        + b"X-Pad: "
        + b"a" * 30000
        + b"\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\nVia: not a via\r\n\r\n",
        bytes(range(256)) * 4,
    ]
    for data in garbage:
        sock.sendto(data, target)
    # A request that parses but lies about its body length: 400 (RFC 3261 section 18.3).
    lying = (
        options.format(branch="lying", call_id="lying@x").replace("Content-Length: 0", "Content-Length: 500").encode()
        + b"v=0\r\n"
    )
    sock.sendto(lying, target)
    reply = sock.recv(65535).decode()
    assert reply.startswith("SIP/2.0 400 "), reply
    sock.sendto(options.format(branch="good", call_id="good@x").encode(), target)
    reply = sock.recv(65535).decode()
    assert reply.startswith("SIP/2.0 200 OK"), reply
    assert re.search(r"^Allow: INVITE, ACK, CANCEL, BYE, OPTIONS", reply, re.M)
    sock.close()
    body = urllib.request.urlopen(f"http://127.0.0.1:{bridge.metrics_port}/metrics", timeout=5).read().decode()
    dropped = {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "bridge_sip_dropped_total" and sample.labels["transport"] == "udp"
    }
    assert dropped.get("unparseable", 0) >= 3, body
    assert dropped.get("oversized", 0) >= 1, body
    assert dropped.get("truncated_body", 0) >= 1, body
    assert bridge.proc.poll() is None


def test_agent_ends_call_with_bye(tmp_path, speech, asr):
    """The agent can end the call: at max_call_seconds it says goodbye and sends BYE."""
    from .conftest import TEST_CONFIG

    config = {**TEST_CONFIG, "sip": {"answer_delay": 0}, "agent": {"max_call_seconds": 8}}
    server = BridgeProcess(tmp_path, config)
    server.start()
    try:
        record = tmp_path / "agent.wav"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "bridge",
                "call",
                server.uri,
                "--play",
                str(speech["where"]),
                "--record",
                str(record),
                "--duration",
                "40",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ended: remote_bye (hung up by agent)" in result.stdout, result.stdout
        transcript = asr.transcribe(read_wav_8k(record))
        tail = asr.transcribe(read_wav_8k(record)[-5 * 8000 :])
        assert {"goodbye", "bye"} & (words(transcript) | words(tail)), (transcript, tail)
        assert "hanging up (agent)" in server.log_text()
    finally:
        assert server.stop() == 0


def test_baresip_tls_srtp_dtmf(bridge, tmp_path, speech, asr):
    """baresip over SIP/TLS with SDES-SRTP (AES_CM_128_HMAC_SHA1_80, as Twilio Secure
    Trunking offers), typing DTMF during the call: the conversation receives the digits
    and the (decrypted) agent audio is the greeting."""
    need("baresip")
    need("sox")
    question = tmp_path / "question.wav"
    subprocess.run(
        ["sox", str(speech["where"]), "-r", "8000", "-c", "1", "-b", "16", str(question), "pad", "7", "2"], check=True
    )
    rtp_low, rtp_high = rtp_pair()
    config = BARESIP_CONFIG.format(
        sip_port=free_port(), wav=question, folder=tmp_path, rtp_low=rtp_low, rtp_high=rtp_high
    )
    config += f"module\tsrtp.so\nmodule\tstdio.so\nsip_cafile\t{bridge.cert}\n"
    (tmp_path / "config").write_text(config)
    (tmp_path / "accounts").write_text(
        "<sip:tester@127.0.0.1;transport=tls>;regint=0;audio_codecs=PCMU;mediaenc=srtp-mand\n"
    )
    (tmp_path / "contacts").write_text("")
    proc = subprocess.Popen(
        ["baresip", "-f", str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        time.sleep(1.0)
        proc.stdin.write(f"/dial sip:agent@127.0.0.1:{bridge.tls_port};transport=tls\n".encode())
        proc.stdin.flush()
        time.sleep(6.0)
        for digit in "42#":  # stdio + menu: a digit key during a call sends RFC 4733 DTMF
            proc.stdin.write(digit.encode())
            proc.stdin.flush()
            time.sleep(0.6)
        time.sleep(2.0)
        proc.stdin.write(b"q")
        proc.stdin.flush()
        output = proc.communicate(timeout=20)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in output, output[-3000:]
    assert "Call established" in output, output[-3000:]
    call_id = re.search(r"call (\S+): INVITE over TLS", bridge.log_text()).group(1)
    assert re.search(rf"call {re.escape(call_id)}: answered PCMU/8000 .* SRTP", bridge.log_text())
    for digit in "42#":
        assert bridge.wait_for_log(f"dtmf call={call_id} digit={digit}", 10), bridge.log_text()[-3000:]
    heard = list(tmp_path.glob("dump-*-dec.wav"))
    transcript = asr.transcribe(read_wav_8k(heard[0]))
    assert {"thanks", "calling"} <= words(transcript), transcript


def test_transfer_with_refer(bridge, tmp_path):
    """DTMF 0 asks for the operator: the agent announces it, sends REFER with the configured
    Refer-To, follows the NOTIFY sipfrags, and hangs up once the target answered."""
    result = run_sipp(bridge, tmp_path, ["-sf", str(SIPP_DIR / "refer.xml")], timeout=60)
    messages = (tmp_path / "messages.log").read_text()
    assert result.returncode == 0, result.stdout[-2000:] + messages[-4000:] + bridge.log_text()[-3000:]
    refer = messages[messages.index("REFER sip:") :]
    assert re.search(r"^Referred-By: <sip:agent@127\.0\.0\.1:\d+>", refer, re.M), refer[:800]
    call_id = re.search(r"^Call-ID: (\S+)", messages, re.M).group(1)
    log = bridge.log_text()
    assert f"call {call_id}: transfer progress 202" in log
    assert f"call {call_id}: transfer progress 200 (final)" in log
    assert f"call {call_id}: hanging up (transferred)" in log
    # The call record has the transfer, its outcome and the end reason.
    record = eventually(
        lambda: (lambda c: c if c is not None and c.ended_at else None)(
            load(os.environ["BRIDGE_STORAGE__URL"])[0].get(call_id)
        ),
        15,
    )
    assert record is not None, "no ended record of the transferred call"
    assert (record.transfer_target, record.transfer_outcome, record.end_reason) == (
        "sip:+14155550100@example.pstn.twilio.com",
        "completed",
        "transfer",
    )
    assert record.dtmf == "0"


def test_the_start_log_says_what_an_operator_needs(bridge):
    """Up to ``bridge: ready`` the log names the listeners and the address they advertise,
    the RTP range, the models, the records and the metrics, and carries no library chatter
    (alembic's plugin and migration INFO lines)."""
    text = bridge.log_text()
    start = text[: text.index("bridge: ready")]
    for needle in (
        "sip: listening on udp 127.0.0.1",
        "advertising",
        "sip: listening on tls",
        "rtp: ports",
        "models: ASR",
        "records: sqlite:///",
        "metrics: http://127.0.0.1:",
    ):
        assert needle in start, (needle, start)
    assert "alembic" not in start.lower(), start
