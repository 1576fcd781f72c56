#!/usr/bin/env python3
"""What call records cost: turn latency with storage off, on, and on with recordings;
and the disk footprint per call-minute.

For each mode it starts ``bridge serve`` (embedded models) on loopback ports, runs
``bridge bench calls`` against it (``--calls`` sequential calls of ``--turns`` turns,
caller's-side latency: end of caller speech -> first agent audio), then reports p50/p95
and the bytes the database (SQLite file + WAL) and the recordings took per minute of
answered call.

    .venv/bin/python scripts/records_cost.py [--calls 3] [--turns 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.benchmarks import percentile as _pct  # noqa: E402
from bridge.benchmarks.calls import bench_calls  # noqa: E402


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def run_mode(mode: str, calls: int, turns: int, workdir: Path) -> dict:
    sip = free_port(socket.SOCK_DGRAM)
    db = workdir / mode / "bridge.db"
    recordings = workdir / mode / "recordings"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env["BRIDGE_STORAGE__URL"] = "" if mode == "off" else f"sqlite:///{db}"
    env["BRIDGE_STORAGE__SPOOL_DIR"] = str(workdir / mode / "spool")
    env["BRIDGE_RECORDING__ENABLED"] = "true" if mode == "records+recordings" else "false"
    env["BRIDGE_RECORDING__DIR"] = str(recordings)
    env["BRIDGE_AGENT__REPROMPT_AFTER_S"] = "0"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bridge",
            "serve",
            "--sip-listen",
            f"127.0.0.1:{sip}",
            "--rtp-ports",
            "40000-40100",
            "--metrics-listen",
            f"127.0.0.1:{free_port(socket.SOCK_STREAM)}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in proc.stdout:
        if "bridge: ready" in line:
            break
    try:
        latencies, seconds = [], 0.0
        for _ in range(calls):
            result = asyncio.run(bench_calls(f"sip:+14155550100@127.0.0.1:{sip}", 1, turns))
            latencies += result["latencies"]
            seconds += result["seconds"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    time.sleep(0.5)
    minutes = seconds / 60
    db_bytes = sum(p.stat().st_size for p in db.parent.glob("bridge.db*")) if mode != "off" else 0
    return {
        "mode": mode,
        "turns": len(latencies),
        "p50": _pct(latencies, 0.5),
        "p95": _pct(latencies, 0.95),
        "call_minutes": round(minutes, 2),
        "db_bytes": db_bytes,
        "recording_bytes": folder_bytes(recordings),
        "db_bytes_per_call_minute": round(db_bytes / minutes) if minutes and db_bytes else 0,
        "recording_bytes_per_call_minute": round(folder_bytes(recordings) / minutes) if minutes else 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [
            run_mode(mode, args.calls, args.turns, Path(tmp)) for mode in ("off", "records", "records+recordings")
        ]
    print(f"{'mode':20} {'turns':>5} {'p50 s':>7} {'p95 s':>7} {'call-min':>8} {'DB B/min':>9} {'rec B/min':>10}")
    for r in results:
        print(
            f"{r['mode']:20} {r['turns']:>5} {r['p50']:>7.3f} {r['p95']:>7.3f} {r['call_minutes']:>8.2f} {r['db_bytes_per_call_minute']:>9} {r['recording_bytes_per_call_minute']:>10}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
