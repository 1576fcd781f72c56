"""Settings: precedence of the sources."""

from __future__ import annotations



def test_settings_precedence(monkeypatch, tmp_path):
    """Command line > environment (BRIDGE_*) > --config YAML > config/default.yaml."""
    from bridge.config import load_settings

    extra = tmp_path / "site.yaml"
    extra.write_text("sip: {public_host: 192.0.2.1, user_agent: site}\nagent: {name: Alex}\n")
    assert load_settings(extra).sip.public_host == "192.0.2.1"
    assert load_settings(extra).agent.greeting.startswith("Hello, thanks for calling Maple Street Dental")  # default.yaml underneath
    monkeypatch.setenv("BRIDGE_SIP__PUBLIC_HOST", "203.0.113.7")
    settings = load_settings(extra)
    assert settings.sip.public_host == "203.0.113.7" and settings.sip.user_agent == "site" and settings.agent.name == "Alex"
    assert load_settings(extra, {"sip": {"public_host": "198.51.100.1"}}).sip.public_host == "198.51.100.1"
