"""Media Streams mode: protocol codec, signatures, whole calls as Twilio plays them,
malformed sessions, REST call control against a local stand-in of Twilio's API."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest
import websockets
from twilio.request_validator import RequestValidator

from bridge.client import place_call, read_wav_8k
from bridge.config import load_settings
from bridge.mediastreams import protocol as p
from bridge.server import BridgeServer

from .conftest import ROOT, free_port, rtp_range
from .fake_twilio_api import FakeTwilioApi
from .twilio_ms import TwilioStream
from .waiting import words

TOKEN = "12345"
ACCOUNT = "AC" + "3" * 32
PUBLIC = "https://bridge.example.test"


# ------------------------------------------------------------------ protocol


def started() -> p.StreamSession:
    s = p.StreamSession()
    s.receive(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    s.receive(
        json.dumps(
            {
                "event": "start",
                "sequenceNumber": "1",
                "streamSid": "MZ1",
                "start": {
                    "accountSid": "AC1",
                    "streamSid": "MZ1",
                    "callSid": "CA1",
                    "tracks": ["inbound"],
                    "customParameters": {"From": "+1"},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )
    )
    return s


def test_protocol_events_and_messages():
    s = started()
    assert s.stream_sid == "MZ1" and s.call_sid == "CA1"
    media = s.receive(
        json.dumps(
            {
                "event": "media",
                "sequenceNumber": "2",
                "streamSid": "MZ1",
                "media": {"track": "inbound", "chunk": "1", "timestamp": "20", "payload": "//8="},
            }
        )
    )
    assert media == p.Media(b"\xff\xff", 20, 1, "inbound")
    assert s.receive(
        json.dumps({"event": "dtmf", "streamSid": "MZ1", "dtmf": {"track": "inbound_track", "digit": "7"}})
    ) == p.Dtmf("7")
    assert s.receive(json.dumps({"event": "mark", "streamSid": "MZ1", "mark": {"name": "m1"}})) == p.MarkEcho("m1")
    assert json.loads(s.media(b"\xff")) == {"event": "media", "streamSid": "MZ1", "media": {"payload": "/w=="}}
    assert json.loads(s.mark("m2")) == {"event": "mark", "streamSid": "MZ1", "mark": {"name": "m2"}}
    assert json.loads(s.clear()) == {"event": "clear", "streamSid": "MZ1"}
    assert s.receive(
        json.dumps({"event": "stop", "streamSid": "MZ1", "stop": {"accountSid": "AC1", "callSid": "CA1"}})
    ) == p.Stop("CA1")


@pytest.mark.parametrize(
    "frames,code",
    [
        (["not json {"], p.CLOSE_POLICY),
        ([json.dumps({"event": "hello"})], p.CLOSE_POLICY),
        ([json.dumps({"event": "media", "media": {"payload": "//8="}})], p.CLOSE_POLICY),  # media before start
        (
            [
                json.dumps(
                    {
                        "event": "start",
                        "start": {
                            "streamSid": "MZ",
                            "callSid": "CA",
                            "mediaFormat": {"encoding": "audio/l16", "sampleRate": 16000},
                        },
                    }
                )
            ],
            p.CLOSE_UNSUPPORTED,
        ),
        (["x" * 70000], p.CLOSE_TOO_BIG),
        ([json.dumps([1, 2])], p.CLOSE_POLICY),
        (["{}"], p.CLOSE_POLICY),
    ],
)
def test_protocol_errors(frames, code):
    s = p.StreamSession()
    with pytest.raises(p.StreamProtocolError) as info:
        for frame in frames:
            s.receive(frame)
    assert info.value.code == code


def test_protocol_errors_after_start():
    for bad, code in [
        ({"event": "media", "streamSid": "MZ1", "media": {"payload": "A" * 40000}}, p.CLOSE_TOO_BIG),
        ({"event": "media", "streamSid": "MZ1", "media": {"payload": "***"}}, p.CLOSE_POLICY),
        ({"event": "media", "streamSid": "MZ2", "media": {"payload": "//8="}}, p.CLOSE_POLICY),
        ({"event": "dtmf", "streamSid": "MZ1", "dtmf": {"digit": "x"}}, p.CLOSE_POLICY),
        ({"event": "mark", "streamSid": "MZ1"}, p.CLOSE_POLICY),
    ]:
        with pytest.raises(p.StreamProtocolError) as info:
            started().receive(json.dumps(bad))
        assert info.value.code == code, bad


# ------------------------------------------------------------------ server


async def ms_server(
    engines,
    public_url: str = PUBLIC,
    api: FakeTwilioApi | None = None,
    access: dict | None = None,
    mediastreams: dict | None = None,
    models: dict | None = None,
    **agent,
) -> BridgeServer:
    port = free_port()
    http = free_port(__import__("socket").SOCK_STREAM)
    settings = load_settings(
        overrides={
            "sip": {"listen": f"127.0.0.1:{port}"},
            "media": {"rtp_ports": rtp_range(10)},
            "models": {"cache_dir": str(ROOT / "models"), **(models or {})},
            "agent": agent,
            "access": access or {},
            "transfer": {"target": "sip:+14155550100@example.pstn.twilio.com"},
            "mediastreams": {
                "http_listen": f"127.0.0.1:{http}",
                "public_url": public_url,
                "auth_token": TOKEN,
                "account_sid": ACCOUNT if api else "",
                "api_base_url": api.base_url if api else "",
                **(mediastreams or {}),
            },
        }
    )
    server = BridgeServer(settings, engines)
    await server.start()
    server.http_port = http
    return server


def post_twiml(server, params: dict, signature: str | None, headers: dict | None = None) -> tuple[int, str]:
    data = urllib.parse.urlencode(params).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.http_port}/twiml", data=data, method="POST", headers=headers or {}
    )
    if signature is not None:
        request.add_header("X-Twilio-Signature", signature)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


PARAMS = {
    "CallSid": "CA" + "1" * 32,
    "AccountSid": ACCOUNT,
    "From": "+14155550123",
    "To": "+14158675309",
    "CallStatus": "ringing",
}


async def test_webhook_signatures(engines):
    validator = RequestValidator(TOKEN)
    server = await ms_server(engines)
    proxied = await ms_server(engines, public_url="")
    try:
        good = validator.compute_signature(f"{PUBLIC}/twiml", PARAMS)
        status, body = await asyncio.to_thread(post_twiml, server, PARAMS, good)
        assert status == 200
        assert '<Connect><Stream url="wss://bridge.example.test/media-stream">' in body
        assert (
            '<Parameter name="CallSid" value="CA1111' in body
            and '<Parameter name="From" value="+14155550123" />' in body
        )
        assert (await asyncio.to_thread(post_twiml, server, PARAMS, good[:-4] + "AAA="))[0] == 403  # wrong
        assert (await asyncio.to_thread(post_twiml, server, PARAMS, None))[0] == 403  # missing
        assert (await asyncio.to_thread(post_twiml, server, {**PARAMS, "From": "+1999"}, good))[
            0
        ] == 403  # tampered body
        # Behind a proxy: the URL Twilio called is rebuilt from X-Forwarded-Proto/Host.
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "voice.example.org"}
        sig = validator.compute_signature("https://voice.example.org/twiml", PARAMS)
        status, body = await asyncio.to_thread(post_twiml, proxied, PARAMS, sig, forwarded)
        assert status == 200 and 'url="wss://voice.example.org/media-stream"' in body
        assert (await asyncio.to_thread(post_twiml, proxied, PARAMS, sig))[0] == 403  # same signature, no proxy headers
    finally:
        await server.stop()
        await proxied.stop()


async def test_websocket_upgrade_needs_a_signature(engines):
    server = await ms_server(engines)
    try:
        with pytest.raises(websockets.InvalidStatus) as info:
            await TwilioStream(
                f"ws://127.0.0.1:{server.http_port}/media-stream",
                TOKEN,
                f"{PUBLIC.replace('https', 'wss')}/media-stream",
            ).run([], 1, sign=False)
        assert info.value.response.status_code == 403
        with pytest.raises(websockets.InvalidStatus):
            await TwilioStream(
                f"ws://127.0.0.1:{server.http_port}/media-stream",
                "wrong-token",
                f"{PUBLIC.replace('https', 'wss')}/media-stream",
            ).run([], 1)
    finally:
        await server.stop()


def stream(server, **kw) -> TwilioStream:
    return TwilioStream(
        f"ws://127.0.0.1:{server.http_port}/media-stream", TOKEN, "wss://bridge.example.test/media-stream", **kw
    )


async def finished(server):
    for _ in range(100):
        if server.finished:
            return server.finished[-1]
        await asyncio.sleep(0.1)
    raise AssertionError("the stream did not end")


async def test_whole_call_greeting_reply_dtmf(engines, speech, asr):
    """Twilio's side of a call: connected, start, 20 ms media of real speech, a dtmf, stop."""
    server = await ms_server(engines)
    try:
        twilio = stream(server)
        question = read_wav_8k(speech["saturday"])
        await twilio.run([(6.0, question)], duration=14.0, dtmf=[(12.0, "5")])
        conversation = await finished(server)
        heard = asr.transcribe(twilio.audio())
        assert {"thanks", "calling", "dental"} <= words(heard), heard
        roles = [role for role, _ in conversation.transcript()]
        assert roles[:3] == ["agent", "caller", "agent"], conversation.transcript()
        assert "saturday" in conversation.transcript()[1][1].lower()
        assert conversation.dtmf_digits == ["5"]
        assert twilio.marks_echoed >= 2 and twilio.clears == 0
        greeting = conversation.history[0][1]
        assert greeting.played == sum(greeting.samples)  # confirmed by marks, in full
        assert conversation.latencies and conversation.latencies[0]["first_packet"] > 0
    finally:
        await server.stop()


@pytest.mark.parametrize(
    "bad,code",
    [
        ("not json", p.CLOSE_POLICY),
        (json.dumps({"event": "wat", "streamSid": "MZ" + "2" * 32}), p.CLOSE_POLICY),
        (
            json.dumps({"event": "media", "streamSid": "MZ" + "2" * 32, "media": {"payload": "A" * 30000}}),
            p.CLOSE_TOO_BIG,
        ),
    ],
)
async def test_malformed_session_is_closed_and_others_go_on(engines, bad, code):
    server = await ms_server(engines)
    try:
        good = stream(server, call_sid="CA" + "7" * 32)
        good_task = asyncio.ensure_future(good.run([], duration=3.0))
        headers = {"X-Twilio-Signature": stream(server).signature()}
        async with websockets.connect(
            f"ws://127.0.0.1:{server.http_port}/media-stream", additional_headers=headers
        ) as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            if "media" in bad:
                await ws.send(
                    json.dumps(
                        {
                            "event": "start",
                            "streamSid": "MZ" + "2" * 32,
                            "start": {
                                "streamSid": "MZ" + "2" * 32,
                                "callSid": "CA" + "8" * 32,
                                "accountSid": ACCOUNT,
                                "tracks": ["inbound"],
                                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                            },
                        }
                    )
                )
            await ws.send(bad)
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == code
        await good_task
        assert good.close_code == 1000 and len(good.received) > 50  # the other call was not affected
    finally:
        await server.stop()


async def test_wrong_encoding_and_media_before_start_close_the_session(engines):
    server = await ms_server(engines)
    try:
        twilio = stream(server)
        await twilio.run([], duration=1.0, media_format={"encoding": "audio/x-l16", "sampleRate": 16000, "channels": 1})
        assert twilio.close_code == p.CLOSE_UNSUPPORTED
        headers = {"X-Twilio-Signature": stream(server).signature()}
        async with websockets.connect(
            f"ws://127.0.0.1:{server.http_port}/media-stream", additional_headers=headers
        ) as ws:
            await ws.send(json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": "//8="}}))
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == p.CLOSE_POLICY
    finally:
        await server.stop()


async def test_transfer_and_hangup_through_the_rest_api(engines):
    """DTMF 0 -> transfer: the call is updated with <Dial> TwiML; the agent's hang-up at
    max_call_seconds -> Status=completed. Twilio's API is a local stand-in."""
    api = FakeTwilioApi(ACCOUNT, TOKEN)
    server = await ms_server(engines, api=api, max_call_seconds=9)
    try:
        twilio = stream(server)
        api.add_call(twilio.call_sid)  # the call Twilio placed and streams: the only one the bridge may update
        await twilio.run([], duration=20.0, dtmf=[(5.0, "0")])  # the bridge closes the stream at ~12 s
        await finished(server)
        updates = [
            (path, form) for method, path, form in api.requests if path.endswith(f"/Calls/{twilio.call_sid}.json")
        ]
        assert updates, api.requests
        path, form = updates[0]
        assert path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{twilio.call_sid}.json"
        assert "<Dial><Sip>sip:+14155550100@example.pstn.twilio.com</Sip></Dial>" in form["Twiml"]
        assert any(f.get("Status") == "completed" for _, f in updates), updates
        assert api.calls[twilio.call_sid]["status"] == "completed"  # the update was accepted, not just sent
    finally:
        await server.stop()
        api.close()


def test_bridge_twilio_call_creates_a_streaming_call():
    api = FakeTwilioApi(ACCOUNT, TOKEN)
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "bridge",
                "twilio",
                "call",
                "+14155550100",
                "--from",
                "+14158675309",
                "--public-url",
                PUBLIC,
                "--api-base-url",
                api.base_url,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**__import__("os").environ, "TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TOKEN},
        )
        assert result.returncode == 0, result.stderr
        ((method, path, form),) = api.requests
        assert path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json"
        assert form["To"] == "+14155550100" and form["From"] == "+14158675309"
        assert '<Connect><Stream url="wss://bridge.example.test/media-stream" /></Connect>' in form["Twiml"]
        assert "CA9999" in result.stdout
    finally:
        api.close()


async def test_sip_and_media_streams_in_one_process(engines, speech):
    """A SIP call and a Media Streams call at the same time, in the same metrics."""
    server = await ms_server(engines)
    try:
        sip = asyncio.ensure_future(
            place_call(f"sip:agent@127.0.0.1:{server.core.local_addr[1]}", [], None, duration=6, wait_greeting=False)
        )
        twilio = stream(server)
        ms = asyncio.ensure_future(twilio.run([], duration=6.0))
        await asyncio.sleep(3)
        assert len(server.calls) == 1 and len(server.stream_calls) == 1
        assert server.metrics.active_calls._value.get() == 2
        report, _ = await asyncio.gather(sip, ms)
        assert report.recorded_seconds > 3 and len(twilio.received) > 100
        outcomes = {
            s.labels["outcome"]: s.value for s in server.metrics.calls.collect()[0].samples if s.name.endswith("_total")
        }
        assert outcomes.get("answered") == 1 and outcomes.get("media_stream") == 1
    finally:
        await server.stop()
