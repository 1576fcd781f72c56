"""Turn-taking as a state machine (bridge/conversation/turntaking.py), with a fake clock:
frames are 20 ms apart on paper, results arrive when the test says, nothing sleeps."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.config import load_settings
from bridge.conversation import turntaking as tt

FRAME = np.zeros(160, np.int16)


class Line:
    """One call's caller side: frames on a fake 20 ms clock, and every action collected."""

    def __init__(self, **agent) -> None:
        self.agent = load_settings(None).agent.model_copy(update={"reprompt_after_s": 0, **agent})
        self.now = 100.0
        self.turns = tt.TurnTaking(self.agent, self.now)
        self.actions: list[tt.Action] = []
        self.agent_active = False

    def feed(self, ms: int, voiced: bool) -> list[tt.Action]:
        out = []
        for _ in range(ms // 20):
            self.now += 0.02
            out += self.turns.frame(FRAME, voiced, self.now, self.agent_active)
        self.actions += out
        return out

    def speak(self, ms: int) -> list[tt.Action]:
        return self.feed(ms, True)

    def silence(self, ms: int) -> list[tt.Action]:
        return self.feed(ms, False)

    def speculation(self) -> tt.Speculate:
        found = [a for a in self.actions if isinstance(a, tt.Speculate)]
        assert found, self.actions
        return found[-1]

    def scores(
        self, text: str | None, p_text: float | None = None, p_audio: float | None = None, logprob: float | None = None
    ) -> list[tt.Action]:
        s = self.speculation()
        out = self.turns.speculated(
            s.utterance, s.frames, text, p_text, p_audio, self.now, self.agent_active, logprob=logprob
        )
        self.actions += out
        return out

    def ends(self) -> list[tt.EndOfTurn]:
        return [a for a in self.actions if isinstance(a, tt.EndOfTurn)]


def _of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def test_a_finished_turn_ends_after_the_short_silence_once_its_scores_are_in():
    line = Line()
    line.silence(200)
    assert _of(line.speak(1500), tt.UtteranceStarted)
    line.silence(100)
    spec = line.speculation()
    assert spec.prepare and spec.frames == len(spec.pcm) // 160
    line.silence(100)  # 200 ms: fast enough, but the scores are not in
    assert not line.ends()
    out = line.scores("What time do you open on Saturday?", p_text=0.4, p_audio=0.97)
    (end,) = _of(out, tt.EndOfTurn)
    assert end.rule == "finished" and end.prepared and end.text == "What time do you open on Saturday?"
    assert end.times["endpoint"] - end.times["speech_end"] == pytest.approx(0.2)


def test_an_unfinished_phrase_then_a_pause_gets_no_reply_and_the_completion_does():
    """ "I would like to book an appointment for ... a cleaning next Tuesday": the pause
    after "for" is 0.9 s; the turn must not end inside it."""
    line = Line()
    line.speak(1800)
    line.silence(100)
    line.scores("I would like to book an appointment for.", p_text=0.0, p_audio=0.96)
    line.silence(800)  # 0.9 s of silence in all
    assert not line.ends()
    out = line.speak(1200)  # "...a cleaning next Tuesday morning"
    assert _of(out, tt.Discard)  # the reply prepared for the half sentence is thrown away
    line.silence(100)
    line.scores("I would like to book an appointment for a cleaning next Tuesday morning.", p_text=0.3, p_audio=0.98)
    line.silence(100)
    (end,) = line.ends()
    assert end.rule == "finished" and "Tuesday" in end.text and end.utterance == 1


@pytest.mark.parametrize(
    "text,p_text,p_audio,reason",
    [
        ("My daughter needs to see someone because", 0.6, 0.9, "words"),  # ends on a conjunction
        ("Could you tell me whether you take?", 0.001, 0.9, "language"),  # the LLM: "take" wants an object
        ("Is it possible to get an appointment?", 0.5, 0.1, "audio"),  # Smart Turn hears a phrase that goes on
    ],
)
def test_each_signal_alone_holds_the_turn_open(text, p_text, p_audio, reason):
    line = Line(turn_audio_threshold=0.5)  # Smart Turn on (off by default)
    line.speak(1500)
    line.silence(100)
    line.scores(text, p_text=p_text, p_audio=p_audio)
    line.silence(1500)
    assert not line.ends()
    line.silence(300)  # endpoint_slow_ms = 1.8 s: a long silence still ends it
    (end,) = line.ends()
    assert end.rule == "unfinished" and end.reason == reason


def test_without_scores_the_turn_ends_at_the_plain_silence():
    line = Line()
    line.speak(1000)
    line.silence(680)
    assert not line.ends()
    line.silence(20)  # endpoint_silence_ms = 700
    (end,) = line.ends()
    assert end.rule == "unknown" and end.text is None and end.prepared  # the pass in flight is used


def test_a_caller_who_goes_on_after_a_short_silence_gets_a_new_speculation():
    line = Line()
    line.speak(1000)
    line.silence(140)
    first = line.speculation()
    assert _of(line.speak(600), tt.Discard)
    line.silence(100)
    second = line.speculation()
    assert second.utterance == first.utterance and second.frames > first.frames
    stale = line.turns.speculated(first.utterance, first.frames, "Hello.", 0.9, 0.9, line.now, False)
    assert stale == []  # the first pass's result no longer counts
    line.scores("Hello, I need a cleaning.", 0.5, 0.9)
    line.silence(100)
    assert [e.text for e in line.ends()] == ["Hello, I need a cleaning."]


def test_short_noise_is_no_turn():
    line = Line()
    line.speak(100)  # below min_utterance_ms
    line.silence(2000)
    assert not line.ends() and not _of(line.actions, tt.Speculate)


def test_speech_over_the_agent_pauses_it_then_a_backchannel_resumes_it():
    line = Line()
    line.agent_active = True
    out = line.speak(200)
    assert _of(out, tt.PauseAgent) and line.turns.barge_in_pending
    line.silence(100)
    assert not line.speculation().prepare  # no reply is prepared over the agent
    out = line.scores("Mm-hmm.", 0.5, 0.9)
    line.silence(200)
    assert _of(line.actions, tt.ResumeAgent) and not line.turns.barge_in_pending
    assert not line.ends()


def test_words_over_the_agent_interrupt_it_and_are_answered():
    line = Line()
    line.agent_active = True
    line.speak(400)
    line.silence(100)
    line.scores("Wait, I meant Tuesday.", 0.5, 0.9)
    line.silence(200)
    assert [a.words for a in _of(line.actions, tt.Interrupt)] == ["Wait, I meant Tuesday."]
    (end,) = line.ends()
    assert end.text == "Wait, I meant Tuesday." and not end.prepared


def test_the_judging_pass_decides_a_long_utterance_over_the_agent():
    line = Line()
    line.agent_active = True
    out = line.speak(700)  # barge_in_confirm_ms
    (judge,) = [a for a in _of(line.actions, tt.Transcribe) if a.purpose == "judge"]
    out = line.turns.heard(judge.utterance, "judge", "Okay, right.", line.now, True)
    assert _of(out, tt.ResumeAgent)
    line2 = Line()
    line2.agent_active = True
    line2.speak(700)
    (judge,) = [a for a in _of(line2.actions, tt.Transcribe) if a.purpose == "judge"]
    out = line2.turns.heard(judge.utterance, "judge", "No, that is not what I asked", line2.now, True)
    assert _of(out, tt.Interrupt)


def test_confirm_zero_interrupts_at_once():
    line = Line(barge_in_confirm_ms=0)
    line.agent_active = True
    out = line.speak(200)
    assert _of(out, tt.Interrupt) and not _of(out, tt.PauseAgent)


def test_silence_on_both_sides_reprompts_then_gives_up():
    line = Line(reprompt_after_s=8, max_reprompts=2)
    t = line.now
    assert line.turns.tick(t + 7.9, False) == []
    assert _of(line.turns.tick(t + 8.0, False), tt.Reprompt)
    assert line.turns.tick(t + 12.0, True) == []  # the agent speaks: the clock restarts
    assert _of(line.turns.tick(t + 20.0, False), tt.Reprompt)
    assert _of(line.turns.tick(t + 28.0, False), tt.GiveUp)


def test_the_caller_speaking_restarts_the_silence_clock():
    line = Line(reprompt_after_s=8)
    line.speak(500)
    line.silence(100)
    line.scores("Hello.", 0.5, 0.9)
    line.silence(200)
    assert line.turns.tick(line.now + 7.0, False) == []


def test_the_audio_score_counts_only_when_the_model_is_on():
    line = Line()  # turn_audio_threshold 0: Smart Turn off
    line.speak(1000)
    line.silence(100)
    line.scores("Is it possible to get an appointment?", p_text=0.5, p_audio=0.01)
    line.silence(100)
    assert [e.rule for e in line.ends()] == ["finished"]


def test_after_a_pause_only_the_new_audio_is_transcribed_and_joined_to_what_was_heard():
    line = Line()
    line.speak(1000)
    line.silence(100)
    first = line.speculation()
    line.scores("Do you know if you accept.", p_text=0.0, p_audio=None)
    line.silence(500)
    line.speak(800)
    line.silence(100)
    second = line.speculation()
    assert second.heard == "Do you know if you accept."
    assert len(second.pcm) == len(second.utterance_pcm) - len(first.pcm)  # only what came after the first pass
    assert second.frames == len(second.utterance_pcm) // 160


def test_what_was_heard_before_a_pause_is_joined_without_the_mark_of_the_break():
    """Whisper marks speech that breaks off with a dash or a comma ("to-"); the joined
    line reads as one sentence, as the caller said it."""
    from bridge.conversation.turns import joined

    assert joined("Is it okay if I bring-", "My dog along?") == "Is it okay if I bring My dog along?"
    assert joined("The tooth at the back,", "it aches at night.") == "The tooth at the back it aches at night."
    assert joined("Do you know if you accept.", "Delta Dental?") == "Do you know if you accept Delta Dental?"
    assert joined("", "Hello.") == "Hello."


def test_a_short_answer_the_language_model_is_unsure_of_ends_fast():
    """ "Mornings." (the LLM: 8% that the line ends there; most lines starting so go on)
    is an answer to the agent's question: the short silence ends it."""
    line = Line()
    line.speak(700)
    line.silence(100)
    line.scores("Mornings.", p_text=0.08, p_audio=None)
    line.silence(100)
    (end,) = line.ends()
    assert end.rule == "finished" and end.reason == "short answer"
    assert end.times["endpoint"] - end.times["speech_end"] == pytest.approx(0.2, abs=0.03)


def test_a_longer_line_the_language_model_is_unsure_of_waits_the_long_silence():
    """ "Is it okay if I ... bring my dog?" heard at its pause as "Is it okay if I buy?"
    (12% that the line ends there): no reply inside a 1.5 s pause."""
    line = Line()
    line.speak(1200)
    line.silence(100)
    line.scores("Is it okay if I buy?", p_text=0.12, p_audio=None)
    line.silence(1500)
    assert not line.ends()
    line.silence(200)
    (end,) = line.ends()
    assert end.rule == "finished" and end.reason == "language (unsure)"
    assert end.times["endpoint"] - end.times["speech_end"] == pytest.approx(1.8, abs=0.03)


def test_words_whisper_was_unsure_of_do_not_interrupt_the_agent():
    """A hum heard as "Amanda." (average log probability -0.84) is no interruption; the
    same words heard clearly are."""

    for words, logprob, speech_ms, resumed in (
        ("Amanda.", -0.84, 400, True),
        ("Amanda.", -0.2, 400, False),
        # A question heard through echo is as unsure, and is still a caller speaking...
        ("I'll see you open on Saturday.", -0.84, 1600, False),
        # ...but five words from 0.4 s of sound (15 a second) are a cough Whisper dressed up.
        ("I'm going to get you.", -0.84, 400, True),
    ):
        line = Line()
        line.agent_active = True
        line.speak(speech_ms)
        line.silence(100)
        line.scores(words, 0.5, None, logprob=logprob)
        line.silence(200)
        assert bool(_of(line.actions, tt.ResumeAgent)) == resumed
        assert bool(_of(line.actions, tt.Interrupt)) != resumed


def test_unsure_words_while_the_caller_goes_on_keep_the_agent_paused_until_more_is_heard():
    """The start of a real interruption can read as unsure words ("Arry to interrupt."
    at -0.8): while the caller is still speaking the agent stays paused, the next judging
    pass runs on more speech, and clear words then interrupt."""

    line = Line(barge_in_confirm_ms=700)
    line.agent_active = True
    line.speak(720)
    judge = _of(line.actions, tt.Transcribe)
    assert [t.purpose for t in judge] == ["judge"]
    line.actions += line.turns.heard(judge[0].utterance, "judge", "Arry to interrupt.", line.now, True, logprob=-0.8)
    assert not _of(line.actions, tt.ResumeAgent) and not _of(line.actions, tt.Interrupt)
    assert line.turns.barge_in_pending
    line.speak(400)
    again = [t for t in _of(line.actions, tt.Transcribe) if t.purpose == "judge"]
    assert len(again) == 2 and len(again[1].pcm) > len(judge[0].pcm)
    line.actions += line.turns.heard(
        again[1].utterance, "judge", "Sorry to interrupt, what does it cost?", line.now, True, logprob=-0.3
    )
    assert _of(line.actions, tt.Interrupt) and not _of(line.actions, tt.ResumeAgent)
