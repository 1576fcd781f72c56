"""Media Streams sessions are calls: caps, per-caller caps, draining, duplicate CallSids,
silent sockets, the account check, and the echo agent on the WebSocket leg."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from bridge.calls.streams import CLOSE_TRY_AGAIN
from bridge.client import place_call

from .test_mediastreams import ACCOUNT, ms_server, stream

pytestmark = pytest.mark.e2e


async def running(server, count: int) -> None:
    for _ in range(100):
        if len(server.stream_calls) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} stream(s) not up")


async def test_streams_count_against_max_calls_with_sip_calls(engines):
    server = await ms_server(engines, access={"max_calls": 1}, kind="echo")
    try:
        first = stream(server, call_sid="CA" + "a" * 32)
        first_task = asyncio.ensure_future(first.run([], duration=4.0))
        await running(server, 1)
        second = stream(server, call_sid="CA" + "b" * 32)
        await second.run([], duration=2.0)
        assert second.close_code == CLOSE_TRY_AGAIN and not second.received
        with pytest.raises(ConnectionError, match="503"):
            await place_call(
                f"sip:agent@127.0.0.1:{server.core.local_addr[1]}", [], None, duration=1, wait_greeting=False
            )
        await first_task
        assert first.close_code == 1000 and len(first.received) > 50  # the admitted one was not disturbed
    finally:
        await server.stop()
    assert server.metrics.active_calls._value.get() == 0


async def test_per_caller_cap_and_draining_apply_to_streams(engines):
    server = await ms_server(engines, access={"max_calls_per_caller": 1}, kind="echo")
    try:
        first = stream(server, call_sid="CA" + "c" * 32)
        first_task = asyncio.ensure_future(first.run([], duration=4.0, custom={"From": "+14155550123"}))
        await running(server, 1)
        same_caller = stream(server, call_sid="CA" + "d" * 32)
        await same_caller.run([], duration=1.0, custom={"From": "+14155550123"})
        assert same_caller.close_code == CLOSE_TRY_AGAIN
        other_caller = stream(server, call_sid="CA" + "e" * 32)
        other_task = asyncio.ensure_future(other_caller.run([], duration=1.5, custom={"From": "+14155550999"}))
        await other_task
        assert other_caller.close_code == 1000 and other_caller.received
        drain = asyncio.ensure_future(server.drain(10))
        await asyncio.sleep(0.2)
        late = stream(server, call_sid="CA" + "f" * 32)
        await late.run([], duration=1.0, custom={"From": "+14155550777"})
        assert late.close_code == CLOSE_TRY_AGAIN
        await first_task
        assert first.close_code == 1000
        await asyncio.wait_for(drain, 10)  # the drain ends once the admitted stream ends
    finally:
        await server.stop()


async def test_duplicate_call_sid_is_refused_and_the_first_goes_on(engines):
    server = await ms_server(engines, kind="echo")
    try:
        sid = "CA" + "9" * 32
        first = stream(server, call_sid=sid)
        first_task = asyncio.ensure_future(first.run([], duration=4.0))
        await running(server, 1)
        leg = next(iter(server.stream_calls.values()))
        duplicate = stream(server, call_sid=sid)
        await duplicate.run([], duration=1.0)
        assert duplicate.close_code == 1008
        assert next(iter(server.stream_calls.values())) is leg and not leg.ended
        await first_task
        assert first.close_code == 1000 and len(first.received) > 100
        await asyncio.sleep(0.3)
        assert len(server.stream_calls) == 0 and server.metrics.active_calls._value.get() == 0
        assert (
            len(server.finished) == 1 and server.finished[-1].leg is leg and leg.conversation is None
        )  # its agent was closed and let go
    finally:
        await server.stop()


async def test_socket_without_start_is_closed(engines):
    server = await ms_server(engines, mediastreams={"start_timeout": 1.0}, kind="echo")
    try:
        headers = {"X-Twilio-Signature": stream(server).signature()}
        async with websockets.connect(
            f"ws://127.0.0.1:{server.http_port}/media-stream", additional_headers=headers
        ) as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1008
        assert len(server.stream_calls) == 0
    finally:
        await server.stop()


async def test_start_from_another_account_is_refused(engines):
    server = await ms_server(engines, access={"twilio_accounts": ["AC" + "7" * 32]}, kind="echo")
    try:
        wrong = stream(server)
        await wrong.run([], duration=1.0, account_sid=ACCOUNT)
        assert wrong.close_code == 1008
        right = stream(server)
        await right.run([], duration=1.5, account_sid="AC" + "7" * 32)
        assert right.close_code == 1000 and right.received
    finally:
        await server.stop()


async def test_echo_agent_on_media_streams(engines):
    """agent.kind: echo plays the caller back over the WebSocket as over RTP."""
    import numpy as np

    tone = (6000 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype(np.int16)
    server = await ms_server(engines, kind="echo")
    try:
        twilio = stream(server)
        await twilio.run([(0.5, tone)], duration=3.0)
        assert twilio.close_code == 1000
        heard = twilio.audio()
        loud = np.abs(heard.astype(np.int32)) > 2000
        assert loud.sum() > 4000, "the tone came back"
    finally:
        await server.stop()
    assert list(server.end_reasons)[-1][1] in ("stop", "disconnected")
