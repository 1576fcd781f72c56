"""Barge-in in two steps (bridge.conversation.backchannel): a backchannel or a cough
over the agent pauses it and it resumes where it stopped; a real interruption stops
it for good with the history cut to what was played. Real models (tiny.en, Piper),
a real Conversation fed in real time (bridge.benchmarks.bargein.play_over_agent)."""

from __future__ import annotations

import pytest

from bridge.benchmarks.bargein import CONDITIONS, play_over_agent, render
from bridge.config import load_settings
from bridge.conversation.backchannel import is_backchannel
from bridge.evaluation.voices import voice

CLEAN = CONDITIONS[0]


@pytest.mark.parametrize(
    "text",
    [
        "Mm-hmm.",
        "M-M-M.",
        "Mm-m.",
        "Okay, right.",
        "Uh-huh, yeah.",
        "[coughing]",
        "(coughs) okay",
        "",
        "Thank you.",
        "I see.",
        "Pfft.",
        "Ow.",
    ],
)
def test_backchannels(text):
    assert is_backchannel(text)


@pytest.mark.parametrize(
    "text",
    [
        "Wait, how much is a cleaning?",
        "No.",
        "Stop.",
        "Okay, so what about Tuesday?",
        "Yeah, but I want to cancel.",
        "Right, I need a check-up.",
    ],
)
def test_interruptions(text):
    assert not is_backchannel(text)


@pytest.fixture(scope="module")
def agent():
    return load_settings(None).agent


def frames_after(sent: list[float], t: float) -> list[float]:
    return [x for x in sent if x > t]


async def test_a_backchannel_pauses_the_agent_and_it_resumes(engines, agent):
    speak = voice("piper", engines.tts, deterministic=True)
    run = await play_over_agent(engines, agent, render("Okay.", speak, CLEAN, 1))
    conv, sent, onset = run["conversation"], run["sent"], run["onset"]
    line = conv.history[0][1]
    assert run["outcome"] == "resumed", conv.backchannels
    assert not line.interrupted
    assert [role for role, _ in conv.transcript()] == ["agent"]  # the backchannel is no caller turn
    # It stopped: a gap in the agent's frames right after the caller's onset...
    gaps = [(a, b) for a, b in zip(sent, sent[1:]) if b - a > 0.06 and b > onset]
    assert gaps, "the agent never paused"
    paused_at, resumed_at = gaps[0]
    assert paused_at < onset + 0.6
    # ...and went on with the frames it had not sent (nothing was dropped).
    assert len(frames_after(sent, resumed_at)) > 50
    assert line.played == 160 * len(sent)


async def test_a_cough_does_not_interrupt(engines, agent):
    run = await play_over_agent(engines, agent, render("cough", None, CLEAN, 2))
    assert run["outcome"] in ("resumed", "untouched")
    assert not run["conversation"].history[0][1].interrupted


async def test_a_real_interruption_stops_the_agent_for_good(engines, agent):
    speak = voice("espeak", engines.tts)
    run = await play_over_agent(engines, agent, render("Wait, I need to change my appointment.", speak, CLEAN, 3))
    conv, sent, onset = run["conversation"], run["sent"], run["onset"]
    line = conv.history[0][1]
    assert run["outcome"] == "interrupted"
    assert line.interrupted and line.played == 160 * len(sent) < sum(line.samples)
    assert not frames_after(sent, onset + 0.6), "agent audio after the caller interrupted"
    roles = [role for role, _ in conv.transcript()]
    assert roles[:2] == ["agent", "caller"]
    assert "appointment" in conv.transcript()[1][1].lower()
    assert line.played_text().endswith("...") or len(line.played_text()) < len(" ".join(line.sentences))


async def test_confirm_zero_makes_every_barge_in_final(engines, agent):
    speak = voice("piper", engines.tts, deterministic=True)
    run = await play_over_agent(
        engines, agent.model_copy(update={"barge_in_confirm_ms": 0}), render("Okay.", speak, CLEAN, 4)
    )
    assert run["outcome"] == "interrupted"


@pytest.mark.parametrize("text", ["M.M.A.M.A.", "M. M. D.", "Dr. Patel,", "Maple Street Dental."])
def test_whispers_noise_is_no_interruption(text):
    """A hum spelled as letters, and a cough heard as words of the recognizer's own
    initial prompt (the agent's names and terms)."""
    assert is_backchannel(text, prompt_words=frozenset("maple street dental dr patel moreno".split()))
    assert not is_backchannel(
        "Dr. Patel, is he in today?", prompt_words=frozenset("maple street dental dr patel moreno".split())
    )
