#!/usr/bin/env python3
"""Memory and resource soak: thousands of short sequential SIP calls from sipp.

Starts ``bridge serve`` on 127.0.0.1 (the embedded model agent by default, or ``--agent
echo``), places ``--calls`` calls with sipp's built-in UAC, ``--concurrency`` at a time,
each held ``--hold-ms`` (long enough for the greeting to be synthesized and start
playing), and prints the server's resident memory and its resources
(``bridge_resources``: calls, RTP ports, SIP dialogs and transactions, asyncio tasks;
``process_open_fds``) at the checkpoints, then after the last call has ended.

    sudo .venv/bin/python scripts/soak.py --calls 3000 --checkpoints 100,1000,2000,3000
    .venv/bin/python scripts/soak.py --calls 3000 --agent echo

Exit status 1 when, after the run, a resource is not back at its baseline, or RSS grew by
more than ``--max-growth-mb`` from the first checkpoint at or after ``--warmup`` calls to the end.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for name, labels, value in re.findall(r"^(\w+)(\{[^}]*\})? ([\d.e+-]+)$", text, re.M):
        out[name + (labels or "")] = float(value)
    return out


def resources(metrics: dict[str, float]) -> dict[str, float]:
    keys = {
        "active": 'bridge_resources{kind="calls"}',
        "rtp_ports": 'bridge_resources{kind="rtp_ports"}',
        "sip_dialogs": 'bridge_resources{kind="sip_dialogs"}',
        "sip_transactions": 'bridge_resources{kind="sip_transactions"}',
        "tasks": 'bridge_resources{kind="tasks"}',
        "fds": "process_open_fds",
    }
    out = {}
    for name, key in keys.items():
        if key not in metrics:
            raise RuntimeError(f"{key} is not exported: cannot check {name}")
        out[name] = metrics[key]
    if out["tasks"] < 0:
        raise RuntimeError("the task count could not be read")
    return out


def answered(metrics: dict[str, float]) -> int:
    return int(metrics.get('bridge_calls_total{outcome="answered"}', 0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--hold-ms", type=int, default=1500)
    parser.add_argument("--agent", choices=["llm", "echo"], default="llm")
    parser.add_argument("--checkpoints", default="100,1000,2000,3000", help="call counts at which to read RSS")
    parser.add_argument("--max-growth-mb", type=float, default=5.0, help="allowed RSS growth after the warm-up")
    parser.add_argument(
        "--warmup", type=int, default=1000, help="calls before RSS must stay flat (the first checkpoint at or after it)"
    )
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    checkpoints = sorted(int(c) for c in args.checkpoints.split(",") if int(c) <= args.calls)

    work = Path(tempfile.mkdtemp(prefix="bridge-soak-"))
    sip_port, metrics_port = free_port(), free_port(socket.SOCK_STREAM)
    config = work / "soak.yaml"
    # No reprompts or rate limits in the way of a tight loop of calls from one source.
    config.write_text(
        f"agent: {{kind: {args.agent}, reprompt_after_s: 0}}\naccess: {{invite_rate: 1000, invite_burst: 1000, max_calls_per_caller: 1000}}\n"
        f"models: {{cache_dir: {ROOT / 'models'}}}\nsip: {{drain_timeout: 5}}\n"
    )
    log = open(work / "bridge.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bridge",
            "serve",
            "--config",
            str(config),
            "--sip-listen",
            f"127.0.0.1:{sip_port}",
            "--rtp-ports",
            "20000-20999",
            "--metrics-listen",
            f"127.0.0.1:{metrics_port}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in server.stdout:
        log.write(line)
        if "bridge: ready" in line:
            break
    else:
        print("bridge serve did not start; see", work / "bridge.log")
        return 2
    import threading

    threading.Thread(target=lambda: [log.write(line) for line in server.stdout], daemon=True).start()
    time.sleep(1.0)
    baseline = resources(scrape(metrics_port))
    rss0 = rss_kib(server.pid)
    sipp = subprocess.Popen(
        [
            "sipp",
            f"127.0.0.1:{sip_port}",
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
            "-d",
            str(args.hold_ms),
            "-m",
            str(args.calls),
            "-l",
            str(args.concurrency),
            "-r",
            str(args.concurrency),
            "-nostdin",
            "-timeout",
            f"{args.calls * 2 + 120}s",
            "-timeout_error",
            "-trace_stat",
            "-stf",
            str(work / "stat.csv"),
        ],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = [{"calls": 0, "rss_mib": round(rss0 / 1024, 1), **baseline}]
    started = time.monotonic()
    pending = list(checkpoints)
    while pending and sipp.poll() is None:
        time.sleep(0.5)
        metrics = scrape(metrics_port)
        if answered(metrics) >= pending[0]:
            rows.append(
                {"calls": answered(metrics), "rss_mib": round(rss_kib(server.pid) / 1024, 1), **resources(metrics)}
            )
            print(
                f"calls {rows[-1]['calls']:5d}  rss {rows[-1]['rss_mib']:.1f} MiB  {time.monotonic() - started:.0f} s",
                flush=True,
            )
            pending.pop(0)
    sipp_rc = sipp.wait()
    time.sleep(3.0)  # let the last calls end and their timers run out (Timer J/L: 64*T1 = 32 s)
    for _ in range(90):
        after = resources(scrape(metrics_port))
        if all(after[k] <= baseline[k] for k in ("active", "rtp_ports", "sip_dialogs", "sip_transactions")):
            break
        time.sleep(0.5)
    metrics = scrape(metrics_port)
    rows.append({"calls": answered(metrics), "rss_mib": round(rss_kib(server.pid) / 1024, 1), "after": True, **after})
    stat = (work / "stat.csv").read_text().splitlines() if (work / "stat.csv").exists() else []
    failed_calls = None
    if len(stat) >= 2:
        head, last = stat[0].split(";"), stat[-1].split(";")
        if "FailedCall(C)" in head:
            failed_calls = int(last[head.index("FailedCall(C)")])
    server.send_signal(signal.SIGTERM)
    server.wait(30)

    print(
        f"\nsoak: {args.calls} calls, {args.concurrency} at a time, {args.hold_ms} ms each, agent {args.agent}; sipp exit {sipp_rc}, failed calls {failed_calls}"
    )
    print(
        f"{'calls':>6} {'RSS MiB':>8} {'fds':>5} {'tasks':>6} {'ports':>6} {'dialogs':>8} {'transactions':>13} {'active':>7}"
    )
    for row in rows:
        print(
            f"{row['calls']:>6} {row['rss_mib']:>8.1f} {row['fds']:>5.0f} {row['tasks']:>6.0f} {row['rtp_ports']:>6.0f} {row['sip_dialogs']:>8.0f} "
            f"{row['sip_transactions']:>13.0f} {row['active']:>7.0f}" + ("  (after)" if row.get("after") else "")
        )
    warm = next((row for row in rows[1:-1] if row["calls"] >= args.warmup), rows[1] if len(rows) > 2 else rows[-1])
    growth = rows[-1]["rss_mib"] - warm["rss_mib"]
    leaks = {
        k: (baseline[k], after[k])
        for k in ("active", "fds", "tasks", "rtp_ports", "sip_dialogs", "sip_transactions")
        if after[k] > baseline[k]
    }
    print(f"RSS growth from call {warm['calls']} to the end: {growth:+.1f} MiB (limit {args.max_growth_mb})")
    print("resources back at baseline" if not leaks else f"NOT back at baseline: {leaks}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rows": rows, "baseline": baseline, "failed_calls": failed_calls}, indent=2)
        )
    return 0 if not leaks and growth <= args.max_growth_mb and sipp_rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
