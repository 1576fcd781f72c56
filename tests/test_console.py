"""The operator console in a real browser: Debian's chromium, driven by Playwright
(``executable_path``), loads the call list and a call page after a real SIP call on
``bridge serve`` with the embedded models: the transcript is there, the latency
waterfall is drawn, the recording's audio element loads. Without credentials the
console answers 401.

Set ``BRIDGE_CONSOLE_SCREENSHOT=docs/console.png`` to also write the README's screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import urllib.error
import urllib.request

import pytest

from bridge.client import place_call

from .conftest import TEST_CONFIG, BridgeProcess, chromium, free_port

pytestmark = pytest.mark.e2e

USER, PASSWORD, TOKEN = "operator", "s3cret-console", "console-token-123"


def status(url: str, headers: dict | None = None) -> int:
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10).status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_console_in_chromium_after_a_real_call(tmp_path, speech):
    from playwright.sync_api import sync_playwright

    browser_path = chromium()
    http = free_port(socket.SOCK_STREAM)
    config = {
        **TEST_CONFIG,
        "agent": {"reprompt_after_s": 0},
        "storage": {"url": f"sqlite:///{tmp_path}/records.db", "spool_dir": str(tmp_path / "spool"), "node": "console"},
        "recording": {"enabled": True, "dir": str(tmp_path / "recordings")},
        "console": {"username": USER, "password": PASSWORD, "token": TOKEN},
        "mediastreams": {
            "http_listen": f"127.0.0.1:{http}",
            "public_url": "https://bridge.example.test",
            "auth_token": "t",
        },
    }
    server = BridgeProcess(tmp_path, config)
    server.start()
    base = f"http://127.0.0.1:{http}"
    try:
        report = asyncio.run(
            place_call(f"sip:+14155550100@127.0.0.1:{server.sip_port}", [speech["saturday"]], None, reply_timeout=20)
        )
        assert report.answered and report.latencies
        assert status(f"{base}/calls") == 401
        assert (
            status(f"{base}/calls", {"Authorization": "Basic " + base64.b64encode(f"{USER}:wrong".encode()).decode()})
            == 401
        )
        assert status(f"{base}/calls", {"Authorization": f"Bearer {TOKEN}"}) == 200
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=browser_path, headless=True, args=["--no-sandbox"])
            try:
                context = browser.new_context(
                    http_credentials={"username": USER, "password": PASSWORD}, viewport={"width": 1280, "height": 900}
                )
                page = context.new_page()
                page.goto(f"{base}/calls?number=%2B14155550100")
                rows = page.locator("#calls tbody tr")
                for _ in range(50):  # the record's end is written just after the hang-up
                    if "caller_hangup" in rows.first.inner_text():
                        break
                    page.wait_for_timeout(200)
                    page.reload()
                assert (
                    rows.count() == 1
                    and "+14155550100" in rows.first.inner_text()
                    and "caller_hangup" in rows.first.inner_text()
                )
                rows.first.locator("a").click()
                page.wait_for_selector("#transcript")
                text = page.locator("#transcript").inner_text()
                assert "Agent: Hello, thanks for calling Maple Street Dental" in text, text
                assert "saturday" in text.lower() and text.count("Agent:") >= 2, text
                assert page.locator(".wf span.first_packet").count() >= 1, "no latency waterfall"
                audio = page.locator("audio#recording")
                assert audio.count() == 1
                duration = page.evaluate("""() => new Promise((resolve, reject) => {
                    const a = document.getElementById('recording');
                    if (a.readyState >= 1) return resolve(a.duration);
                    a.addEventListener('loadedmetadata', () => resolve(a.duration));
                    a.addEventListener('error', () => reject(new Error('audio error ' + (a.error && a.error.code))));
                    a.load();
                })""")
                assert duration > 2, f"the recording is {duration} s long"
                page.screenshot(path=str(tmp_path / "console.png"), full_page=True)
                if os.environ.get("BRIDGE_CONSOLE_SCREENSHOT"):
                    page.screenshot(path=os.environ["BRIDGE_CONSOLE_SCREENSHOT"], full_page=True)
                # The token works in a browser too: once in the URL, then from the cookie.
                plain = browser.new_context()
                assert plain.request.get(f"{base}/calls").status == 401  # (a page would show chromium's auth error)
                tab = plain.new_page()
                assert tab.goto(f"{base}/calls?token={TOKEN}").status == 200
                assert tab.goto(f"{base}/calls").status == 200 and "+14155550100" in tab.locator("#calls").inner_text()
            finally:
                browser.close()
    finally:
        assert server.stop() == 0
    assert (tmp_path / "console.png").stat().st_size > 10_000
    assert "Traceback" not in server.log_text()
