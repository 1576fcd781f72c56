"""The address we advertise, and calls that fail half-way, with peers that are not on
loopback: network namespaces made by the test (tests/netns.py), removed at the end.

- A wildcard-bound ``bridge serve`` with no ``public_host`` writes, for each peer, the
  source address of its route to that peer into Contact and SDP ``c=``; RTP flows both ways.
- A call that fails after its RTP port was bound (no route to the offer's media address)
  gets 500, its port is released, and the next call works; when the ports run out the
  INVITE gets 503 with Retry-After.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from .conftest import ROOT, BridgeProcess, free_port, need
from .netns import Netns
from .test_e2e_calls import SIPP_DIR

pytestmark = pytest.mark.e2e

ECHO = {"agent": {"kind": "echo"}, "media": {"rtp_timeout": 20}, "sip": {"drain_timeout": 2}}


def sipp(
    prefix: list[str], target: str, local: str, workdir, *scenario: str, timeout: int = 40
) -> tuple[subprocess.CompletedProcess, str]:
    need("sipp")
    log = workdir / f"sipp-{free_port()}.log"
    cmd = [
        *prefix,
        "sipp",
        target,
        "-s",
        "agent",
        "-i",
        local,
        "-mi",
        local,
        "-p",
        str(free_port()),
        "-mp",
        str(free_port()),
        "-m",
        "1",
        "-l",
        "1",
        "-nostdin",
        "-timeout",
        f"{timeout}s",
        "-timeout_error",
        "-trace_msg",
        "-message_file",
        str(log),
        *scenario,
    ]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout + 20)
    return result, log.read_text() if log.exists() else ""


def ok_response(messages: str) -> str:
    start = messages.index("SIP/2.0 200 OK")
    return messages[start : messages.index("-----", start) if "-----" in messages[start:] else None]


def test_wildcard_bind_advertises_the_route_source_to_each_peer(tmp_path, speech):
    caller = Netns()
    try:
        server_addr, caller_addr = caller.veth()
        server = BridgeProcess(tmp_path, ECHO, listen_host="0.0.0.0")
        server.start()
        try:
            assert re.search(
                rf"sip: listening on udp 0\.0\.0\.0:\d+, advertising per peer.*{re.escape(server_addr)}",
                server.log_text(),
            ), server.log_text()[-2000:]
            # A caller on another host (the namespace): our veth address, not 127.0.0.1.
            result, messages = sipp(
                caller.prefix, f"{server_addr}:{server.sip_port}", caller_addr, tmp_path, "-sn", "uac", "-d", "500"
            )
            assert result.returncode == 0, result.stdout[-1500:] + messages[-3000:] + server.log_text()[-2000:]
            answer = ok_response(messages)
            assert re.search(rf"^Contact: <?sip:bridge@{re.escape(server_addr)}:{server.sip_port}", answer, re.M), (
                answer
            )
            assert f"c=IN IP4 {server_addr}" in answer and "127.0.0.1" not in answer, answer
            # A caller on this host: loopback, from the same server.
            result, messages = sipp(
                [], f"127.0.0.1:{server.sip_port}", "127.0.0.1", tmp_path, "-sn", "uac", "-d", "500"
            )
            assert result.returncode == 0, result.stdout[-1500:]
            answer = ok_response(messages)
            assert (
                re.search(rf"^Contact: <?sip:bridge@127\.0\.0\.1:{server.sip_port}", answer, re.M)
                and "c=IN IP4 127.0.0.1" in answer
            ), answer
            # RTP both ways across the veth pair: the echo agent sends back what reached it.
            record = tmp_path / "heard.wav"
            call = caller.run(
                [
                    sys.executable,
                    "-m",
                    "bridge",
                    "call",
                    f"sip:agent@{server_addr}:{server.sip_port}",
                    "--local-host",
                    caller_addr,
                    "--play",
                    str(speech["saturday"]),
                    "--record",
                    str(record),
                    "--no-wait",
                    "--duration",
                    "5",
                ],
                cwd=ROOT,
            )
            assert "answered: True" in call.stdout, call.stdout + call.stderr + server.log_text()[-2000:]
            heard = float(re.search(r"recorded: ([\d.]+) s", call.stdout).group(1))
            assert heard >= 1.0, call.stdout + server.log_text()[-2000:]
        finally:
            assert server.stop() == 0
            assert "Traceback" not in server.log_text(), server.log_text()[-3000:]
    finally:
        caller.delete()


def scrape_in(ns: Netns, port: int) -> dict[str, float]:
    code = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=5).read().decode())"
    text = ns.run([sys.executable, "-c", code]).stdout
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^bridge_resources\{kind="(\w+)"\} ([\d.e+-]+)$', text, re.M)
    }


def test_setup_failure_after_the_port_is_bound_gets_500_and_releases_it(tmp_path):
    """Served from a host with only loopback (a namespace): an offer whose media address has no
    route fails after the RTP port is bound. With a single RTP port, the next call can only
    work if that port came back; a call while it is in use gets 503 with Retry-After."""
    host = Netns()
    try:
        server = BridgeProcess(tmp_path, ECHO, listen_host="0.0.0.0", prefix=host.prefix, rtp_count=1)
        server.start()
        try:
            assert "only loopback addresses exist" in server.log_text()
            target = f"127.0.0.1:{server.sip_port}"
            result, messages = sipp(
                host.prefix,
                target,
                "127.0.0.1",
                tmp_path,
                "-sf",
                str(SIPP_DIR / "expect_500_setup.xml"),
                "-set",
                "media_host",
                "198.51.100.7",
            )
            assert result.returncode == 0, result.stdout[-1500:] + messages[-2000:] + server.log_text()[-2000:]
            assert server.wait_for_log("setup failed, port"), server.log_text()[-2000:]
            held = subprocess.Popen(
                [
                    *host.prefix,
                    "sipp",
                    target,
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
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                assert server.wait_for_log("answered PCMU", timeout=15), server.log_text()[
                    -2000:
                ]  # the one port came back
                result, messages = sipp(
                    host.prefix, target, "127.0.0.1", tmp_path, "-sf", str(SIPP_DIR / "expect_503.xml")
                )
                assert result.returncode == 0, result.stdout[-1500:] + messages[-2000:]
                assert "Retry-After:" in messages and server.wait_for_log("rejected 503 (no_rtp_port)")
                assert held.wait(30) == 0
            finally:
                if held.poll() is None:
                    held.kill()
            for _ in range(50):
                resources = scrape_in(host, server.metrics_port)
                if resources.get("calls") == 0 and resources.get("rtp_ports") == 0:
                    break
                import time

                time.sleep(0.1)
            assert resources["calls"] == 0 and resources["rtp_ports"] == 0, resources
        finally:
            assert server.stop() == 0
            assert "Traceback" not in server.log_text(), server.log_text()[-3000:]
    finally:
        host.delete()
