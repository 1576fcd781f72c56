"""Routing by called number on a real ``bridge serve``: two numbers reach two agent
profiles (two greetings) over SIP and over Media Streams, the models load once for
both, and a number with no route is refused (SIP 603, close code 1008, TwiML
``<Reject>``)."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.parse
import urllib.request

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from twilio.request_validator import RequestValidator

from bridge.client import place_call
from bridge.records.schema import Call, Turn
from bridge.routing import number_key

from .conftest import TEST_CONFIG, BridgeProcess, free_port
from .twilio_ms import TwilioStream

pytestmark = pytest.mark.e2e

TOKEN = "routetoken"
PUBLIC = "https://bridge.example.test"
CLINIC, SALES, NOBODY = "+14155550100", "+14155550199", "+14155550000"
ROUTES = {
    "numbers": {CLINIC: "default", SALES: "sales"},
    "profiles": {
        "sales": {
            "agent": {"greeting": "Thanks for calling the sales team. What can I get you?", "name": "Ann"},
            "transfer": {"target": "sip:sales-desk@127.0.0.1"},
        }
    },
    "unrouted": "reject",
    "reject_status": 603,
}


def test_number_keys():
    assert number_key("+1 (415) 555-0100") == number_key("14155550100") == "14155550100"
    assert number_key("Agent") == "agent" and number_key(None) == ""


def greetings(url: str) -> dict[str, tuple[str, str, str]]:
    """call id -> (leg, route, first agent line)."""
    engine = create_engine(url)
    with Session(engine) as session:
        out = {}
        for call in session.scalars(select(Call)).all():
            first = session.scalars(select(Turn).where(Turn.call_id == call.call_id).order_by(Turn.seq)).first()
            out[call.call_id] = (call.leg, call.route, call.called, first.agent_text if first else "")
    engine.dispose()
    return out


def test_two_numbers_two_agents_on_both_legs_and_the_rest_refused(tmp_path):
    http = free_port(socket.SOCK_STREAM)
    url = f"sqlite:///{tmp_path}/records.db"
    config = {
        **TEST_CONFIG,
        "routes": ROUTES,
        "agent": {"reprompt_after_s": 0},
        "storage": {"url": url, "spool_dir": str(tmp_path / "spool"), "node": "route-test"},
        "mediastreams": {"http_listen": f"127.0.0.1:{http}", "public_url": PUBLIC, "auth_token": TOKEN},
    }
    server = BridgeProcess(tmp_path, config)
    server.start()
    try:

        async def calls():
            # Each caller stays until the greeting has been heard to its end (the record keeps
            # what was played: a fixed 5 s cut the 4.9 s clinic greeting short under load).
            for number in (CLINIC, SALES):
                report = await place_call(f"sip:{number}@127.0.0.1:{server.sip_port}", [], None)
                assert report.answered, number
            with pytest.raises(ConnectionError, match="rejected 603"):
                await place_call(f"sip:{NOBODY}@127.0.0.1:{server.sip_port}", [], None, duration=2)
            for n, number in enumerate((CLINIC, SALES)):
                twilio = TwilioStream(
                    f"ws://127.0.0.1:{http}/media-stream",
                    TOKEN,
                    "wss://bridge.example.test/media-stream",
                    call_sid=f"CA{n:032d}",
                    latency=0.0,
                )
                await twilio.run([], duration=8.0, custom={"From": "+14155550123", "To": number})
                assert twilio.close_code == 1000, number
            stranger = TwilioStream(
                f"ws://127.0.0.1:{http}/media-stream",
                TOKEN,
                "wss://bridge.example.test/media-stream",
                call_sid="CA" + "9" * 32,
                latency=0.0,
            )
            await stranger.run([], duration=2.0, custom={"From": "+14155550123", "To": NOBODY})
            assert stranger.close_code == 1008

        asyncio.run(calls())
        # The TwiML webhook rejects an unrouted number before any stream.
        params = {"CallSid": "CA" + "8" * 32, "From": "+14155550123", "To": NOBODY, "AccountSid": "AC" + "3" * 32}
        signature = RequestValidator(TOKEN).compute_signature(f"{PUBLIC}/twiml", params)
        request = urllib.request.Request(
            f"http://127.0.0.1:{http}/twiml",
            data=urllib.parse.urlencode(params).encode(),
            headers={"X-Twilio-Signature": signature},
        )
        twiml = urllib.request.urlopen(request, timeout=10).read().decode()
        assert "<Reject" in twiml and "<Stream" not in twiml, twiml
        deadline = time.monotonic() + 15
        while len(greetings(url)) < 4 and time.monotonic() < deadline:
            time.sleep(0.3)
        seen = greetings(url)
    finally:
        assert server.stop() == 0
    log = server.log_text()
    assert "Traceback" not in log
    by = {(leg, called): (route, greeting) for leg, route, called, greeting in seen.values()}
    assert set(by) == {("sip", CLINIC), ("sip", SALES), ("mediastreams", CLINIC), ("mediastreams", SALES)}, seen
    for leg in ("sip", "mediastreams"):
        assert by[(leg, CLINIC)] == (
            "default",
            "Hello, thanks for calling Maple Street Dental. This is Sam, how can I help you?",
        ), by
        assert by[(leg, SALES)] == ("sales", "Thanks for calling the sales team. What can I get you?"), by
        assert by[(leg, CLINIC)][1] != by[(leg, SALES)][1]
    assert "rejected 603 (no_route)" in log
    # One set of model files for both profiles: each model loaded once.
    assert (
        log.count("llm: llama.cpp") == 1
        and log.count("asr: faster-whisper") == 1
        and log.count("routing: profile sales ready") == 1
    )
