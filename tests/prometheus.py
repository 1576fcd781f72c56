"""Debian's ``prometheus`` for tests: started in a temp dir on a loopback port with
deploy/prometheus/prometheus.yml, its targets pointed at the test's nodes; queried over
its HTTP API. And the PromQL expressions of deploy/grafana/bridge-dashboard.json."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT, free_port, need

CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "bridge-dashboard.json"


class PrometheusServer:
    """Runs ``prometheus`` scraping ``targets`` ({job: ["host:port", ...]}) every second."""

    def __init__(self, workdir: Path, targets: dict[str, list[str]]) -> None:
        self.binary = need("prometheus")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        config = yaml.safe_load(CONFIG.read_text())
        config["global"]["scrape_interval"] = "1s"
        config["global"]["evaluation_interval"] = "1s"
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        assert set(targets) <= set(jobs), (targets, list(jobs))
        for name, addresses in targets.items():
            jobs[name]["static_configs"] = [{"targets": addresses}]
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port(socket.SOCK_STREAM)
        self.proc: subprocess.Popen | None = None

    def start(self) -> PrometheusServer:
        self.log = open(self.workdir / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        pytest.fail("prometheus did not start:\n" + (self.workdir / "prometheus.log").read_text())

    def query(self, expr: str) -> list[dict]:
        """Instant query: the ``result`` vector (raises on a PromQL error)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{expr}: {exc.read().decode()}") from None
        assert body["status"] == "success", body
        return body["data"]["result"]

    def targets_up(self) -> dict[str, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/targets", timeout=10) as r:
            active = json.load(r)["data"]["activeTargets"]
        return {t["labels"]["instance"]: t["health"] for t in active}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def finite(result: list[dict]) -> list[float]:
    """The finite sample values of an instant-query result (NaN: a quantile of no events)."""
    values = [float(series["value"][1]) for series in result]
    return [v for v in values if math.isfinite(v)]


def dashboard_queries(rate_interval: str = "2m") -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target in the dashboard, Grafana's variables
    replaced as Grafana would with node = All."""
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", rate_interval).replace("$node", ".*")
            out.append((panel["title"], expr))
    return out
