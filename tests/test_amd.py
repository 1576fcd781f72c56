"""Answering-machine detection, sans-IO: the beep detector on synthetic tones and
speech-like noise, and the detector's verdicts and message timing driven frame by frame
(20 ms of call audio a frame, no clock), with transcripts handed in as an ASR would."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.calls.gate import outcome_of
from bridge.config import AmdSettings
from bridge.outbound.amd import AnsweringMachineDetector, GiveUp, SpeakMessage, Transcribe, Verdict, machine_phrase
from bridge.outbound.tone import ToneDetector, tone_of

RNG = np.random.default_rng(7)


def tone(hz: float, seconds: float, amp: float = 6000) -> list[np.ndarray]:
    n = int(round(seconds / 0.02))
    t = np.arange(n * 160) / 8000
    pcm = (amp * np.sin(2 * np.pi * hz * t)).astype(np.int16)
    return [pcm[i * 160 : (i + 1) * 160] for i in range(n)]


def voiced(seconds: float) -> list[tuple[np.ndarray, bool]]:
    """Speech-like frames: a harmonic-rich buzz with noise (never one pure frequency)."""
    frames = []
    for _ in range(int(round(seconds / 0.02))):
        t = np.arange(160) / 8000
        f0 = RNG.uniform(100, 220)
        x = sum(np.sin(2 * np.pi * f0 * k * t + RNG.uniform(0, 6)) / k for k in range(1, 12)) * 2500 + RNG.normal(
            0, 600, 160
        )
        frames.append((x.astype(np.int16), True))
    return frames


def quiet(seconds: float) -> list[tuple[np.ndarray, bool]]:
    return [(np.zeros(160, np.int16), False) for _ in range(int(round(seconds / 0.02)))]


def beeped(hz: float, seconds: float) -> list[tuple[np.ndarray, bool]]:
    return [(f, True) for f in tone(hz, seconds)]  # webrtcvad often calls a beep speech


class Driver:
    """Feeds a detector and answers its Transcribe actions ``asr_delay`` seconds later."""

    def __init__(self, settings: AmdSettings | None = None, words: str = "", asr_delay: float = 0.4) -> None:
        self.amd = AnsweringMachineDetector(settings or AmdSettings())
        self.words = words
        self.asr_delay = asr_delay
        self.pending: list[tuple[float, Transcribe]] = []
        self.actions: list = []
        self.asked: list[Transcribe] = []

    def play(self, frames) -> None:
        for frame, is_voiced in frames:
            for a in self.amd.feed(frame, is_voiced):
                self._take(a)
            for due, req in list(self.pending):
                if self.amd.t >= due:
                    self.pending.remove((due, req))
                    for a in self.amd.transcript(req.id, self.words):
                        self._take(a)

    def _take(self, action) -> None:
        if isinstance(action, Transcribe):
            self.asked.append(action)
            self.pending.append((self.amd.t + self.asr_delay, action))
        else:
            self.actions.append(action)

    def verdict(self) -> Verdict | None:
        return next((a for a in self.actions if isinstance(a, Verdict)), None)

    def message(self) -> SpeakMessage | None:
        return next((a for a in self.actions if isinstance(a, SpeakMessage)), None)


def test_a_pure_tone_is_tonal_and_speech_is_not():
    assert abs(tone_of(tone(1000, 0.02)[0]) - 1000) < 10
    assert tone_of(voiced(0.02)[0][0]) is None
    assert tone_of(np.zeros(160, np.int16)) is None


@pytest.mark.parametrize("hz,seconds", [(440, 0.12), (1000, 0.5), (1400, 1.0), (850, 0.25)])
def test_a_beep_is_reported_when_it_ends_with_its_pitch_and_length(hz, seconds):
    det = ToneDetector()
    beeps = []
    t = 0.0
    for frame in [np.zeros(160, np.int16)] * 10 + tone(hz, seconds) + [np.zeros(160, np.int16)] * 5:
        b = det.feed(frame, t)
        t += 0.02
        if b is not None:
            beeps.append(b)
    assert len(beeps) == 1
    assert abs(beeps[0].hz - hz) < 20 and abs(beeps[0].ms - seconds * 1000) <= 20
    assert abs(beeps[0].end - (0.2 + seconds)) < 0.021


def test_too_short_or_endless_tones_and_speech_are_no_beep():
    for frames in (tone(1000, 0.06), tone(425, 3.0), [f for f, _ in voiced(3.0)]):
        det = ToneDetector()
        t = 0.0
        for frame in frames + [np.zeros(160, np.int16)] * 3:
            assert det.feed(frame, t) is None
            t += 0.02


def test_a_short_hello_then_silence_is_a_person_decided_soon_after_it():
    d = Driver(words="Hello?")
    d.play(quiet(0.6) + voiced(0.5) + quiet(1.5))
    v = d.verdict()
    assert v is not None and v.kind == "human" and v.reason == "short greeting"
    assert v.greeting_end == pytest.approx(1.1)
    assert v.at - v.greeting_end <= 0.75  # after_greeting_silence (0.7), the transcript already there
    assert d.message() is None


def test_a_pause_inside_an_unfinished_greeting_shorter_than_the_silence_rule_decides_nothing():
    d = Driver(words="Hi this is Dana")
    d.play(quiet(0.3) + voiced(0.8) + quiet(0.5))
    assert d.verdict() is None


def test_voicemail_words_make_a_machine_while_the_greeting_goes_on_and_the_message_waits_for_the_beep():
    d = Driver(words="Hi, you've reached Dana. I can't take your call right now")
    d.play(quiet(0.3) + voiced(4.0))
    v = d.verdict()
    assert v is not None and v.kind == "machine" and v.reason.startswith("words")
    assert v.at < 4.3  # before the greeting ended
    d.play(voiced(2.0) + quiet(0.4))
    assert d.message() is None  # never before the beep
    d.play(beeped(1000, 0.4) + quiet(1.0))
    m = d.message()
    assert m is not None and m.how == "beep" and m.beep.hz == pytest.approx(1000, abs=20)
    assert 0.2 <= m.at - m.beep.end <= 0.221  # beep_quiet_s after the beep


def test_a_beep_before_any_verdict_is_a_machine_and_the_message_follows_it():
    d = Driver(words="")
    d.play(quiet(0.5) + beeped(800, 0.3) + quiet(0.5))
    v, m = d.verdict(), d.message()
    assert v.kind == "machine" and v.reason == "beep"
    assert m is not None and m.how == "beep"


def test_a_long_greeting_without_machine_words_is_a_machine_unless_it_ends_in_a_question():
    d = Driver(words="Good afternoon and welcome, we are the Smith family and we love our garden.")
    d.play(quiet(0.3) + voiced(3.5) + quiet(1.5))
    assert d.verdict().kind == "machine" and d.verdict().reason == "long greeting"
    d = Driver(words="Hello, yes, this is Margaret speaking, sorry I was out in the garden, who is this?")
    d.play(quiet(0.3) + voiced(3.5) + quiet(1.5))
    assert d.verdict().kind == "human" and d.verdict().reason == "question"


def test_silence_is_unknown_and_sound_without_words_is_noise():
    d = Driver()
    d.play(quiet(5))
    assert d.verdict().kind == "unknown" and d.verdict().reason == "silence"
    assert d.verdict().at == pytest.approx(AmdSettings().initial_silence_s)
    d = Driver(words="")
    d.play(voiced(1.0) + quiet(1.0) + voiced(1.0) + quiet(2.0))
    assert d.verdict().kind == "unknown" and d.verdict().reason == "noise"


def test_without_a_beep_the_message_comes_after_the_silence_and_never_while_the_greeting_goes_on():
    s = AmdSettings(no_beep_silence_s=2.0)
    d = Driver(s, words="Please leave a message")
    d.play(voiced(1.5) + quiet(1.0) + voiced(1.5))
    assert d.verdict().kind == "machine" and d.message() is None
    d.play(quiet(2.1))
    m = d.message()
    assert m is not None and m.how == "silence" and m.at >= 3.0 + 2.0


def test_no_beep_and_no_quiet_gives_up_after_the_timeout():
    s = AmdSettings(no_beep_silence_s=0, beep_timeout_s=3.0)
    d = Driver(s, words="You have reached the voicemail of")
    d.play(voiced(2.0) + quiet(4.0))
    assert isinstance(d.actions[-1], GiveUp) and d.message() is None


def test_the_greeting_audio_asked_for_starts_just_before_the_first_speech():
    d = Driver(words="Hello?")
    d.play(quiet(1.0) + voiced(0.5) + quiet(1.0))
    first = d.asked[0]
    assert len(first.pcm) == pytest.approx((0.3 + 0.5 + 0.2) * 8000, abs=160)


@pytest.mark.parametrize(
    "text,phrase",
    [
        ("Hi, you’ve reached Sam.", "you've reached"),
        ("The number you have dialed is not in service.", "not in service"),
        ("Please say your name after the tone.", "after the tone"),
        ("Hello? Who's this?", None),
        ("Yeah, hi, this is Tom.", None),
    ],
)
def test_machine_phrases_on_word_boundaries(text, phrase):
    found = machine_phrase(text)
    assert (found is None) if phrase is None else found is not None


def test_outcomes():
    human, machine, unsure = (
        Verdict("human", "short greeting", 1.0),
        Verdict("machine", "beep", 5.0),
        Verdict("unknown", "silence", 3.0),
    )
    assert outcome_of(human, None, False, 0) == "human"
    assert outcome_of(machine, "beep", True, 0) == "voicemail_left"
    assert outcome_of(machine, "beep", False, 0) == "machine_no_beep"
    assert outcome_of(machine, "silence", True, 0) == "machine_no_beep"
    assert outcome_of(unsure, None, False, 0) == "no_answer"
    assert outcome_of(unsure, None, False, 2) == "human"


def test_a_carriers_three_tones_followed_by_speech_are_not_the_voicemail_beep():
    """Special information tones (914, 1371, 1777 Hz, back to back) then a recording: a
    machine, and no message is left into the announcement."""
    d = Driver(words="We're sorry, the number you have dialed is not in service.")
    d.play(quiet(0.3) + beeped(914, 0.33) + beeped(1371, 0.33) + beeped(1777, 0.33) + voiced(3.0) + quiet(0.5))
    assert d.verdict().kind == "machine"
    assert d.message() is None
