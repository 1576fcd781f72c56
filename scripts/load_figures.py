"""Load figures for the SIP/RTP path (echo agent, no models), on 127.0.0.1.

Starts ``bridge serve --agent echo``, places CALLS concurrent sipp calls
(tests/sipp/load.xml: ~35 s of PCMA RTP both ways each), and reports:

- calls placed / failed (sipp), peak concurrent calls (bridge /metrics);
- the server's CPU use (from /proc/PID/stat) while calls were up;
- RTP send-interval jitter of the bridge's packets as the receiving side sees
  them: the kernel receive timestamps (SO_TIMESTAMPNS) of every packet from
  the bridge's RTP ports, captured on ``lo`` with an AF_PACKET socket (needs
  root or CAP_NET_RAW); per stream, |interval - 20 ms|, p50/p99 over all.

Usage: sudo .venv/bin/python scripts/load_figures.py [--calls 50] [--rate 10]
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = 35


def free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sniffer(threading.Thread):
    """Kernel arrival times of UDP packets whose source port is in [low, high]."""

    def __init__(self, low: int, high: int) -> None:
        super().__init__(daemon=True)
        self.low, self.high = low, high
        self.arrivals: dict[tuple[int, int], list[float]] = {}
        self.stop = threading.Event()
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind(("lo", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.settimeout(0.5)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                data, ancdata, _flags, addr = self.sock.recvmsg(2048, 64)
            except socket.timeout:
                continue
            if addr[2] != socket.PACKET_HOST:  # lo shows each packet twice: keep the receive side
                continue
            stamp = None
            for level, kind, value in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", value[:16])
                    stamp = sec + nsec / 1e9
            frame = data[14:]  # loopback frames carry a 14-byte Ethernet header
            if stamp is None or len(frame) < 28 or frame[0] >> 4 != 4 or frame[9] != 17:
                continue
            ihl = (frame[0] & 0x0F) * 4
            sport, dport = struct.unpack("!HH", frame[ihl : ihl + 4])
            if self.low <= sport <= self.high:
                self.arrivals.setdefault((sport, dport), []).append(stamp)


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
    args = parser.parse_args()
    sip_port, metrics_port = free_port(), free_port(socket.SOCK_STREAM)
    low, high = 16000, 16000 + 4 * args.calls
    sniffer = Sniffer(low, high)
    sniffer.start()
    server = subprocess.Popen(
        [sys.executable, "-m", "bridge", "serve", "--agent", "echo", "--sip-listen", f"127.0.0.1:{sip_port}",
         "--rtp-ports", f"{low}-{high}", "--metrics-listen", f"127.0.0.1:{metrics_port}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    for line in server.stdout:
        if "bridge: ready" in line:
            break
    threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"bridge-load-{os.getpid()}"
    workdir.mkdir(exist_ok=True)
    started = time.monotonic()
    cpu0 = cpu_seconds(server.pid)
    sipp = subprocess.Popen(
        ["sipp", f"127.0.0.1:{sip_port}", "-sf", str(ROOT / "tests/sipp/load.xml"), "-s", "agent", "-i", "127.0.0.1",
         "-p", str(free_port()), "-mp", str(free_port() & ~1), "-m", str(args.calls), "-l", str(args.calls), "-r", str(args.rate),
         "-nostdin", "-timeout", "180s", "-trace_stat", "-stf", str(workdir / "stats.csv")],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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
    sniffer.stop.set()
    sniffer.join()
    server.terminate()
    server.wait(30)
    stats = (workdir / "stats.csv").read_text().splitlines()
    head, last = stats[0].split(";"), stats[-1].split(";")
    failed = int(last[head.index("FailedCall(C)")])
    ok = int(last[head.index("SuccessfulCall(C)")])
    deviations, intervals = [], []
    for times in sniffer.arrivals.values():
        for a, b in zip(times, times[1:]):
            intervals.append(b - a)
            deviations.append(abs(b - a - 0.020) * 1000)
    print(f"calls: {ok} successful, {failed} failed (sipp, {args.calls} placed at {args.rate}/s)")
    print(f"peak concurrent calls (bridge /metrics): {peak:.0f}; all {args.calls} up for {full_seconds:.0f} s")
    print(f"server CPU: {100 * cpu_full / max(full_seconds, 1e-9):.0f}% of one core with {args.calls} calls up; "
          f"{100 * cpu_total / elapsed:.0f}% over the whole {elapsed:.0f} s run (2-core machine)")
    print(f"RTP from the bridge as received: {len(sniffer.arrivals)} streams, {len(intervals)} intervals; "
          f"|interval - 20 ms| p50 {percentile(deviations, 0.5):.2f} ms, p99 {percentile(deviations, 0.99):.2f} ms, "
          f"max {max(deviations) if deviations else float('nan'):.1f} ms")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
