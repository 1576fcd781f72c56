"""A cluster for tests: ``scripts/run_cluster.sh`` (Debian's kamailio in front of bridge
nodes) on free loopback ports, and sipp calls through it that say which node answered."""

from __future__ import annotations

import csv
import os
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import ROOT, _udp_free, free_port, need, rtp_range

SCENARIO = ROOT / "tests" / "sipp" / "cluster_call.xml"


def _port_block(count: int, kind: int = socket.SOCK_DGRAM) -> int:
    """A base port B with B+1..B+count free (UDP or TCP) on 127.0.0.1."""
    for _ in range(200):
        base = free_port(kind)
        ok = True
        for port in range(base + 1, base + count + 1):
            with socket.socket(socket.AF_INET, kind) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok and (kind != socket.SOCK_DGRAM or all(_udp_free(p) for p in range(base + 1, base + count + 1))):
            return base
    raise RuntimeError("no free port block")


class Cluster:
    """``run_cluster.sh`` in the foreground, its stdout collected; its work directory
    (lists, node and Kamailio logs) under ``workdir``."""

    def __init__(self, workdir: Path, nodes: int = 2, args: list[str] | None = None, env: dict | None = None) -> None:
        need("kamailio")
        self.workdir = workdir
        self.nodes = nodes
        self.sip_port = free_port()
        self.node_base = _port_block(nodes)
        self.metrics_base = _port_block(nodes, socket.SOCK_STREAM)
        self.kamailio_metrics = free_port(socket.SOCK_STREAM)
        low, high = map(int, rtp_range(20 * nodes).split("-"))
        self.per_node = (high - low + 1) // nodes
        self.rtp_low = low
        self.argv = [
            "bash",
            str(ROOT / "scripts" / "run_cluster.sh"),
            "--nodes",
            str(nodes),
            "--sip-listen",
            f"127.0.0.1:{self.sip_port}",
            "--workdir",
            str(workdir),
            "--node-port-base",
            str(self.node_base),
            "--rtp-base",
            str(low),
            "--rtp-ports-per-node",
            str(self.per_node),
            "--metrics-base",
            str(self.metrics_base),
            "--kamailio-metrics",
            f"127.0.0.1:{self.kamailio_metrics}",
            *(args or []),
        ]
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.lines: list[tuple[float, str]] = []
        self.proc: subprocess.Popen | None = None

    def node_port(self, index: int) -> int:
        return self.node_base + index

    def node_rtp(self, index: int) -> range:
        low = self.rtp_low + (index - 1) * self.per_node
        return range(low, low + self.per_node)

    def start(self, timeout: float = 180) -> Cluster:
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        threading.Thread(target=self._pump, daemon=True).start()
        if not self.wait_line("cluster: ready", timeout):
            self.stop(signal.SIGINT)
            pytest.fail("run_cluster.sh did not become ready:\n" + self.output() + self.logs())
        return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line))

    def output(self) -> str:
        return "".join(line for _, line in self.lines)

    def logs(self) -> str:
        out = []
        for path in sorted(self.workdir.glob("*.log")):
            out.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(out)

    def wait_line(self, needle: str, timeout: float, after: float = 0.0) -> float | None:
        """Monotonic time of the first runner line containing ``needle`` (seen after
        ``after``), or ``None`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for stamp, line in list(self.lines):
                if stamp >= after and needle in line:
                    return stamp
            if self.proc is not None and self.proc.poll() is not None:
                return None
            time.sleep(0.05)
        return None

    def kamailio_log(self) -> str:
        path = self.workdir / "kamailio.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_kamailio(self, needle: str, timeout: float, count: int = 1) -> float | None:
        """Monotonic time when Kamailio's log holds ``needle`` ``count`` times, or ``None``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.kamailio_log().count(needle) >= count:
                return time.monotonic()
            time.sleep(0.05)
        return None

    def node_pid(self, index: int) -> int:
        pid = None
        for _, line in self.lines:
            m = re.search(rf"node {index} (?:starting: .*pid|restarted \(pid) (\d+)", line)
            if m:
                pid = int(m.group(1))
        assert pid is not None, self.output()
        return pid

    def node_log(self, index: int) -> str:
        return (self.workdir / f"node-{index}.log").read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@dataclass
class SippRun:
    """What one sipp run through the cluster did."""

    returncode: int
    answered: dict[str, int] = field(default_factory=dict)  # Call-ID -> node SIP port (200's Contact)
    ended_by_node: set[str] = field(default_factory=set)  # calls the node hung up (drain deadline)
    successful: int = 0
    failed: int = 0
    errors: str = ""
    messages: str = ""

    def per_port(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for port in self.answered.values():
            counts[port] = counts.get(port, 0) + 1
        return counts


def sipp_calls(
    cluster: Cluster,
    workdir: Path,
    calls: int,
    rate: float = 5,
    limit: int | None = None,
    source: str = "127.0.0.1",
    scenario: Path = SCENARIO,
    trace_msg: bool = False,
    timeout: float = 120,
) -> SippRun:
    """``calls`` calls from sipp at ``rate`` per second (at most ``limit`` at once) from
    ``source`` to Kamailio; each is tagged with the node that answered it."""
    need("sipp")
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [
        "sipp",
        f"127.0.0.1:{cluster.sip_port}",
        "-s",
        "agent",
        "-i",
        source,
        "-p",
        str(free_port()),
        "-mp",
        str(int(rtp_range(4 * calls).split("-")[0])),
        "-sf",
        str(scenario),
        "-m",
        str(calls),
        "-r",
        str(rate),
        "-l",
        str(limit or calls),
        "-trace_logs",
        "-trace_err",
        "-trace_stat",
        "-stf",
        "stat.csv",
        "-fd",
        "1",
        "-nostdin",
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
    ]
    if trace_msg:
        cmd.append("-trace_msg")
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout + 30)
    run = SippRun(result.returncode)
    for path in workdir.glob("*_logs.log"):
        text = path.read_text(errors="replace")
        for call_id, port in re.findall(r"answered (\S+) by node port (\d+)", text):
            run.answered[call_id] = int(port)
        run.ended_by_node |= set(re.findall(r"node ended (\S+)", text))
    run.errors = "\n".join(p.read_text(errors="replace")[-3000:] for p in workdir.glob("*_errors.log"))
    run.messages = "\n".join(p.read_text(errors="replace") for p in workdir.glob("*_messages.log"))
    stat = workdir / "stat.csv"
    if stat.exists():
        rows = list(csv.DictReader(stat.read_text().splitlines(), delimiter=";"))
        if rows:
            run.successful = int(rows[-1]["SuccessfulCall(C)"])
            run.failed = int(rows[-1]["FailedCall(C)"])
    return run
