"""Data residency, proven at the system-call level: ``bridge serve`` with the embedded
models (onnxruntime under Piper, faster-whisper, llama.cpp), call records on a real
PostgreSQL and recordings on, runs under ``strace -f``; a SIP call and a Media
Streams call each hold a conversation. Every destination the process tried to reach
(``connect``, ``sendto``, ``sendmsg``, ``sendmmsg``) must be a call peer, the
configured database, or nothing at all: no DNS (port 53, or the resolver's local
sockets), no telemetry host, no model hub.

Before ``bridge.offline.lock_down``, onnxruntime sent a DNS query for its telemetry
host in the middle of calls.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from bridge.client import place_call, read_wav_8k

from .conftest import TEST_CONFIG, BridgeProcess, free_port, missing
from .postgres import new_database
from .twilio_ms import TwilioStream

pytestmark = pytest.mark.e2e

TOKEN = "residency"
#: ``sa_family=AF_INET, sin_port=htons(5432), sin_addr=inet_addr("127.0.0.1")`` and the AF_INET6 form.
INET = re.compile(
    r'sa_family=AF_INET6?, sin6?_port=htons\((\d+)\),.*?(?:inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"\))'
)
UNIX = re.compile(r'sa_family=AF_UNIX, sun_path=(@?"[^"]*")')
#: Local sockets through which glibc resolves names (nscd, systemd-resolved): a lookup.
RESOLVERS = ("nscd", "resolve", "dbus")


def destinations(trace: str) -> tuple[set[tuple[str, int]], set[str], list[str]]:
    """(address, port) of every IP destination (attempted or done), every AF_UNIX path
    that was reached (glibc tries nscd's socket before reading /etc/passwd or
    /etc/hosts itself; where no nscd runs that attempt contacts nothing), and the
    lines naming them."""
    ips, paths, lines = set(), set(), []
    for line in trace.splitlines():
        if not re.search(r"\b(connect|sendto|sendmsg|sendmmsg)\(", line):
            continue
        for m in INET.finditer(line):
            ips.add((m.group(2) or m.group(3), int(m.group(1))))
            lines.append(line)
        for m in UNIX.finditer(line):
            if "= -1 ENOENT" not in line:  # a socket that does not exist was not contacted
                paths.add(m.group(1))
                lines.append(line)
    return ips, paths, lines


def stop_traced(server: BridgeProcess) -> int | None:
    """SIGTERM to ``bridge serve`` itself (strace's child), then strace's exit status (the tracee's)."""
    if server.proc is None or server.proc.poll() is not None:
        return server.proc.returncode if server.proc else None
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
    if children:
        os.kill(int(children[0]), signal.SIGTERM)
    try:
        return server.proc.wait(60)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        return server.proc.wait()


def test_serve_contacts_only_call_peers_and_its_database(tmp_path, speech, postgres):
    strace = shutil.which("strace")
    if strace is None:
        missing("strace not installed (scripts/setup.sh --test installs it)")
    pg = postgres
    http = free_port(socket.SOCK_STREAM)
    trace_file = tmp_path / "strace.txt"
    config = {
        **TEST_CONFIG,
        "agent": {"reprompt_after_s": 0},
        "storage": {"url": new_database(pg), "spool_dir": str(tmp_path / "spool"), "node": "residency"},
        "recording": {"enabled": True, "dir": str(tmp_path / "recordings")},
        "mediastreams": {
            "http_listen": f"127.0.0.1:{http}",
            "public_url": "https://bridge.example.test",
            "auth_token": TOKEN,
        },
    }
    server = BridgeProcess(
        tmp_path,
        config,
        prefix=[
            strace,
            "-f",
            "--seccomp-bpf",
            "-qq",
            "-o",
            str(trace_file),
            "-e",
            "trace=connect,sendto,sendmsg,sendmmsg",
            "-e",
            "signal=none",
        ],
    )
    try:
        server.start(timeout=240)
        report = asyncio.run(
            place_call(
                f"sip:+14155550100@127.0.0.1:{server.sip_port}",
                [speech["saturday"], speech["saturday"]],
                None,
                reply_timeout=25,
            )
        )
        assert report.answered and report.latencies, "the SIP call got no reply"
        twilio = TwilioStream(
            f"ws://127.0.0.1:{http}/media-stream",
            TOKEN,
            "wss://bridge.example.test/media-stream",
            call_sid="CA" + "5" * 32,
            latency=0.0,
        )
        asyncio.run(
            twilio.run(
                [(5.0, read_wav_8k(speech["saturday"]))],
                duration=15.0,
                custom={"From": "+14155550123", "To": "+14155550100"},
            )
        )
        assert twilio.close_code == 1000 and len(twilio.received) > 100
    finally:
        code = stop_traced(server)
    assert code == 0, server.log_text()[-2000:]
    log = server.log_text()
    assert "records: " in log and "ready" in log
    # The call peers, as the server logged them: SIP sources and RTP remote addresses.
    peers = {(host, int(port)) for host, port in re.findall(r"INVITE over \w+ from ([\d.]+):(\d+)", log)}
    peers |= {(host, int(port)) for host, port in re.findall(r"<-> ([\d.]+):(\d+)", log)}
    assert peers, "no call peer in the log"
    peer_hosts = {host for host, _ in peers}
    allowed = (
        peers | {("127.0.0.1", pg.port)} | {(host, 9) for host in peer_hosts}
    )  # port 9: the route probe (connect only, sends nothing)
    ips, paths, lines = destinations(trace_file.read_text())
    assert ("127.0.0.1", pg.port) in ips, "strace saw no database connection: is the trace working?"
    assert any(dest in ips for dest in peers), "strace saw no packet to a call peer"
    unexpected = sorted(d for d in ips if d not in allowed)
    assert not unexpected, (
        f"contacted {unexpected}: "
        + "\n".join(line for line in lines if any(f"htons({p})" in line for _, p in unexpected))[:3000]
    )
    assert not any(port == 53 for _, port in ips), "a DNS query"
    lookups = [p for p in paths if any(word in p for word in RESOLVERS)]
    assert not lookups, f"name lookups through {lookups}"
