"""Load figures for the SIP/RTP path (echo agent, no models), on 127.0.0.1.

Starts ``bridge serve --agent echo``, places CALLS concurrent sipp calls
(tests/sipp/load.xml: ~35 s of PCMA RTP both ways each), and reports:

- calls placed / failed (sipp), peak concurrent calls (bridge /metrics);
- the server's CPU use (from /proc/PID/stat) while calls were up;
- RTP send-interval jitter of the bridge's packets as the receiving side sees
  them: the kernel receive timestamps of every packet from the bridge's RTP
  ports, captured on ``lo`` by tcpdump (needs root or CAP_NET_RAW); per stream,
  |interval - 20 ms| between consecutive sequence numbers, p50/p99/max over all.

Usage: sudo .venv/bin/python scripts/load_figures.py [--calls 50] [--rate 10] [--json FILE]
(docs/scaling.md's figures: --calls 200 --rate 20 and --calls 500 --rate 20)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Capture:
    """Kernel receive times and RTP sequence numbers of the bridge's packets.

    tcpdump (Debian package ``tcpdump``) captures on ``lo`` the inbound copies of
    UDP packets whose source port is in [low, high], with nanosecond kernel
    timestamps, into a pcap file; the capture costs the machine a few percent of
    a core (a Python sniffer reading 25,000 packets a second competed with the
    bridge for the same 2 cores, and lost packets read as 40 ms intervals).
    """

    def __init__(self, low: int, high: int, path: Path) -> None:
        exe = shutil.which("tcpdump")
        if exe is None:
            raise SystemExit(
                "load_figures needs tcpdump (apt-get install tcpdump; scripts/setup.sh --test installs it)"
            )
        self.path = path
        self.proc = subprocess.Popen(
            [
                exe,
                "-i",
                "lo",
                "-Q",
                "in",
                "-n",
                "-s",
                "64",
                "-B",
                "65536",
                "--time-stamp-precision=nano",
                "-w",
                str(path),
                f"udp and src portrange {low}-{high}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)  # tcpdump is listening once it has opened the device

    def stop(self) -> str:
        """Stop the capture; returns tcpdump's summary (packets captured / dropped by kernel)."""
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=30)
        return " ".join(line for line in err.splitlines() if "packets" in line)

    def streams(self) -> dict[tuple[int, int], list[tuple[float, int]]]:
        """(source port, destination port) -> [(kernel receive time s, RTP sequence number)]."""
        data = self.path.read_bytes()
        magic = struct.unpack("<I", data[:4])[0]
        if magic != 0xA1B23C4D:
            raise SystemExit(f"unexpected pcap magic {magic:#x} (want nanosecond pcap)")
        linktype = struct.unpack("<I", data[20:24])[0]
        link = 14 if linktype == 1 else 4 if linktype == 0 else 16  # EN10MB, NULL, LINUX_SLL
        out: dict[tuple[int, int], list[tuple[float, int]]] = {}
        pos = 24
        while pos + 16 <= len(data):
            sec, nsec, incl, _orig = struct.unpack("<IIII", data[pos : pos + 16])
            frame = data[pos + 16 : pos + 16 + incl]
            pos += 16 + incl
            ip = frame[link:]
            if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
                continue
            ihl = (ip[0] & 0x0F) * 4
            sport, dport = struct.unpack("!HH", ip[ihl : ihl + 4])
            rtp = ip[ihl + 8 :]
            if len(rtp) < 4:
                continue
            out.setdefault((sport, dport), []).append((sec + nsec / 1e9, struct.unpack("!H", rtp[2:4])[0]))
        return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def active_calls(metrics_port: int) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith('bridge_resources{kind="calls"}'):
            return float(line.split()[-1])
    return 0.0


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--rate", type=float, default=10)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    sip_port, metrics_port = free_port(), free_port(socket.SOCK_STREAM)
    low, high = 16000, 16000 + 4 * args.calls
    workdir = Path(tempfile.mkdtemp(prefix="bridge-load-"))
    # The admission limits are for real traffic (100 calls, 10 INVITEs/s per source):
    # one sipp on 127.0.0.1 is one source placing every call.
    config = workdir / "load.yaml"
    config.write_text(
        f"access: {{max_calls: {args.calls + 10}, max_calls_per_caller: {args.calls + 10}, invite_rate: {max(10, int(args.rate * 2))}, invite_burst: {args.calls}}}\n"
        f"storage: {{url: 'sqlite:///{workdir}/bridge.db', spool_dir: '{workdir}/spool'}}\n"
    )
    capture = Capture(low, high, workdir / "rtp.pcap")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bridge",
            "serve",
            "--config",
            str(config),
            "--agent",
            "echo",
            "--sip-listen",
            f"127.0.0.1:{sip_port}",
            "--rtp-ports",
            f"{low}-{high}",
            "--metrics-listen",
            f"127.0.0.1:{metrics_port}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in server.stdout:
        if "bridge: ready" in line:
            break
    threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()
    started = time.monotonic()
    cpu0 = cpu_seconds(server.pid)
    sipp = subprocess.Popen(
        [
            "sipp",
            f"127.0.0.1:{sip_port}",
            "-sf",
            str(ROOT / "tests/sipp/load.xml"),
            "-s",
            "agent",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-mp",
            str(free_port() & ~1),
            "-m",
            str(args.calls),
            "-l",
            str(args.calls),
            "-r",
            str(args.rate),
            "-nostdin",
            "-timeout",
            "180s",
            "-trace_stat",
            "-stf",
            str(workdir / "stats.csv"),
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak, full_since, full_seconds, cpu_full = 0.0, None, 0.0, 0.0
    while sipp.poll() is None:
        time.sleep(1)
        calls = active_calls(metrics_port)
        peak = max(peak, calls)
        now, cpu = time.monotonic(), cpu_seconds(server.pid)
        if calls >= args.calls and full_since is None:
            full_since, cpu_at_full = now, cpu
        if calls >= args.calls and full_since is not None:
            full_seconds, cpu_full = now - full_since, cpu - cpu_at_full
    elapsed = time.monotonic() - started
    cpu_total = cpu_seconds(server.pid) - cpu0
    server.terminate()
    server.wait(30)
    summary = capture.stop()
    streams = capture.streams()
    stats = (workdir / "stats.csv").read_text().splitlines()
    head, last = stats[0].split(";"), stats[-1].split(";")
    failed = int(last[head.index("FailedCall(C)")])
    ok = int(last[head.index("SuccessfulCall(C)")])
    # Send-interval jitter: consecutive packets of a stream (sequence n -> n+1), so a
    # packet the capture missed is a gap, not a 40 ms interval.
    deviations, gaps = [], 0
    for packets in streams.values():
        for (ta, sa), (tb, sb) in zip(packets, packets[1:]):
            if (sb - sa) & 0xFFFF == 1:
                deviations.append(abs(tb - ta - 0.020) * 1000)
            else:
                gaps += 1
    deviations.sort()
    figures = {
        "calls": args.calls,
        "rate": args.rate,
        "successful": ok,
        "failed": failed,
        "peak_calls": peak,
        "full_seconds": round(full_seconds),
        "cpu_full_pct": round(100 * cpu_full / max(full_seconds, 1e-9)),
        "cpu_run_pct": round(100 * cpu_total / elapsed),
        "streams": len(streams),
        "intervals": len(deviations),
        "sequence_gaps": gaps,
        "jitter_p50_ms": round(percentile(deviations, 0.5), 2),
        "jitter_p99_ms": round(percentile(deviations, 0.99), 2),
        "jitter_max_ms": round(deviations[-1], 1) if deviations else float("nan"),
        "capture": summary,
    }
    print(f"calls: {ok} successful, {failed} failed (sipp, {args.calls} placed at {args.rate}/s)")
    print(f"peak concurrent calls (bridge /metrics): {peak:.0f}; all {args.calls} up for {full_seconds:.0f} s")
    print(
        f"server CPU: {figures['cpu_full_pct']}% of one core with {args.calls} calls up; "
        f"{figures['cpu_run_pct']}% over the whole {elapsed:.0f} s run (2-core machine)"
    )
    print(
        f"RTP from the bridge as received: {len(streams)} streams, {len(deviations)} intervals ({gaps} sequence gaps); "
        f"|interval - 20 ms| p50 {figures['jitter_p50_ms']:.2f} ms, p99 {figures['jitter_p99_ms']:.2f} ms, max {figures['jitter_max_ms']:.1f} ms"
    )
    print(f"capture: {summary}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    if os.environ.get("LOAD_KEEP"):
        print(f"kept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
