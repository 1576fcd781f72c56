"""Settings: precedence of the sources."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT


def test_settings_precedence(monkeypatch, tmp_path):
    """Command line > environment (BRIDGE_*) > --config YAML > config/default.yaml."""
    from bridge.config import load_settings

    extra = tmp_path / "site.yaml"
    extra.write_text("sip: {public_host: 192.0.2.1, user_agent: site}\nagent: {name: Alex}\n")
    assert load_settings(extra).sip.public_host == "192.0.2.1"
    assert load_settings(extra).agent.greeting.startswith(
        "Hello, thanks for calling Maple Street Dental"
    )  # default.yaml underneath
    monkeypatch.setenv("BRIDGE_SIP__PUBLIC_HOST", "203.0.113.7")
    settings = load_settings(extra)
    assert (
        settings.sip.public_host == "203.0.113.7"
        and settings.sip.user_agent == "site"
        and settings.agent.name == "Alex"
    )
    assert load_settings(extra, {"sip": {"public_host": "198.51.100.1"}}).sip.public_host == "198.51.100.1"


BRIDGE = str(Path(sys.executable).with_name("bridge"))  # the real console script


def run_bridge(
    *args: str, config: str | None = None, tmp_path: Path | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    argv = [BRIDGE, "serve", *args]
    if config is not None:
        path = tmp_path / "bad.yaml"
        path.write_text(config)
        argv += ["--config", str(path)]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


CASES = [
    # (why, config YAML or None, extra options, the setting the message must name)
    ("unknown nested key", "agent:\n  greting: hi\n", [], "agent.greting"),
    ("unknown key in sip", "sip:\n  listn: 0.0.0.0:5060\n", [], "sip.listn"),
    ("unknown key two levels down", "access:\n  digest:\n    realmm: x\n", [], "access.digest.realmm"),
    ("a string where a mapping is expected", "agent: echo\n", [], "agent"),
    ("wrong type", "agent:\n  max_tokens: lots\n", [], "agent.max_tokens"),
    ("wrong choice", "media:\n  srtp: sometimes\n", [], "media.srtp"),
    ("rtp ports not a range", None, ["--rtp-ports", "abc"], "media.rtp_ports"),
    ("rtp ports inverted", None, ["--rtp-ports", "20000-10000"], "media.rtp_ports"),
    ("rtp ports with no even port", None, ["--rtp-ports", "10001-10001"], "media.rtp_ports"),
    ("bad host:port", None, ["--sip-listen", "0.0.0.0:99999"], "sip.listen"),
    ("host that is not an address", None, ["--sip-listen", "pbx:5060"], "sip.listen"),
    ("bad metrics address", None, ["--metrics-listen", "127.0.0.1:x"], "observability.metrics_listen"),
    ("TLS with no certificate", None, ["--sip-tls-listen", "127.0.0.1:5061"], "sip.tls_cert"),
    (
        "TLS certificate file missing",
        None,
        ["--sip-tls-listen", "127.0.0.1:5061", "--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"],
        "sip.tls_cert",
    ),
    ("model path missing", "models:\n  asr: /nonexistent/whisper\n", [], "models.asr"),
    ("public host not an IP", None, ["--public-host", "bridge.example.com"], "sip.public_host"),
    ("YAML that is not a mapping", "- just\n- a list\n", [], "bad.yaml"),
]


@pytest.mark.parametrize("why,config,options,setting", CASES, ids=[c[0] for c in CASES])
def test_bad_configuration_is_one_line_and_exit_2(tmp_path, why, config, options, setting):
    result = (
        run_bridge(*options, "--metrics-listen", "127.0.0.1:0", config=config, tmp_path=tmp_path)
        if "--metrics-listen" not in options
        else run_bridge(*options, config=config, tmp_path=tmp_path)
    )
    assert result.returncode == 2, (why, result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, (why, result.stderr)
    assert setting in lines[0] and "Traceback" not in result.stderr, lines[0]


def test_unloadable_tls_certificate_is_one_line(tmp_path):
    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    result = run_bridge(
        "--agent",
        "echo",
        "--sip-listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--sip-tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        str(tmp_path / "cert.pem"),
        "--tls-key",
        str(tmp_path / "key.pem"),
    )
    assert (
        result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "sip.tls_cert" in result.stderr
    ), result.stderr
