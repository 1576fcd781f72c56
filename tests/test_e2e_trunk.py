"""Trunk-grade SIP against real sipp scenarios, on ``bridge serve`` with the echo agent
(no models: these tests are about signalling and media)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from .conftest import ROOT, BridgeProcess, free_port, need, rtp_range
from .test_e2e_calls import SIPP_DIR, run_sipp

pytestmark = pytest.mark.e2e

ECHO = {"agent": {"kind": "echo"}, "media": {"rtp_timeout": 60}, "sip": {"drain_timeout": 3}}


def with_(base: dict, **sections) -> dict:
    out = {k: dict(v) for k, v in base.items()}
    for name, values in sections.items():
        out.setdefault(name, {}).update(values)
    return out


@pytest.fixture(scope="module")
def echo_bridge(tmp_path_factory):
    server = BridgeProcess(tmp_path_factory.mktemp("echo"), ECHO)
    server.start()
    yield server
    assert server.stop() == 0
    assert "Traceback" not in server.log_text(), server.log_text()[-4000:]


def sipp_ok(bridge, tmp_path, *scenario, timeout=60):
    result = run_sipp(bridge, tmp_path, list(scenario), timeout=timeout)
    messages = (tmp_path / "messages.log").read_text() if (tmp_path / "messages.log").exists() else ""
    assert result.returncode == 0, result.stdout[-1500:] + messages[-4000:] + bridge.log_text()[-2000:]
    return messages


def test_lost_ack_gets_200_retransmitted(echo_bridge, tmp_path):
    messages = sipp_ok(echo_bridge, tmp_path, "-sf", str(SIPP_DIR / "lost_ack.xml"))
    assert messages.count("SIP/2.0 200 OK") >= 3 + 1  # the 200 three times, then the BYE's


def test_hold_and_unhold(echo_bridge, tmp_path):
    messages = sipp_ok(echo_bridge, tmp_path, "-sf", str(SIPP_DIR / "hold.xml"))
    assert "a=recvonly" in messages and "a=sendrecv" in messages
    call_id = messages.split("Call-ID: ", 1)[1].split()[0]
    assert echo_bridge.wait_for_log(f"call {call_id}: put on hold")
    assert echo_bridge.wait_for_log(f"call {call_id}: taken off hold")


def test_bye_for_unknown_dialog_gets_481(echo_bridge, tmp_path):
    sipp_ok(echo_bridge, tmp_path, "-sf", str(SIPP_DIR / "bye_unknown.xml"))


def test_invite_from_outside_the_allowlist_gets_403(tmp_path):
    server = BridgeProcess(tmp_path, with_(ECHO, access={"allowlist": ["@config/twilio-signaling.yaml"]}))
    server.start()
    try:
        sipp_ok(server, tmp_path, "-sf", str(SIPP_DIR / "expect_403.xml"))
        assert server.wait_for_log("rejected 403 (not_allowed)")
    finally:
        assert server.stop() == 0


def test_over_cap_invite_gets_503_with_retry_after(tmp_path):
    need("sipp")
    server = BridgeProcess(tmp_path, with_(ECHO, access={"max_calls": 1, "retry_after": 7}))
    server.start()
    first_dir = tmp_path / "first"
    first_dir.mkdir()
    first = subprocess.Popen(
        [
            "sipp",
            f"127.0.0.1:{server.sip_port}",
            "-sn",
            "uac",
            "-s",
            "agent",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-mp",
            str(free_port()),
            "-m",
            "1",
            "-d",
            "4000",
            "-nostdin",
            "-timeout",
            "30s",
            "-timeout_error",
        ],
        cwd=first_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert server.wait_for_log(": answered ", 15)
        second = tmp_path / "second"
        second.mkdir()
        messages = sipp_ok(server, second, "-sf", str(SIPP_DIR / "expect_503.xml"))
        assert "Retry-After: 7" in messages
        assert first.wait(30) == 0  # the call in progress was not disturbed
    finally:
        if first.poll() is None:
            first.kill()
        assert server.stop() == 0


def test_sigterm_drains_calls_with_bye_and_refuses_new_ones(tmp_path):
    """SIGTERM: the call in progress goes on until sip.drain_timeout (3 s), then gets BYE;
    a new INVITE meanwhile gets 503; the process exits 0."""
    need("sipp")
    server = BridgeProcess(tmp_path, ECHO)
    server.start()
    call_dir = tmp_path / "call"
    call_dir.mkdir()
    call = subprocess.Popen(
        [
            "sipp",
            f"127.0.0.1:{server.sip_port}",
            "-sf",
            str(SIPP_DIR / "bye_from_bridge.xml"),
            "-s",
            "agent",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-mp",
            str(free_port()),
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "40s",
            "-timeout_error",
            "-trace_msg",
            "-message_file",
            str(call_dir / "messages.log"),
        ],
        cwd=call_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert server.wait_for_log(": answered ", 15)
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait_for_log("draining: 1 call(s) in progress", 10)
        refused = tmp_path / "refused"
        refused.mkdir()
        sipp_ok(server, refused, "-sf", str(SIPP_DIR / "expect_503.xml"))
        assert call.wait(30) == 0, (call_dir / "messages.log").read_text()[-3000:]
        assert "BYE sip:sipp@" in (call_dir / "messages.log").read_text()
        assert server.proc.wait(20) == 0
        assert "drain deadline reached: ending 1 call(s)" in server.log_text()
        assert "rejected 503 (draining)" in server.log_text()
    finally:
        if call.poll() is None:
            call.kill()
        server.stop()


def test_bridge_dial_through_termination_with_digest(tmp_path):
    """``bridge dial NUMBER``: INVITE to the termination URI, 401, INVITE with valid
    digest credentials, answered, agent on the call, BYE from the far end."""
    need("sipp")
    sipp_port = free_port()
    uas = subprocess.Popen(
        [
            "sipp",
            "-sf",
            str(SIPP_DIR / "termination_uas.xml"),
            "-i",
            "127.0.0.1",
            "-p",
            str(sipp_port),
            "-mp",
            str(free_port()),
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "40s",
            "-timeout_error",
            "-trace_msg",
            "-message_file",
            str(tmp_path / "uas.log"),
            "-trace_err",
            "-error_file",
            str(tmp_path / "uas_err.log"),
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    config = tmp_path / "dial.yaml"
    config.write_text(
        "agent: {kind: echo}\n"
        f"outbound: {{termination_uri: 'sip:127.0.0.1:{sipp_port}', username: bridgeuser, password: s3cret, caller_id: '+14155550123'}}\n"
    )
    try:
        time.sleep(0.5)
        dial = subprocess.run(
            [
                sys.executable,
                "-m",
                "bridge",
                "dial",
                "+14155550100",
                "--config",
                str(config),
                "--sip-listen",
                f"127.0.0.1:{free_port()}",
                "--rtp-ports",
                rtp_range(5),
                "--metrics-listen",
                f"127.0.0.1:{free_port(socket.SOCK_STREAM)}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert uas.wait(30) == 0, (tmp_path / "uas.log").read_text()[-4000:] + (tmp_path / "uas_err.log").read_text()[
            -2000:
        ]
    finally:
        if uas.poll() is None:
            uas.kill()
    assert dial.returncode == 0, dial.stdout + dial.stderr
    assert "call ended" in dial.stdout
    trace = (tmp_path / "uas.log").read_text()
    assert "Authorization: Digest" in trace and 'username="bridgeuser"' in trace and "qop=auth" in trace
    assert "From: <sip:+14155550123@" in trace
    assert "outbound call answered" in dial.stderr


def scrape(bridge) -> dict[tuple[str, str], float]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    body = urllib.request.urlopen(f"http://127.0.0.1:{bridge.metrics_port}/metrics", timeout=5).read().decode()
    out = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out[(sample.name, sample.labels.get("kind", ""))] = sample.value
    return out


def test_load_50_calls_with_rtp_for_30_s_then_no_leaks(tmp_path):
    """sipp places 50 calls (10/s) of ~35 s each with PCMA RTP both ways (echo agent):
    all succeed, 50 are up at once for 30 s, and afterwards nothing is left behind."""
    need("sipp")
    server = BridgeProcess(tmp_path, with_(ECHO, sip={"t1": 0.1}, media={"rtp_timeout": 20}), rtp_count=120)
    server.start()
    try:
        # One call first, so that lazily created things (codec tables, executors) exist in the baseline.
        sipp_ok(server, tmp_path, "-sn", "uac", "-d", "500")
        time.sleep(2.5)  # Timers J/K/L at T1 = 0.1 s
        base = scrape(server)
        assert base[("bridge_resources", "calls")] == 0
        peak = 0.0
        load_dir = tmp_path / "load"
        load_dir.mkdir()
        load = subprocess.Popen(
            [
                "sipp",
                f"127.0.0.1:{server.sip_port}",
                "-sf",
                str(SIPP_DIR / "load.xml"),
                "-s",
                "agent",
                "-i",
                "127.0.0.1",
                "-p",
                str(free_port()),
                "-mp",
                str(free_port() & ~1),
                "-m",
                "50",
                "-l",
                "50",
                "-r",
                "10",
                "-nostdin",
                "-timeout",
                "120s",
                "-timeout_error",
                "-trace_err",
                "-error_file",
                str(load_dir / "errors.log"),
                "-trace_stat",
                "-stf",
                str(load_dir / "stats.csv"),
            ],
            cwd=load_dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        seconds_at_50 = 0
        while load.poll() is None:
            time.sleep(1)
            calls = scrape(server)[("bridge_resources", "calls")]
            peak = max(peak, calls)
            seconds_at_50 += calls >= 50
        errors = (load_dir / "errors.log").read_text() if (load_dir / "errors.log").exists() else ""
        assert load.returncode == 0, errors[-3000:] + server.log_text()[-3000:]
        assert peak >= 50 and seconds_at_50 >= 28, (peak, seconds_at_50)
        log = server.log_text()
        assert log.count(": answered PCMA/8000") == 50 + 0  # the warm-up call was PCMU
        for _ in range(30):  # the BYEs' server transactions live 64*T1 = 6.4 s (Timer J)
            after = scrape(server)
            if after[("bridge_resources", "sip_transactions")] == 0:
                break
            time.sleep(0.5)
        for kind in ("calls", "rtp_ports", "sip_dialogs", "sip_transactions"):
            assert after[("bridge_resources", kind)] == 0, kind
        assert (
            1 <= after[("bridge_resources", "tasks")] <= base[("bridge_resources", "tasks")]
        )  # -1: unreadable, a failure
        assert after[("process_open_fds", "")] <= base[("process_open_fds", "")]
        assert "Traceback" not in log
    finally:
        assert server.stop() == 0


def test_sipp_call_over_tcp(tmp_path):
    """The same core over TCP (RFC 3261 section 18): sipp's UAC on one TCP connection."""
    need("sipp")
    tcp_port = free_port(socket.SOCK_STREAM)
    server = BridgeProcess(tmp_path, with_(ECHO, sip={"tcp_listen": f"127.0.0.1:{tcp_port}"}))
    server.start()
    try:
        result = subprocess.run(
            [
                "sipp",
                f"127.0.0.1:{tcp_port}",
                "-sn",
                "uac",
                "-t",
                "t1",
                "-s",
                "agent",
                "-i",
                "127.0.0.1",
                "-p",
                str(free_port(socket.SOCK_STREAM)),
                "-mp",
                str(free_port()),
                "-m",
                "1",
                "-d",
                "1000",
                "-nostdin",
                "-timeout",
                "30s",
                "-timeout_error",
                "-trace_msg",
                "-message_file",
                str(tmp_path / "tcp.log"),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        trace = (tmp_path / "tcp.log").read_text()
        assert result.returncode == 0, trace[-3000:] + server.log_text()[-2000:]
        assert "TCP message received" in trace
        assert re.search(r"^Contact: <sip:bridge@127\.0\.0\.1:\d+;transport=tcp>", trace, re.M)
        assert "INVITE over TCP" in server.log_text()
    finally:
        assert server.stop() == 0


def test_offer_with_video_and_t38_then_codec_change(echo_bridge, tmp_path):
    """sipp offers video, audio and T.38: the answer has the three m= lines in order with
    video and image refused (port 0, RFC 3264 section 6); a re-INVITE moving to PCMA is
    answered with PCMA (section 8)."""
    messages = sipp_ok(echo_bridge, tmp_path, "-sf", str(SIPP_DIR / "video_offer.xml"))
    call_id = messages.split("Call-ID: ", 1)[1].split()[0]
    assert echo_bridge.wait_for_log(f"call {call_id}: codec changed PCMU/0 -> PCMA/8")
