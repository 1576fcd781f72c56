"""'Talk to this agent' in a real browser over a real peer connection.

ICE never offers loopback addresses (aioice leaves 127.0.0.1 out, and so does
chromium), so ``bridge serve`` and Debian's chromium both run inside a network namespace
whose only address besides ``lo`` is the test's own veth end (198.18.0.0/15). Nothing
else is ever a target, and no STUN server is contacted. Playwright drives chromium
through a wrapper that enters the namespace. The fake microphone plays a WAV of spoken
questions (``--use-file-for-fake-audio-capture``).

Asserted: the page shows the greeting and the answer; the agent's audio reached the
page (recorded there with WebAudio, then transcribed); the call record has the turns
with leg ``webrtc`` and the keypad's digit; a question spoken over the greeting stops
it; a wrong credential gets 401, a malformed offer 400 with its reason, and a call over
the per-caller cap is refused with a clear message on the page.

Set ``BRIDGE_TALK_SCREENSHOT=docs/talk.png`` to also write the docs' screenshot.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import wave

import numpy as np
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from bridge.audio.resample import resample_all
from bridge.client import place_call
from bridge.records.schema import Call

from .conftest import TEST_CONFIG, BridgeProcess, chromium, free_port, missing
from .netns import Netns

pytestmark = pytest.mark.e2e

TOKEN = "talk-token-42"


def caller_wav(path, parts: list[tuple[float, str]], tail: float = 25.0) -> str:
    """A 16 kHz WAV: for each ``(silence seconds, text)`` that much silence, then the text
    spoken by espeak-ng; then ``tail`` seconds of silence."""
    pcm = []
    for silence, text in parts:
        pcm.append(np.zeros(int(silence * 16000), np.int16))
        out = subprocess.run(["espeak-ng", "-s", "150", "--stdout", text], check=True, capture_output=True).stdout
        with wave.open(io.BytesIO(out)) as w:
            rate, data = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), np.int16)
        pcm.append(resample_all(data, rate, 16000))
    pcm.append(np.zeros(int(tail * 16000), np.int16))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.concatenate(pcm).tobytes())
    return str(path)


@pytest.fixture(scope="module")
def talk_server(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        missing("espeak-ng not installed")
    browser = chromium()
    ns = Netns()
    try:
        host_addr, addr = ns.veth()
        work = tmp_path_factory.mktemp("talk")
        http = free_port(socket.SOCK_STREAM)
        config = {
            **TEST_CONFIG,
            "agent": {"reprompt_after_s": 0},
            "storage": {"url": f"sqlite:///{work}/records.db", "spool_dir": str(work / "spool"), "node": "talk"},
            "console": {"token": TOKEN},
            "access": {"max_calls_per_caller": 1},
            "mediastreams": {
                "http_listen": f"{addr}:{http}",
                "public_url": "https://bridge.example.test",
                "auth_token": "t",
            },
        }
        server = BridgeProcess(work, config, listen_host=addr, prefix=ns.prefix)
        server.start()
        wrapper = work / "chromium-in-netns"
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {ns.name} {browser} "$@"\n')
        wrapper.chmod(0o755)
        try:
            yield {
                "base": f"http://{addr}:{http}",
                "server": server,
                "db": f"sqlite:///{work}/records.db",
                "work": work,
                "chromium": str(wrapper),
                "addr": addr,
                "host_addr": host_addr,
            }
        finally:
            assert server.stop() == 0
            assert "Traceback" not in server.log_text()
    finally:
        ns.delete()


def launch(pw, talk_server, wav: str):
    return pw.chromium.launch(
        executable_path=talk_server["chromium"],
        headless=True,
        args=[
            "--no-sandbox",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}%noloop",
            "--autoplay-policy=no-user-gesture-required",
            "--disable-features=WebRtcHideLocalIpsWithMdns",
            # A microphone needs a secure context: https, or this origin declared secure (the test has no certificate).
            f"--unsafely-treat-insecure-origin-as-secure={talk_server['base']}",
        ],
    )


def wait(page, talk_server, js: str, timeout_s: float) -> None:
    """``page.wait_for_function`` that, on timeout, says what the page and the server saw."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(js, timeout=timeout_s * 1000)
    except PlaywrightTimeout:
        seen = page.evaluate(
            "() => ({state: window.bridgeTalk.state, error: window.bridgeTalk.error, lines: window.bridgeTalk.lines})"
        )
        status = page.locator("#status").inner_text()
        log = "".join(line for line in talk_server["server"].lines if "webrtc" in line.lower() or "call " in line)[
            -4000:
        ]
        raise AssertionError(f"page: {seen}, status {status!r}\nserver:\n{log}") from None


def record(talk_server, call_id: str) -> dict:
    engine = create_engine(talk_server["db"])
    for _ in range(100):
        with Session(engine) as session:
            call = session.get(Call, call_id)
            if call is not None and call.ended_at is not None:
                return {
                    "leg": call.leg,
                    "dtmf": call.dtmf,
                    "end_reason": call.end_reason,
                    "turns": [(t.caller_text, t.agent_text, t.barged_in) for t in call.turns],
                }
        time.sleep(0.2)
    raise AssertionError(f"no ended record for {call_id}")


def heard(engines, samples: list[float], rate: int) -> str:
    pcm = (np.clip(np.asarray(samples, np.float32), -1, 1) * 32767).astype(np.int16)
    return engines.asr.transcribe(resample_all(pcm, rate, 8000))


def test_talk_to_the_agent_from_the_browser(talk_server, engines, speech, tmp_path):
    from playwright.sync_api import sync_playwright

    wav = caller_wav(
        tmp_path / "caller.wav", [(6.0, "What time do you open on Saturday?"), (7.0, "Thank you, goodbye.")]
    )
    with sync_playwright() as pw:
        browser = launch(pw, talk_server, wav)
        try:
            page = browser.new_context(viewport={"width": 1100, "height": 800}).new_page()
            page.goto(f"{talk_server['base']}/talk/default?token={TOKEN}")
            page.click("#start")
            wait(
                page,
                talk_server,
                """() => {
                const l = window.bridgeTalk.lines, i = l.findIndex(x => x[0] === 'caller' && /saturday/i.test(x[1]));
                return i >= 0 && l.slice(i + 1).some(x => x[0] === 'agent' && x[1].length > 5);
            }""",
                60,
            )
            talk = page.evaluate(
                "() => ({lines: window.bridgeTalk.lines, latencies: window.bridgeTalk.latencies, peak: window.bridgeTalk.peak, callId: window.bridgeTalk.callId})"
            )
            text = page.locator("#transcript").inner_text()
            assert "Agent: Hello, thanks for calling" in text and "You: " in text, text
            assert page.locator(".wf span.first_packet").count() >= 1, "no latency waterfall"
            page.click(".digit[data-digit='5']")
            page.wait_for_timeout(500)
            page.screenshot(path=str(tmp_path / "talk.png"), full_page=True)
            if os.environ.get("BRIDGE_TALK_SCREENSHOT"):
                page.screenshot(path=os.environ["BRIDGE_TALK_SCREENSHOT"], full_page=True)
            samples = page.evaluate("() => window.bridgeTalk.samples()")
            rate = page.evaluate("() => window.bridgeTalk.rate")
            # "Thank you, goodbye.": the agent says goodbye and ends the call (end_call): the page hears of it.
            wait(page, talk_server, "() => window.bridgeTalk.state === 'ended'", 45)
            assert "Call ended (agent)" in page.locator("#status").inner_text()
            link = page.locator("#call-link")
            assert link.is_visible() and link.get_attribute("href") == f"/calls/{talk['callId']}"
        finally:
            browser.close()
    assert talk["peak"] > 0.05, "no agent audio reached the page"
    words = heard(engines, samples, rate).lower()
    assert "calling" in words or "maple" in words or "dental" in words, words  # the greeting, as the page recorded it
    rec = record(talk_server, talk["callId"])
    assert rec["leg"] == "webrtc" and "5" in rec["dtmf"], rec
    assert rec["turns"][0][0] is None and "thanks for calling" in rec["turns"][0][1].lower(), rec["turns"]
    assert any(c and "saturday" in c.lower() and a for c, a, _ in rec["turns"]), rec["turns"]
    v2v = [
        float(m)
        for m in re.findall(
            rf"latency call={re.escape(talk['callId'])} voice_to_voice=([\d.]+)", talk_server["server"].log_text()
        )
    ]
    assert v2v, "no latency line for the browser call"
    # The SIP leg on the same server, the same question, the same stage log: the figure to compare.
    sip = asyncio.run(
        place_call(
            f"sip:+14155550100@{talk_server['addr']}:{talk_server['server'].sip_port}",
            [speech["saturday"]],
            None,
            local_host=talk_server["host_addr"],
            reply_timeout=20,
        )
    )
    assert sip.answered
    sip_v2v = [
        float(m)
        for c, m in re.findall(r"latency call=(\S+) voice_to_voice=([\d.]+)", talk_server["server"].log_text())
        if not c.startswith("webrtc-")
    ]
    print(f"voice-to-voice, server stage log: webrtc {v2v}, sip {sip_v2v}")


def test_a_question_over_the_greeting_stops_it(talk_server, tmp_path):
    from playwright.sync_api import sync_playwright

    wav = caller_wav(tmp_path / "barge.wav", [(1.2, "Where is the clinic?")])
    with sync_playwright() as pw:
        browser = launch(pw, talk_server, wav)
        try:
            page = browser.new_context().new_page()
            page.goto(f"{talk_server['base']}/talk/default?token={TOKEN}")
            page.click("#start")
            wait(
                page,
                talk_server,
                """() => {
                const l = window.bridgeTalk.lines, i = l.findIndex(x => x[0] === 'caller');
                return i >= 0 && l.slice(i + 1).some(x => x[0] === 'agent');
            }""",
                60,
            )
            call_id = page.evaluate("() => window.bridgeTalk.callId")
            page.wait_for_timeout(3000)
            page.click(
                ".digit[data-digit='0']"
            )  # transfer.dtmf: there is no transfer on this leg, and the agent says so
            wait(
                page,
                talk_server,
                "() => window.bridgeTalk.lines.some(l => l[0] === 'agent' && /not available on a browser call/.test(l[1]))",
                20,
            )
            page.click("#stop")
            wait(page, talk_server, "() => window.bridgeTalk.state === 'ended'", 15)
        finally:
            browser.close()
    rec = record(talk_server, call_id)
    greeting = rec["turns"][0]
    assert greeting[0] is None and greeting[2], f"the greeting was not cut: {rec['turns']}"
    assert "Maple Street Dental" not in greeting[1] or len(greeting[1]) < 60, greeting


def post(url: str, body: bytes, headers: dict) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, data=body, headers=headers, method="POST"), timeout=20
        ) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"raw": raw.decode(errors="replace")}


def test_wrong_credentials_malformed_offers_and_calls_over_the_cap_are_refused(talk_server, tmp_path):
    from playwright.sync_api import sync_playwright

    base = talk_server["base"]
    offer = json.dumps({"type": "offer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"}).encode()
    assert post(f"{base}/talk/default/offer", offer, {"Content-Type": "application/json"})[0] == 401
    assert (
        post(
            f"{base}/talk/default/offer", offer, {"Content-Type": "application/json", "Authorization": "Bearer wrong"}
        )[0]
        == 401
    )
    auth = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    status, body = post(f"{base}/talk/default/offer", offer, auth)
    assert status == 400 and body["detail"].startswith("malformed offer"), (status, body)
    status, body = post(f"{base}/talk/default/offer", b"not json", auth)
    assert status == 400 and "JSON" in body["detail"], body
    assert post(f"{base}/talk/nowhere/offer", offer, auth)[0] == 404
    wav = caller_wav(tmp_path / "quiet.wav", [(0.5, "Hello.")])
    with sync_playwright() as pw:
        browser = launch(pw, talk_server, wav)
        try:
            context = browser.new_context()
            first, second = context.new_page(), context.new_page()
            assert first.goto(f"{base}/talk/default").status == 401
            first.goto(f"{base}/talk/default?token={TOKEN}")
            first.click("#start")
            wait(first, talk_server, "() => window.bridgeTalk.state === 'connected'", 30)
            second.goto(f"{base}/talk/default")  # the token is in the cookie now
            second.click("#start")
            wait(second, talk_server, "() => window.bridgeTalk.error !== null", 30)
            status = second.locator("#status").inner_text()
            assert "Refused (503)" in status and "as many calls as one caller may" in status, status
            first.click("#stop")
            wait(first, talk_server, "() => window.bridgeTalk.state === 'ended'", 15)
        finally:
            browser.close()
    assert "Traceback" not in talk_server["server"].log_text()
