"""Scale-out: Debian's kamailio (deploy/kamailio/kamailio.cfg, dispatcher) in front of
two echo nodes started by scripts/run_cluster.sh, with sipp calls through it on 127.0.0.1.

What is checked: both nodes take calls, RTP goes straight to the node that answered (its
SDP, its port range), the route set keeps Kamailio in the dialog; a SIGTERM'd node drains
(its calls finish or get its BYE at the deadline, new calls land on the other node, none
fail); a ``kill -9``'d node is marked down within the keepalive interval, calls succeed
on the survivor, and once restarted it is marked up and takes calls again; the INVITE
allowlist and pike; and the sipp scenario itself, against a 180 that arrives after the 200."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from .cluster import ROOT, Cluster, sipp_calls
from .waiting import eventually

pytestmark = pytest.mark.slow  # Kamailio and node processes

PING = 1  # seconds between Kamailio's OPTIONS probes in these tests
FR_MS = 1000


def _rtp_closed(log: str) -> list[tuple[int, int]]:
    """(received, sent with audio) RTP packets of each call a node's log shows closed."""
    return [
        (int(r), int(s))
        for r, s in re.findall(r"rtp port \d+ closed: (\d+) packets received, \d+ sent \((\d+) with agent audio\)", log)
    ]


def _answered_by_both(cluster) -> bool | None:
    """``True`` once each node has answered at least one call (its log says so)."""
    return True if all(" answered " in cluster.node_log(i) for i in (1, 2)) else None


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(
        tmp_path / "cluster",
        2,
        [
            "--agent",
            "echo",
            "--allow",
            "127.0.0.0/8",
            "--ping-interval",
            str(PING),
            "--fr-timeout-ms",
            str(FR_MS),
            "--drain-timeout",
            "3",
            "--restart-delay",
            "4",
        ],
    )
    c.start()
    yield c
    code = c.stop()
    out = c.output()
    assert code == 0, out + c.logs()
    # SIGTERM: the nodes drain and stop first, Kamailio last.
    assert out.index("kamailio stopped") > max(
        out.index(f"node {i} stopped") for i in (1, 2) if f"node {i} stopped" in out
    ), out
    for i in (1, 2):
        assert "Traceback" not in c.node_log(i), c.node_log(i)[-4000:]


def test_calls_spread_over_both_nodes_media_direct(cluster, tmp_path):
    run = sipp_calls(cluster, tmp_path / "sipp", calls=10, rate=5, trace_msg=True)
    assert run.returncode == 0 and run.failed == 0, run.errors
    per_port = run.per_port()
    print("calls per node:", per_port)
    assert set(per_port) == {cluster.node_port(1), cluster.node_port(2)}, per_port
    assert min(per_port.values()) >= 3, per_port
    # Kamailio record-routed the dialog, and the node copied Record-Route into its 200.
    oks = re.findall(r"SIP/2\.0 200 OK\r?\n(?:.*\r?\n)*?(?=\r?\n)", run.messages)
    assert oks
    assert re.search(rf"Record-Route: <sip:127\.0\.0\.1:{cluster.sip_port};lr>", run.messages), run.messages[:3000]
    # The caller's BYE follows the route set (Route: Kamailio) to the node's Contact.
    assert re.search(
        rf"BYE sip:bridge@127\.0\.0\.1:{cluster.node_port(1)}|BYE sip:bridge@127\.0\.0\.1:{cluster.node_port(2)}",
        run.messages,
    )
    assert re.search(rf"Route: <sip:127\.0\.0\.1:{cluster.sip_port};lr>", run.messages)
    # Media: each 200's SDP points at the node that answered, in its own RTP range (Kamailio
    # never touches the SDP or the RTP).
    answers = re.findall(
        r"Contact: <sip:bridge@127\.0\.0\.1:(\d+)>(?:.*\r?\n)*?c=IN IP4 (\S+)\r?\n(?:.*\r?\n)*?m=audio (\d+)",
        run.messages,
    )
    assert len(answers) >= 10, run.messages[:3000]
    for port, host, media in answers:
        node = 1 if int(port) == cluster.node_port(1) else 2
        assert host == "127.0.0.1"
        assert int(media) in cluster.node_rtp(node), (port, media)
    # The echo nodes received the callers' RTP themselves and sent it back: each call a
    # node answered closed its RTP port with packets counted both ways (6 s of sipp's
    # g711a.pcap is ~250 packets), and none timed out.
    for i in (1, 2):
        port = cluster.node_port(i)
        closed = eventually(
            lambda i=i, port=port: (
                _rtp_closed(cluster.node_log(i)) if len(_rtp_closed(cluster.node_log(i))) >= per_port[port] else None
            ),
            10,
        )
        assert closed is not None and len(closed) == per_port[port], cluster.node_log(i)[-3000:]
        assert all(received >= 100 and sent >= 100 for received, sent in closed), closed
        assert "no packet for" not in cluster.node_log(i)


def test_sigterm_drains_a_node_without_failed_calls(cluster, tmp_path):
    import threading

    box = {}
    t = threading.Thread(
        target=lambda: box.setdefault(
            "run", sipp_calls(cluster, tmp_path / "sipp", calls=16, rate=2, limit=16, trace_msg=True)
        )
    )
    t.start()
    # Once both nodes have taken calls, drain node 1 (drain deadline 3 s, calls last 6 s).
    assert eventually(lambda: _answered_by_both(cluster), 30), cluster.output()
    stop_at = time.monotonic()
    os.kill(cluster.node_pid(1), signal.SIGTERM)
    t.join(120)
    run = box["run"]
    print("calls per node:", run.per_port(), "ended by the node:", len(run.ended_by_node))
    assert run.returncode == 0 and run.failed == 0 and run.successful == 16, run.errors
    assert cluster.wait_line("node 1 exited 0 (drained): left down", 15, after=stop_at), cluster.output()
    assert "node 1 restarted" not in cluster.output()
    # Node 1's calls in progress got its BYE at the deadline (through Kamailio); node 2's did not.
    log1 = cluster.node_log(1)
    node1_calls = {c for c, p in run.answered.items() if p == cluster.node_port(1)}
    assert node1_calls and run.ended_by_node, (run.answered, run.ended_by_node)
    assert run.ended_by_node <= node1_calls
    assert "drain deadline reached" in log1
    # ...and that BYE came through Kamailio (the route set's first hop), not straight from the node.
    byes = re.findall(
        r"received \[\d+\] bytes :\r?\n\s*BYE sip:sipp@[^\n]*\n\s*Via: SIP/2\.0/UDP ([\d.]+):(\d+)", run.messages
    )
    assert byes and all(int(port) == cluster.sip_port for _, port in byes), byes or run.messages[-3000:]
    # Calls that arrived after the drain began all landed on node 2: node 1 answered none
    # after it logged the drain, and node 2 answered the rest (none failed, above).
    draining = log1.index("draining:")
    assert " answered " not in log1[draining:], log1[draining:][:3000]
    node2_calls = {c for c, p in run.answered.items() if p == cluster.node_port(2)}
    assert len(node2_calls) > len(node1_calls), run.answered
    assert cluster.wait_kamailio(f"node down: sip:127.0.0.1:{cluster.node_port(1)}", 10), cluster.kamailio_log()[-3000:]


def test_kill9_marks_node_down_then_up_again(cluster, tmp_path):
    """Calls flow (2 per second, 6 s each) while node 1 is killed: the calls it held are
    lost with it (their BYE times out in Kamailio: 408), every call placed after the
    kill is answered by node 2 (an INVITE to the dead node fails over after one
    FR_TIMEOUT); node 1 is marked down within a probe interval plus a probe timeout,
    restarted by the runner, marked up, and takes calls again."""
    import threading

    box = {}
    t = threading.Thread(
        target=lambda: box.setdefault("run", sipp_calls(cluster, tmp_path / "during", calls=16, rate=2, limit=16))
    )
    t.start()
    assert eventually(lambda: _answered_by_both(cluster), 30), cluster.output()
    os.kill(cluster.node_pid(1), signal.SIGKILL)
    killed = time.monotonic()
    down = cluster.wait_kamailio(f"node down: sip:127.0.0.1:{cluster.node_port(1)}", 15)
    assert down is not None, cluster.kamailio_log()[-3000:]
    t.join(120)
    run = box["run"]
    lost = 16 - run.successful
    node1_before = {c for c, p in run.answered.items() if p == cluster.node_port(1)}  # the lost calls are among these
    print(
        f"marked down {down - killed:.2f} s after kill -9 (probe every {PING} s, {FR_MS} ms timeout); "
        f"calls: {run.successful} ok, {lost} lost (node 1 answered {len(node1_before)}, before the kill or after its restart); "
        f"per node {run.per_port()}"
    )
    # Within the keepalive interval plus one probe's timeout (and this poll's slack).
    assert down - killed <= PING + FR_MS / 1000 + 1.0
    assert node1_before and lost <= len(node1_before), (run.answered, run.successful)
    # The 8 calls placed in the 4 s between the kill and the restart all went to node 2
    # (an INVITE to the dead node fails over after one FR_TIMEOUT), besides its share before.
    restarted = cluster.wait_line("node 1 restarted", 20, after=killed)
    assert restarted is not None, cluster.output()
    answered_by_2 = sum(1 for p in run.answered.values() if p == cluster.node_port(2))
    assert answered_by_2 >= 8, run.answered
    # The runner restarted it (after --restart-delay); Kamailio's probe marks it up.
    assert cluster.wait_kamailio(f"node up: sip:127.0.0.1:{cluster.node_port(1)}", 30), cluster.kamailio_log()[-3000:]
    run = sipp_calls(cluster, tmp_path / "after_return", calls=8, rate=4)
    assert run.returncode == 0 and run.failed == 0, run.errors
    assert run.per_port().get(cluster.node_port(1), 0) >= 2, run.per_port()


def test_allowlist_and_pike(tmp_path):
    """Only allowed sources reach a node (403 from Kamailio otherwise); a source over
    pike's rate is dropped and logged; other sources go on."""
    c = Cluster(
        tmp_path / "cluster",
        1,
        [
            "--agent",
            "echo",
            "--allow",
            "127.0.0.2/32",
            "--allow",
            "127.0.0.3/32",
            "--pike-density",
            "3",
            "--drain-timeout",
            "2",
            "--ping-interval",
            str(PING),
        ],
    ).start()
    try:
        refused = sipp_calls(
            c, tmp_path / "refused", calls=1, source="127.0.0.1", scenario=ROOT / "tests" / "sipp" / "expect_403.xml"
        )
        assert refused.returncode == 0, refused.errors
        assert "refused: not in the allowlist" in c.kamailio_log()
        assert "INVITE" not in c.node_log(1), c.node_log(1)
        ok = sipp_calls(c, tmp_path / "allowed", calls=2, rate=2, source="127.0.0.2")
        assert ok.returncode == 0 and ok.failed == 0, ok.errors
        # 40 INVITEs at 40/s from 127.0.0.3: pike lets the first ones through and drops the
        # rest (sipp retransmits into the block; within 10 s most never get an answer).
        flood = sipp_calls(c, tmp_path / "flood", calls=40, rate=40, source="127.0.0.3", timeout=10)
        assert flood.successful < 40, (flood.successful, flood.failed)
        assert c.kamailio_log().count("BLOCKing ip 127.0.0.3") >= 1
        # Another source is not affected.
        ok = sipp_calls(c, tmp_path / "after_flood", calls=1, source="127.0.0.2")
        assert ok.returncode == 0 and ok.failed == 0, ok.errors
    finally:
        assert c.stop() == 0, c.output() + c.logs()


async def test_the_call_scenario_ignores_a_180_after_the_200(tmp_path):
    """The scenario the tests above rely on: Kamailio's UDP workers may forward a node's
    180 after its 200 (no order between two processes). Here the scripted UAS on 127.0.0.1
    sends its 180 right behind its 200 and again after the ACK: the call still completes,
    and the caller's RTP reaches it. (With the caller's RTP started in a <nop> after the
    ACK, the first 180 arrived at the nop and sipp aborted the call: the drain test failed
    that way once.)"""
    import asyncio
    from types import SimpleNamespace

    from .sip_uas import ScriptedUas

    uas = ScriptedUas("udp", hold=1.0, late_180=True)
    port = await uas.start()
    try:
        run = await asyncio.to_thread(
            sipp_calls, SimpleNamespace(sip_port=port), tmp_path / "sipp", calls=1, timeout=30
        )
        await asyncio.wait_for(uas.done.wait(), 10)
    finally:
        uas.close()
    assert run.returncode == 0 and run.failed == 0 and run.successful == 1, run.errors
    assert uas.rtp_in > 0 and uas.rtp_bad == 0, (uas.rtp_in, uas.rtp_bad)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_kill9_of_the_runner_takes_kamailio_and_the_nodes_with_it(tmp_path):
    """run_cluster.sh killed with SIGKILL cannot stop its children itself: they die with
    it (PR_SET_PDEATHSIG) and give back Kamailio's and the nodes' SIP ports."""
    c = Cluster(tmp_path / "cluster", 2, ["--agent", "echo", "--allow", "127.0.0.0/8"])
    c.start()
    ports = [c.sip_port, c.node_port(1), c.node_port(2)]
    pids = [c.node_pid(1), c.node_pid(2)]
    assert not any(_port_free(p) for p in ports), ports
    c.proc.kill()
    c.proc.wait(10)

    def alive() -> list[int]:
        return [
            pid
            for pid in pids
            if os.path.exists(f"/proc/{pid}") and "zombie" not in open(f"/proc/{pid}/status").read().lower()
        ]

    # A node gives its port back as it shuts down and exits a moment later: wait for both.
    gone = eventually(lambda: all(_port_free(p) for p in ports) and not alive(), 20)
    freed = all(_port_free(p) for p in ports)
    assert gone and freed, (ports, [p for p in ports if not _port_free(p)], alive(), c.logs()[-2000:])
