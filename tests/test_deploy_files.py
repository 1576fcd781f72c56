"""The shipped deployment files load in the tools that read them: Kamailio's config
(`kamailio -c`, with deploy/kamailio/dispatcher.list and an allowlist written by
bridge.cluster.files), Prometheus's (`promtool check config`), and the lists' formats."""

from __future__ import annotations

import json
import subprocess

from bridge.cluster.files import Destination, address_list, dispatcher_list

from .conftest import ROOT, need

DEPLOY = ROOT / "deploy"


def test_kamailio_cfg_checks_with_the_shipped_dispatcher_list(tmp_path):
    (tmp_path / "address.list").write_text(address_list(["192.0.2.10/32"]))
    result = subprocess.run(
        [
            need("kamailio"),
            "-c",
            "-f",
            str(DEPLOY / "kamailio" / "kamailio.cfg"),
            "-A",
            f'DS_LIST="{DEPLOY / "kamailio" / "dispatcher.list"}"',
            "-A",
            f'ADDRESS_LIST="{tmp_path / "address.list"}"',
            "-A",
            f'CTL_SOCKET="unix:{tmp_path / "ctl"}"',
            "-A",
            "SIP_LISTEN=udp:127.0.0.1:5060",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "config file ok" in result.stdout + result.stderr, result.stdout + result.stderr


def test_list_files():
    text = dispatcher_list([Destination("10.0.0.11", 5060, 50, "a"), Destination("2001:db8::5", 5070)])
    assert "1 sip:10.0.0.11:5060;transport=udp 0 0 weight=50;duid=a" in text
    assert "1 sip:[2001:db8::5]:5070;transport=udp 0 0 weight=50;duid=node2" in text
    allow = address_list(["192.0.2.10", "198.51.100.0/24"])
    assert "1 54.172.60.0 30 0 twilio" in allow  # Twilio's signalling ranges (config/twilio-signaling.yaml)
    assert "1 192.0.2.10 32 0 operator" in allow and "1 198.51.100.0 24 0 operator" in allow
    assert "twilio" not in address_list(["192.0.2.10"], twilio=False).split("\n", 1)[1]


def test_prometheus_config_checks():
    result = subprocess.run(
        [need("promtool"), "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_panels_have_queries_on_the_prometheus_datasource():
    dashboard = json.loads((DEPLOY / "grafana" / "bridge-dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    titles = {p["title"] for p in panels}
    for needed in (
        "Calls by outcome",
        "Voice-to-voice p50 / p95",
        "Per stage p95",
        "Barge-ins",
        "RTP dropped by reason",
        "SIP responses sent by code",
        "Open file descriptors",
        "Resident memory",
        "CPU",
        "Database write failures",
    ):
        assert needed in titles
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]


def test_lists_command_writes_both_files(tmp_path):
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge.cluster",
            "lists",
            "--node",
            "10.0.0.11:5060",
            "--node",
            "10.0.0.12,30",
            "--allow",
            "192.0.2.10/32",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "1 sip:10.0.0.12:5060;transport=udp 0 0 weight=30;duid=node2" in (tmp_path / "dispatcher.list").read_text()
    assert "1 192.0.2.10 32 0 operator" in (tmp_path / "address.list").read_text()
    bad = subprocess.run(
        [sys.executable, "-m", "bridge.cluster", "lists", "--allow", "not-a-net", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "not-a-net" in bad.stderr


def test_compose_stack_is_consistent():
    """deploy/compose.yaml (not run here: no Docker engine): its mounts exist, and the
    ports agree with the dispatcher list, the Prometheus targets and Grafana's datasource."""
    import re

    import yaml

    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"llm", "node1", "node2", "kamailio", "prometheus", "grafana"}
    for name, service in services.items():
        assert service["network_mode"] == "host", name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                path = (DEPLOY / source).resolve()
                assert path.exists() or path.name == "address.list", (
                    name,
                    source,
                )  # address.list: `bridge.cluster lists`
    node_sip = {
        int(s["command"][s["command"].index("--sip-listen") + 1].split(":")[1])
        for n, s in services.items()
        if n.startswith("node")
    }
    node_metrics = {
        s["command"][s["command"].index("--metrics-listen") + 1] for n, s in services.items() if n.startswith("node")
    }
    listed = {
        int(p)
        for p in re.findall(r"sip:127\.0\.0\.1:(\d+)", (DEPLOY / "kamailio" / "dispatcher.local.list").read_text())
    }
    assert node_sip == listed
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in prom["scrape_configs"]}
    assert set(jobs["bridge"]) == node_metrics
    assert (
        jobs["kamailio"] == ["127.0.0.1:9190"]
        and "METRICS_LISTEN=tcp:127.0.0.1:9190" in services["kamailio"]["command"]
    )
    node_env = services["node1"]["environment"]
    assert (
        node_env["BRIDGE_MODELS__OPENAI_BASE_URL"] == "http://127.0.0.1:8080/v1"
        and "127.0.0.1:8080" in services["llm"]["command"]
    )
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert datasource["datasources"][0]["url"] == "http://127.0.0.1:9095"
    assert "--web.listen-address=127.0.0.1:9095" in services["prometheus"]["command"]
