"""The conversation suite, run over both call legs: SIP+RTP (``bridge call``'s client)
and Twilio Media Streams (a WebSocket peer playing Twilio's side).

Each test gives a timeline of caller speech (start second, audio), DTMF and
echo; the same assertions must hold whichever leg carries the call.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess

import numpy as np
import pytest

from bridge.client import place_call, read_wav_8k, write_wav_8k

from .fake_openai import FakeOpenAI, scripted
from .fake_twilio_api import FakeTwilioApi
from .test_mediastreams import ACCOUNT, TOKEN, ms_server, stream
from .twilio_ms import CALL_SID

pytestmark = pytest.mark.e2e
LEGS = ["sip", "mediastreams"]


async def run_call(
    kind: str,
    server,
    tmp_path,
    timeline,
    duration: float,
    dtmf: tuple[float, str] | None = None,
    echo_db: float | None = None,
    wire: list | None = None,
):
    """Play ``timeline`` [(second, PCM16 8 kHz)] over ``kind``; return the ended conversation.

    ``wire``: if given, filled with what the caller heard, ``(second on the timeline, RMS)``
    per agent frame as it arrived (SIP) or was played out of Twilio's buffer (Media Streams),
    and, for Media Streams, the ``TwilioStream`` last."""
    if kind == "sip":
        pcm = np.zeros(int(duration * 8000), np.int16)
        for at, clip in timeline:
            start = int(at * 8000)
            pcm[start : start + len(clip)] = clip[: len(pcm) - start]
        wav = tmp_path / "caller.wav"
        write_wav_8k(wav, pcm)
        report = await place_call(
            f"sip:agent@127.0.0.1:{server.core.local_addr[1]}",
            [wav],
            None,
            duration=duration,
            wait_greeting=False,
            dtmf=dtmf[1] if dtmf else "",
            dtmf_after=dtmf[0] if dtmf else 0.0,
            echo_db=echo_db,
            reply_timeout=duration,
        )
        if wire is not None:
            wire.extend(report.heard)
    else:
        digits = [(dtmf[0] + 0.3 * i, d) for i, d in enumerate(dtmf[1])] if dtmf else []
        twilio = stream(server)
        await twilio.run(timeline, duration, dtmf=digits, echo_db=echo_db)
        if wire is not None:
            wire.extend(
                (t - twilio.t0, float(np.sqrt(np.mean(f.astype(np.float64) ** 2))))
                for t, f in zip(twilio.played_at, twilio.received)
            )
            wire.append(twilio)
    for _ in range(100):
        if server.finished:
            return server.finished[-1]
        await asyncio.sleep(0.1)
    raise AssertionError("the call did not end")


@pytest.fixture(params=LEGS)
def leg(request) -> str:
    return request.param


async def test_greeting_then_reply(leg, engines, speech, tmp_path):
    server = await ms_server(engines)
    try:
        conversation = await run_call(leg, server, tmp_path, [(6.0, read_wav_8k(speech["saturday"]))], 12.0)
        transcript = conversation.transcript()
        assert [role for role, _ in transcript][:3] == ["agent", "caller", "agent"], transcript
        assert "saturday" in transcript[1][1].lower()
        assert conversation.latencies and conversation.latencies[0]["first_packet"] > 0
    finally:
        await server.stop()


async def test_interruption_stops_playout_and_truncates_history(leg, engines, speech, tmp_path):
    server = await ms_server(engines)
    try:
        conversation = await run_call(leg, server, tmp_path, [(1.5, read_wav_8k(speech["saturday"]))], 9.0)
        greeting = conversation.history[0][1]
        assert greeting.interrupted and 0 < greeting.played < sum(greeting.samples) / 2
        assert "help" not in greeting.played_text()
        assert server.metrics.barge_ins._value.get() >= 1
        assert [role for role, _ in conversation.transcript()][-2:] == ["caller", "agent"]
    finally:
        await server.stop()


async def test_barge_in_stops_agent_audio_on_the_wire(leg, engines, speech, tmp_path):
    """Measured where the caller is: once the caller has spoken for barge_in_min_speech_ms over
    the greeting, agent audio stops arriving within a small bound (VAD frame, one packet in
    flight, Twilio's buffer), and stays off until the caller has finished."""
    from bridge.client import first_voiced_frame

    clip = read_wav_8k(speech["saturday"])
    at = 1.5
    onset = at + first_voiced_frame(clip) * 0.02
    end = at + len(clip) / 8000
    server = await ms_server(engines)
    minimum = server.settings.agent.barge_in_min_speech_ms / 1000
    wire: list = []
    try:
        conversation = await run_call(leg, server, tmp_path, [(at, clip)], 9.0, wire=wire)
    finally:
        await server.stop()
    twilio = wire.pop() if leg == "mediastreams" else None
    loud = [t for t, rms in wire if rms > 330]
    assert [t for t in loud if at - 1.0 <= t < onset], "the greeting was playing when the caller started"
    stop_by = onset + minimum + 0.3
    late = [round(t, 2) for t in loud if stop_by <= t <= end]
    assert not late, f"agent audio {late} after {stop_by:.2f} s (caller spoke at {onset:.2f} s)"
    assert conversation.history[0][1].interrupted
    if twilio is not None:
        # The pause (at barge_in_min_speech_ms) sends nothing: the leg paces media in
        # real time, so Twilio holds at most a frame. The confirmed barge-in (at
        # barge_in_confirm_ms of speech, when an ASR pass over it finds words) drops what
        # is queued with clear: after the caller began, before the reply to them plays.
        assert twilio.clears >= 1, "barge-in on Media Streams sends clear"
        clear_at = twilio.clear_times[0] - twilio.t0
        assert onset + minimum <= clear_at, (clear_at, onset)
        reply = [t for t in loud if t > end]
        assert not reply or clear_at < reply[0], (clear_at, reply[:3])


async def test_echo_does_not_interrupt(leg, engines, tmp_path):
    server = await ms_server(engines)
    try:
        conversation = await run_call(leg, server, tmp_path, [], 8.0, echo_db=-10)
        greeting = conversation.history[0][1]
        assert not greeting.interrupted and greeting.played == sum(greeting.samples)
        assert conversation.echo_frames >= 25
        assert server.metrics.barge_ins._value.get() == 0
    finally:
        await server.stop()


async def test_finished_sentence_ends_the_turn_sooner(leg, engines, speech, tmp_path):
    unfinished = tmp_path / "unfinished.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(unfinished), "I would like to book a cleaning and"], check=True)
    fake = FakeOpenAI(lambda path, body: ("Sure.", []))
    # Thresholds far apart, and the plain one long enough for the speculative pass to
    # come back on a slow machine (a tiny.en pass takes 0.35-1.1 s on 2 cores).
    server = await ms_server(
        scripted(engines, fake), endpoint_silence_ms=4000, endpoint_fast_ms=300, endpoint_slow_ms=6500
    )
    try:
        timeline = [(6.0, read_wav_8k(speech["saturday"])), (15.0, read_wav_8k(unfinished))]
        conversation = await run_call(leg, server, tmp_path, timeline, 26.0)
        assert [t["endpoint_rule"] for t in conversation.turn_log] == ["finished", "unfinished"], conversation.turn_log
        fast, slow = (lat["endpoint"] for lat in conversation.latencies)
        assert fast < 4.0 < slow
    finally:
        await server.stop()
        fake.close()


async def test_a_pause_inside_a_sentence_is_not_talked_into(leg, engines, tmp_path):
    """A caller stops for 0.9 s in the middle of a phrase, then finishes it: with the
    default turn-taking and the embedded models, no agent audio starts inside the pause
    and the one reply answers the whole sentence."""
    halves = []
    for i, text in enumerate(["Could you tell me if my husband is booked for", "the fourteenth of March?"]):
        path = tmp_path / f"half{i}.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), text], check=True)
        halves.append(read_wav_8k(path))
    first_at = 7.0
    pause_from = first_at + len(halves[0]) / 8000
    second_at = pause_from + 0.9
    server = await ms_server(engines)
    wire: list = []
    try:
        conversation = await run_call(
            leg, server, tmp_path, [(first_at, halves[0]), (second_at, halves[1])], second_at + 8.0, wire=wire
        )
    finally:
        await server.stop()
    if leg == "mediastreams":
        wire.pop()
    loud = [round(t, 2) for t, rms in wire if rms > 330]
    inside = [t for t in loud if pause_from <= t <= second_at + 0.3]
    assert not inside, f"agent audio at {inside} inside the pause {pause_from:.2f}-{second_at:.2f} s"
    callers = [text for role, text in conversation.transcript() if role == "caller"]
    assert len(callers) == 1 and "march" in callers[0].lower() and "booked" in callers[0].lower(), (
        conversation.transcript()
    )
    assert [t for t in loud if t > second_at], "the completed sentence got no reply"


async def test_dtmf_reaches_collect_digits(leg, engines, speech, tmp_path):
    def script(path, body):
        if "(entered" in body["prompt"]:
            return ("Thank you, I found your booking.", [])
        return ("Please enter your three digit patient number. [collect_digits 3]", [])

    fake = FakeOpenAI(script)
    server = await ms_server(scripted(engines, fake))
    try:
        conversation = await run_call(
            leg, server, tmp_path, [(5.0, read_wav_8k(speech["appointment"]))], 17.0, dtmf=(12.0, "123")
        )
        assert conversation.collected_digits == ["123"]
        assert "Caller: (entered 1 2 3)" in fake.requests[-1][1]["prompt"]
    finally:
        await server.stop()
        fake.close()


async def test_end_call_hangs_up(leg, engines, speech, tmp_path):
    """The caller takes leave: the agent says its goodbye and hangs up (decided in code,
    bridge/conversation/intents.py; the model is not asked)."""
    fake = FakeOpenAI(lambda path, body: ("We open at nine.", []))
    server = await ms_server(scripted(engines, fake), end_call_pattern="")
    try:
        conversation = await run_call(leg, server, tmp_path, [(5.0, read_wav_8k(speech["bye"]))], 25.0)
        assert conversation.turn_log[-1]["tools"] == ["end_call"]
        assert conversation.transcript()[-1] == ("agent", server.settings.agent.goodbye)
        assert list(server.end_reasons)[-1][1] == "agent"
        assert not fake.requests  # leave-taking never reached the model
    finally:
        await server.stop()
        fake.close()


async def test_an_unrequested_end_call_is_refused(leg, engines, speech, tmp_path):
    """Issue 9: asked a question, a small model answered with a farewell and [end_call],
    and the call ended. Now a farewell to a question is not spoken (the fallback is
    said instead), and an [end_call] the caller did not ask for is refused and counted:
    the call goes on."""
    replies = iter(["You're welcome, have a great day. Goodbye! [end_call]", "We are at 42 Maple Street. [end_call]"])
    fake = FakeOpenAI(lambda path, body: (next(replies), []))
    server = await ms_server(scripted(engines, fake), end_call_pattern=r"\bgoodbye\b")
    try:
        timeline = [(5.0, read_wav_8k(speech["saturday"])), (12.0, read_wav_8k(speech["where"]))]
        conversation = await run_call(leg, server, tmp_path, timeline, 20.0)
        assert [t["agent"] for t in conversation.turn_log] == [
            server.settings.agent.fallback,
            "We are at 42 Maple Street.",
        ], conversation.turn_log
        assert "goodbye" not in " ".join(t for _, t in conversation.transcript()).lower()
        assert not list(server.end_reasons) or list(server.end_reasons)[-1][1] != "agent"
        assert server.metrics.guarded.labels("farewell")._value.get() == 1
        assert server.metrics.tools_refused.labels("end_call")._value.get() == 1
    finally:
        await server.stop()
        fake.close()


async def test_transfer_uses_the_legs_transfer(leg, engines, speech, tmp_path, caplog):
    """SIP: REFER. Media Streams: the call is updated with <Dial> through the REST API."""
    fake = FakeOpenAI(lambda path, body: ("Let me put you through.", [("transfer", {})]))
    api = FakeTwilioApi(ACCOUNT, TOKEN)
    api.add_call(CALL_SID)  # the call the Media Streams leg streams: the only one it may update
    server = await ms_server(scripted(engines, fake), api=api, llm_mode="chat")
    caplog.set_level(logging.INFO)
    try:
        conversation = await run_call(leg, server, tmp_path, [(5.0, read_wav_8k(speech["person"]))], 14.0)
        assert conversation.turn_log[0]["tools"] == ["transfer"]
        if leg == "sip":
            assert "REFER to sip:+14155550100@example.pstn.twilio.com" in caplog.text
        else:
            # The update reached the streamed call and Twilio (the stand-in) accepted it.
            assert "<Dial><Sip>sip:+14155550100@example.pstn.twilio.com</Sip></Dial>" in api.calls[CALL_SID].get(
                "twiml", ""
            )
    finally:
        await server.stop()
        fake.close()
        api.close()


async def test_goodbye_is_heard_to_its_last_word_before_the_hang_up(leg, engines, asr, tmp_path):
    """max_call_seconds: the agent says goodbye, then hangs up. The hang-up waits until the
    goodbye was heard (Media Streams: its mark came back through Twilio's buffer; SIP: its
    last packet was sent), so its last word reaches the caller."""
    server = await ms_server(engines, max_call_seconds=2, greeting="")
    try:
        if leg == "sip":
            record = tmp_path / "heard.wav"
            report = await place_call(
                f"sip:agent@127.0.0.1:{server.core.local_addr[1]}", [], record, duration=15, wait_greeting=False
            )
            assert report.hung_up_by == "agent", report
            heard = read_wav_8k(record)
        else:
            twilio = stream(server, latency=0.4)
            await twilio.run([], duration=15.0)
            assert twilio.close_code == 1000
            heard = twilio.audio()
        await asyncio.sleep(0.5)
        assert list(server.end_reasons)[-1][1] == "agent"
    finally:
        await server.stop()
    tail = heard[-int(2.5 * 8000) :]  # the last words
    assert "bye" in asr.transcribe(heard).lower().split()[-1] or "goodbye" in asr.transcribe(tail).lower(), (
        asr.transcribe(heard)
    )


APOLOGY = "Sorry, something went wrong on my side."


async def test_llm_errors_and_timeouts_get_an_apology_and_the_call_goes_on(leg, engines, speech, tmp_path, caplog):
    """The OpenAI-compatible server answers 500, then accepts a request and never answers:
    each turn gets the apology (never silence), counted by stage, logged once per call."""
    fake = FakeOpenAI(lambda path, body: ("We open at 9 am on Saturday.", []))
    fake.fail_next = True
    server = await ms_server(scripted(engines, fake, timeout=1.5), error_apology=APOLOGY, on_engine_error="continue")
    question = read_wav_8k(speech["saturday"])
    try:
        with caplog.at_level(logging.WARNING, logger="bridge"):

            async def hang_second() -> None:
                while len(fake.requests) < 1:
                    await asyncio.sleep(0.05)
                fake.hang_next = True

            arm = asyncio.ensure_future(hang_second())
            conversation = await run_call(
                leg, server, tmp_path, [(6.0, question), (14.0, question), (23.0, question)], 31.0
            )
            arm.cancel()
        said = [text for role, text in conversation.transcript() if role == "agent"]
        assert said.count(APOLOGY) == 2, said
        assert said[-1] == "We open at 9 am on Saturday.", said  # the third turn works again
        assert server.metrics.engine_errors.labels("llm")._value.get() == 2
        logged = [r for r in caplog.records if "engine failure" in r.getMessage()]
        assert (
            len(logged) == 1
            and "stage=llm" in logged[0].getMessage()
            and conversation.leg.call_id in logged[0].getMessage()
        )
    finally:
        await server.stop()
        fake.close()


async def test_llm_failure_can_end_the_call_after_the_apology(engines, speech, tmp_path):
    fake = FakeOpenAI(lambda path, body: ("Unused.", []))
    fake.fail_next = True
    server = await ms_server(scripted(engines, fake), error_apology=APOLOGY, on_engine_error="end_call")
    try:
        conversation = await run_call("sip", server, tmp_path, [(6.0, read_wav_8k(speech["saturday"]))], 20.0)
        assert [text for role, text in conversation.transcript() if role == "agent"][-1] == APOLOGY
        assert list(server.end_reasons)[-1][1] == "agent"
    finally:
        await server.stop()
        fake.close()
