"""The container files: hadolint on both Dockerfiles, their shape (multi-stage, no
compiler and no root at run time, a health check), and ``bridge health`` (the
HEALTHCHECK) against a real node. scripts/container_proof.sh builds and calls the image
(minutes: not part of the suite; its figures are in docs/operations.md)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, BridgeProcess, free_port

pytestmark = pytest.mark.slow  # Kamailio, subprocesses

DOCKERFILES = ["Dockerfile", "Dockerfile.cuda"]


@pytest.mark.parametrize("name", DOCKERFILES + ["deploy/kamailio/Dockerfile"])
def test_hadolint_passes(name):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, "--failure-threshold", "info", name], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_runtime_stage_has_no_compiler_and_no_root(name):
    stages = (ROOT / name).read_text().split("\nFROM ")[1:]
    assert len(stages) == 2 and " AS build" in stages[0].splitlines()[0]
    runtime = stages[1]
    assert "build-essential" in stages[0] and "build-essential" not in runtime and "cmake" not in runtime
    assert "COPY --from=build /opt/bridge /opt/bridge" in runtime
    user = [line.split()[1] for line in runtime.splitlines() if line.startswith("USER ")]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert "HEALTHCHECK" in runtime and '"bridge", "health"' in runtime
    assert "VOLUME" in runtime and "/opt/bridge/models" in runtime  # models mounted, not baked in


def test_bridge_health_probes_sip_options(tmp_path):
    node = BridgeProcess(tmp_path, {"agent": {"kind": "echo"}})
    node.start()
    try:
        ok = subprocess.run(
            [sys.executable, "-m", "bridge", "health", "--sip", f"127.0.0.1:{node.sip_port}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert ok.returncode == 0 and "answered OPTIONS with 200" in ok.stdout
    finally:
        node.stop()
    dead = subprocess.run(
        [sys.executable, "-m", "bridge", "health", "--sip", f"127.0.0.1:{free_port()}", "--timeout", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert dead.returncode == 1 and dead.stderr.startswith("unhealthy:")
