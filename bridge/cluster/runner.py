"""Run a cluster on one machine: Debian's ``kamailio`` in front of N ``bridge serve`` nodes.

``scripts/run_cluster.sh --nodes N --sip-listen HOST:PORT [--agent echo|llm]
[--llm-server URL]`` runs this in the foreground:

1. starts N nodes on ``--node-host`` (loopback by default), SIP port
   ``--node-port-base + i``, RTP ``--rtp-base + (i-1) * --rtp-ports-per-node``, metrics
   ``--metrics-base + i``; each accepts INVITEs from Kamailio's address only (the per-source
   rate limit is Kamailio's ``pike``), and uses ``--llm-server`` (an OpenAI-compatible
   server: llama.cpp's, vLLM) instead of a model of its own when given;
2. waits until every node answers SIP OPTIONS, writes ``dispatcher.list`` and
   ``address.list`` into the work directory and starts Kamailio with
   ``deploy/kamailio/kamailio.cfg`` on ``--sip-listen``;
3. supervises: a node that dies (non-zero exit, a signal) is started again after
   ``--restart-delay`` seconds, as systemd's ``Restart=on-failure`` would; a node that
   exits 0 (it drained after its own SIGTERM) stays down; Kamailio dying stops the cluster.

SIGTERM drains: every node gets SIGTERM (new INVITEs 503, so Kamailio's probes mark it
down; calls go on up to ``--drain-timeout`` s, then BYE), then Kamailio is stopped.
SIGINT stops at once. Logs: ``WORKDIR/node-N.log``, ``WORKDIR/kamailio.log``; this
process prints one ``cluster:`` line per event on stdout.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import parse_hostport
from ..health import sip_options
from .files import Destination, address_list, dispatcher_list, node_allowlist

ROOT = Path(__file__).resolve().parents[2]
KAMAILIO_CFG = ROOT / "deploy" / "kamailio" / "kamailio.cfg"


def say(text: str) -> None:
    print(f"cluster: {text}", flush=True)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _dies_with(parent: int):
    """A ``preexec_fn``: the child gets SIGTERM when the runner dies, however it dies
    (``kill -9`` included), so no node or Kamailio outlives it holding its ports
    (Linux ``prctl(PR_SET_PDEATHSIG)``). If the runner is already gone, the child ends."""

    def preexec() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the runner died between fork and prctl
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


@dataclass
class Node:
    """One ``bridge serve`` child: its addresses, command, and process."""

    index: int
    host: str
    sip_port: int
    metrics_port: int
    rtp_ports: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None
    restart_at: float | None = None
    starts: int = 0
    stopped: bool = False
    exits: list[int] = field(default_factory=list)

    def start(self) -> None:
        self.starts += 1
        with open(self.log, "ab") as out:
            out.write(f"--- start {self.starts} ---\n".encode())
            out.flush()
            # Its own session: a Ctrl-C on the terminal reaches the runner only, which
            # then decides what each node gets.
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_dies_with(os.getpid()),
            )
        self.restart_at = None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)


def _node_env(args, kamailio_host: str) -> dict[str, str]:
    import json

    env = dict(os.environ)
    env["BRIDGE_ACCESS__ALLOWLIST"] = json.dumps(node_allowlist(kamailio_host))
    # Every INVITE comes from Kamailio's one address: the per-source limit is pike's job.
    env["BRIDGE_ACCESS__INVITE_RATE"] = "10000"
    env["BRIDGE_ACCESS__INVITE_BURST"] = "10000"
    env["BRIDGE_SIP__DRAIN_TIMEOUT"] = str(args.drain_timeout)
    if args.llm_server:
        env["BRIDGE_MODELS__LLM_BACKEND"] = "openai"
        env["BRIDGE_MODELS__OPENAI_BASE_URL"] = args.llm_server
    return env


def build_nodes(args, workdir: Path, kamailio_host: str) -> list[Node]:
    nodes = []
    env = _node_env(args, kamailio_host)
    for i in range(1, args.nodes + 1):
        sip_port = args.node_port_base + i
        low = args.rtp_base + (i - 1) * args.rtp_ports_per_node
        rtp = f"{low}-{low + args.rtp_ports_per_node - 1}"
        metrics_port = args.metrics_base + i
        argv = [
            sys.executable,
            "-m",
            "bridge",
            "serve",
            "--sip-listen",
            f"{args.node_host}:{sip_port}",
            "--rtp-ports",
            rtp,
            "--metrics-listen",
            f"{args.node_host}:{metrics_port}",
            "--agent",
            args.agent,
        ]
        if args.config:
            argv += ["--config", args.config]
        if args.preset:
            argv += ["--preset", args.preset]
        nodes.append(Node(i, args.node_host, sip_port, metrics_port, rtp, argv, env, workdir / f"node-{i}.log"))
    return nodes


def wait_ready(node: Node, timeout: float) -> None:
    """Until ``node`` answers OPTIONS with 200.

    Raises:
        RuntimeError: it exited or did not answer within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.proc is not None and node.proc.poll() is not None:
            raise RuntimeError(f"node {node.index} exited with {node.proc.returncode} while starting (see {node.log})")
        try:
            if sip_options(node.host, node.sip_port, timeout=0.5) == 200:
                return
        except (TimeoutError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"node {node.index} did not answer OPTIONS within {timeout:g} s (see {node.log})")


def kamailio_argv(args, workdir: Path, sip_host: str, sip_port: int) -> list[str]:
    binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
    mhost, mport = parse_hostport(args.kamailio_metrics, 9190)
    return [
        binary,
        "-f",
        str(args.kamailio_cfg),
        "-DD",
        "-E",
        "-m",
        "64",
        "-M",
        "8",
        "-w",
        str(workdir),
        "-Y",
        str(workdir / "run"),
        "-P",
        str(workdir / "kamailio.pid"),
        "-A",
        f"SIP_LISTEN=udp:{sip_host}:{sip_port}",
        "-A",
        f'DS_LIST="{workdir / "dispatcher.list"}"',
        "-A",
        f'ADDRESS_LIST="{workdir / "address.list"}"',
        "-A",
        f"METRICS_LISTEN=tcp:{mhost}:{mport}",
        "-A",
        f'CTL_SOCKET="unix:{workdir / "run" / "kamailio_ctl"}"',
        "-A",
        f"DS_ALG={args.algorithm}",
        "-A",
        f"DS_PING_INTERVAL={args.ping_interval}",
        "-A",
        f"FR_TIMEOUT_MS={args.fr_timeout_ms}",
        "-A",
        f"PIKE_DENSITY={args.pike_density}",
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="run_cluster.sh", description="Kamailio's dispatcher in front of N bridge nodes, in the foreground."
    )
    p.add_argument("--nodes", type=int, required=True, help="how many bridge serve nodes")
    p.add_argument(
        "--sip-listen", required=True, metavar="HOST:PORT", help="Kamailio's SIP UDP address (the origination URI's)"
    )
    p.add_argument("--agent", choices=["echo", "llm"], default="llm")
    p.add_argument(
        "--llm-server", metavar="URL", help="OpenAI-compatible server the nodes share, e.g. http://127.0.0.1:8080/v1"
    )
    p.add_argument("--config", help="YAML passed to every node (--config)")
    p.add_argument("--preset", help="model preset passed to every node")
    p.add_argument("--workdir", help="lists, logs and sockets (default: a new temporary directory)")
    p.add_argument("--node-host", default="127.0.0.1", help="address the nodes bind (default 127.0.0.1)")
    p.add_argument("--node-port-base", type=int, default=5070, help="node i listens on BASE+i (default 5070)")
    p.add_argument("--rtp-base", type=int, default=20000, help="first RTP port of node 1 (default 20000)")
    p.add_argument("--rtp-ports-per-node", type=int, default=2000)
    p.add_argument("--metrics-base", type=int, default=9100, help="node i's /metrics on BASE+i (default 9100)")
    p.add_argument(
        "--kamailio-metrics", default="127.0.0.1:9190", metavar="HOST:PORT", help="Kamailio's /metrics (xhttp_prom)"
    )
    p.add_argument(
        "--allow", action="append", default=[], metavar="CIDR", help="also accept INVITEs from here (repeatable)"
    )
    p.add_argument("--no-twilio-ranges", action="store_true", help="do not allow Twilio's signalling ranges")
    p.add_argument(
        "--algorithm",
        type=int,
        choices=[9, 10],
        default=10,
        help="dispatcher algorithm: 10 call load (fewest calls in progress), 9 weight",
    )
    p.add_argument("--weight", type=int, default=50, help="dispatcher weight of each node (1-100), for --algorithm 9")
    p.add_argument("--ping-interval", type=int, default=2, help="seconds between Kamailio's OPTIONS probes")
    p.add_argument("--fr-timeout-ms", type=int, default=1000, help="ms without a reply before a node counts as gone")
    p.add_argument(
        "--pike-density", type=int, default=60, help="requests per 2 s from one source before pike blocks it"
    )
    p.add_argument("--drain-timeout", type=float, default=30.0, help="seconds a draining node lets calls go on")
    p.add_argument("--restart-delay", type=float, default=5.0, help="seconds before a dead node is started again")
    p.add_argument("--start-timeout", type=float, default=180.0, help="seconds a node may take to answer OPTIONS")
    p.add_argument("--kamailio-cfg", default=str(KAMAILIO_CFG))
    args = p.parse_args(argv)
    if args.nodes < 1:
        p.error("--nodes must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        sip_host, sip_port = parse_hostport(args.sip_listen, 5060)
    except ValueError as exc:
        print(f"run_cluster: --sip-listen: {exc}", file=sys.stderr)
        return 2
    if not (shutil.which("kamailio") or Path("/usr/sbin/kamailio").exists()):
        print("run_cluster: kamailio is not installed (apt install kamailio)", file=sys.stderr)
        return 2
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bridge-cluster-")).resolve()
    (workdir / "run").mkdir(parents=True, exist_ok=True)
    nodes = build_nodes(args, workdir, sip_host)
    (workdir / "dispatcher.list").write_text(
        dispatcher_list([Destination(n.host, n.sip_port, args.weight, f"node{n.index}") for n in nodes])
    )
    (workdir / "address.list").write_text(address_list(args.allow, twilio=not args.no_twilio_ranges))

    state = {"stop": None}

    def on_signal(signum, _frame) -> None:
        state["stop"] = "drain" if signum == signal.SIGTERM else "stop"

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    kamailio = None
    try:
        say(f"workdir {workdir}")
        for node in nodes:
            node.start()
            say(
                f"node {node.index} starting: sip {node.host}:{node.sip_port}, rtp {node.rtp_ports}, metrics {node.host}:{node.metrics_port}, pid {node.proc.pid}"
            )
        for node in nodes:
            wait_ready(node, args.start_timeout)
            say(f"node {node.index} up")
        with open(workdir / "kamailio.log", "ab") as out:
            kamailio = subprocess.Popen(
                kamailio_argv(args, workdir, sip_host, sip_port),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_dies_with(os.getpid()),
            )
        probe_host = "127.0.0.1" if sip_host in ("0.0.0.0", "") else sip_host
        deadline = time.monotonic() + 20
        while True:
            if kamailio.poll() is not None:
                raise RuntimeError(f"kamailio exited with {kamailio.returncode} (see {workdir / 'kamailio.log'})")
            try:
                if sip_options(probe_host, sip_port, timeout=0.5) == 200:
                    break
            except (TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"kamailio did not answer OPTIONS on {probe_host}:{sip_port} (see {workdir / 'kamailio.log'})"
                )
            time.sleep(0.2)
        say(
            f"ready: kamailio on udp:{sip_host}:{sip_port} (pid {kamailio.pid}, metrics {args.kamailio_metrics}), {len(nodes)} node(s)"
        )
        while state["stop"] is None:
            time.sleep(0.2)
            if kamailio.poll() is not None:
                say(f"kamailio exited with {kamailio.returncode}: stopping the cluster")
                state["stop"] = "stop"
                break
            for node in nodes:
                _supervise(node, args.restart_delay)
    except RuntimeError as exc:
        print(f"run_cluster: {exc}", file=sys.stderr)
        state["stop"] = state["stop"] or "stop"
        failed = True
    else:
        failed = kamailio is not None and kamailio.poll() is not None
    _shutdown(nodes, kamailio, state["stop"] or "stop", args.drain_timeout)
    return 1 if failed else 0


def _supervise(node: Node, delay: float) -> None:
    if node.proc is None or node.stopped:
        return
    code = node.proc.poll()
    if code is None:
        if node.restart_at is not None:
            node.restart_at = None
        return
    now = time.monotonic()
    if node.restart_at is None:
        node.exits.append(code)
        if code == 0:
            say(f"node {node.index} exited 0 (drained): left down")
            node.stopped = True
            return
        say(
            f"node {node.index} died ({'signal ' + str(-code) if code < 0 else 'exit ' + str(code)}): restarting in {delay:g} s"
        )
        node.restart_at = now + delay
    elif now >= node.restart_at:
        node.start()
        say(f"node {node.index} restarted (pid {node.proc.pid})")


def _shutdown(nodes: list[Node], kamailio, how: str, drain_timeout: float) -> None:
    sig = signal.SIGTERM if how == "drain" else signal.SIGINT
    live = [n for n in nodes if n.proc is not None and n.proc.poll() is None]
    say(f"{'draining' if how == 'drain' else 'stopping'} {len(live)} node(s)")
    for node in live:
        node.signal(sig)
    deadline = time.monotonic() + drain_timeout + 15
    for node in live:
        try:
            node.proc.wait(max(0.1, deadline - time.monotonic()))
            say(f"node {node.index} stopped ({node.proc.returncode})")
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait()
            say(f"node {node.index} killed: it outlived its drain")
    if kamailio is not None and kamailio.poll() is None:
        kamailio.terminate()
        try:
            kamailio.wait(10)
        except subprocess.TimeoutExpired:
            kamailio.kill()
            kamailio.wait()
        say("kamailio stopped")
