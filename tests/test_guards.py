"""Decoding guards, the tool-safety rule and the evaluation scoring, on crafted
model outputs: a loop, a leaked "Caller:" line, an unrequested
[end_call], and the rest of what a small model does wrong."""

from __future__ import annotations

import pytest

from bridge.conversation.guards import ReplyGuard, repeats
from bridge.conversation.intents import about_existing_record, wants_person, wants_to_end
from bridge.evaluation.evalset import EvalItem, load_sets
from bridge.evaluation.scoring import degenerate_kinds, score_turn, word_error_rate


def test_a_loop_is_never_spoken():
    guard = ReplyGuard("Sam")
    assert guard.partial("Yes, I'm sorry, I'm sorry, I'm sorry, I'm")
    verdict = guard.sentence("Yes, I'm sorry, I'm sorry, I'm sorry, I'm sorry.")
    assert verdict.speak == "" and verdict.stop and verdict.reason == "repetition"
    assert guard.finish() == "empty"  # nothing survived: the fallback is said instead


def test_normal_speech_is_not_a_loop():
    assert not repeats("We are open Monday to Friday from 8 am to 6 pm, and on Saturday from 9 am to 1 pm.")
    assert not repeats("Sure, what day works best for you?")
    guard = ReplyGuard("Sam")
    assert not guard.partial("We are open from 8 am to 6 pm and")
    assert guard.sentence("We open at 8 am.").speak == "We open at 8 am."
    assert guard.finish() is None


def test_a_leaked_speaker_line_is_cut_where_it_starts():
    guard = ReplyGuard("Sam")
    assert guard.partial("We open at 8 am. Caller: and on")
    verdict = guard.sentence("We open at 8 am Caller: and on Saturday?")
    assert verdict.speak == "We open at 8 am" and verdict.stop and verdict.reason == "leak"
    assert ReplyGuard("Sam").sentence("Sam: Hello there.").speak == ""
    assert ReplyGuard("Sam").sentence("Caller: Can I book?").reason == "leak"


def test_the_same_sentence_twice_and_a_third_sentence_are_dropped():
    guard = ReplyGuard("Sam", max_sentences=2)
    assert guard.sentence("We open at 8 am.").speak
    assert guard.sentence("We open at 8 am.").reason == "repetition"
    guard = ReplyGuard("Sam", max_sentences=2)
    assert guard.sentence("We open at 8 am.").stop is False
    assert guard.sentence("We close at 6 pm.").stop is True  # the second of two: generation stops
    assert guard.sentence("See you soon.").reason == "too_long"


def test_a_farewell_to_a_caller_who_did_not_take_leave_is_dropped():
    guard = ReplyGuard("Sam", farewell_allowed=False)
    assert guard.sentence("You're welcome, have a great day.").reason == "farewell"
    assert guard.sentence("Goodbye!").speak == ""
    assert ReplyGuard("Sam", farewell_allowed=True).sentence("Goodbye!").speak == "Goodbye!"


@pytest.mark.parametrize(
    "text, ends",
    [
        ("Thanks a lot, goodbye.", True),
        ("No, that's everything for today. Bye now.", True),
        ("Okay, bye!", True),
        ("That's all I needed, thank you.", True),
        ("Sorry to interrupt, but are you open on Sunday?", False),
        ("Thank you! Are you open on Sunday?", False),
        ("Goodbye. Oh wait, what time do you close", False),
        ("Can I drop by tomorrow?", False),
        ("Okay.", False),
    ],
)
def test_the_caller_takes_leave(text, ends):
    assert wants_to_end(text) is ends


def test_a_plain_no_ends_the_call_only_after_anything_else():
    assert wants_to_end("No, thanks.", after_anything_else=True)
    assert not wants_to_end("No, thanks.")
    assert not wants_to_end("No, I wanted Tuesday.", after_anything_else=True)


@pytest.mark.parametrize(
    "text, person",
    [
        ("Can I talk to a real person?", True),
        ("I'd like to speak with someone in billing.", True),
        ("Please transfer me to the front desk.", True),
        ("Could you put me through to a dentist?", True),
        ("Operator, please.", True),
        ("Place transfer meet to someone in billing.", True),  # tiny.en's hearing of "Please transfer me ..."
        ("Is the dentist a person I can trust?", False),
        ("Do you transfer records to other clinics?", False),
        ("How much is a cleaning?", False),
    ],
)
def test_an_explicit_request_for_a_person(text, person):
    assert wants_person(text) is person


def test_digits_only_about_an_existing_record():
    assert about_existing_record("I need to move my existing appointment.")
    assert about_existing_record("Can you check my appointment?")
    assert not about_existing_record("Can I book a cleaning?")


def test_scoring_on_words_not_substrings():
    item = EvalItem(
        id="x",
        category="hours",
        say="When does the office open on Saturday?",
        must=[["9", "nine"]],
        must_not=["sunday"],
    )
    assert score_turn(item, "When does the office open on Saturday?", "We open at 9 am.", []).correct
    wrong = score_turn(item, "When does the office open on Saturday?", "We open at 90 am.", [])
    assert not wrong.correct and wrong.missing == [["9", "nine"]]
    hung_up = score_turn(item, "When does the office open on Saturday?", "We open at 9 am.", ["end_call"])
    assert not hung_up.correct and hung_up.unrequested == ["end_call"]
    looped = score_turn(item, "x", "I'm sorry, I'm sorry, I'm sorry, we open at 9.", [])
    assert "repetition" in looped.degenerate and not looped.correct
    goodbye = EvalItem(id="y", category="goodbye", say="Bye.", tool="end_call")
    assert score_turn(goodbye, "Bye.", "Thanks for calling. Goodbye!", ["end_call"]).correct
    assert score_turn(goodbye, "Bye.", "Thanks for calling. Goodbye!", []).missed_tool
    assert degenerate_kinds("Sure. Caller: yes") == ["leak"]
    assert degenerate_kinds("One. Two. Three.") == ["too_long"]
    assert word_error_rate("When you close on Friday", "when do you close on friday") == pytest.approx(1 / 5)


def test_the_evaluation_set_is_well_formed():
    sets = load_sets()
    items = [i for s in sets for i in s.items]
    assert len(items) >= 40 and {s.split for s in sets} == {"tune", "heldout"}
    cats = {i.category for i in items}
    assert {"hours", "prices", "address", "booking", "insurance", "smalltalk", "offtopic", "person", "goodbye"} <= cats
    assert {i.tool for i in items} >= {"none", "end_call", "transfer", "collect_digits"}


def test_no_evaluation_item_is_in_the_prompt_or_the_code():
    """The evaluation set measures the product only if the product never saw it."""
    from pathlib import Path

    from bridge.benchmarks.turns import load_turn_sets
    from bridge.config import load_settings
    from bridge.conversation.prompt import build_completion_prompt
    from bridge.evaluation.scoring import words

    agent = load_settings(None).agent
    prompt = " ".join(words(build_completion_prompt(agent, [])))
    code = " ".join(
        words(" ".join(p.read_text() for p in [*Path("bridge").rglob("*.py"), *Path("tests").glob("test_*.py")]))
    )
    answers = [(i.id, i.say) for s in load_sets() for i in s.items]
    turns = [(i.id, f"{i.say} {i.then}") for s in load_turn_sets() for i in s.items]  # the turn-taking set
    assert len(turns) >= 40
    for item_id, text in answers + turns:
        said = " ".join(words(text))
        if len(said.split()) < 3:
            continue  # "Yes.", "Okay.", "Tuesday." are words, not items anyone copied
        assert said not in prompt and said not in code, item_id


def test_sentences_end_at_punctuation_not_at_titles():
    from bridge.conversation.sentences import first_sentence

    assert first_sentence("The dentists are Dr. Patel and Dr. Moreno. We") == (
        "The dentists are Dr. Patel and Dr. Moreno.",
        "We",
    )
    assert first_sentence("Hi! How are") == ("Hi!", "How are")
    assert first_sentence("We are at 42 Maple St. next") is None
    assert first_sentence("We open at 8 am.") is None  # no white space yet: more may follow ("8 am.m.")


def test_the_fact_a_question_is_about():
    from bridge.conversation.facts import FactIndex

    index = FactIndex(
        [
            "We are open Monday to Friday from 8 am to 6 pm.",
            "We are closed on Sunday.",
            "A filling costs 150 dollars.",
            "There is free parking behind the building.",
            "We do not accept Medicaid.",
        ]
    )
    assert index.lookup("Are you open on Sundays?") == "We are closed on Sunday."
    assert index.lookup("How much do you charge for a filling?") == "A filling costs 150 dollars."
    assert index.lookup("Where can I leave my car?") == "There is free parking behind the building."
    assert index.lookup("Tell me a joke.") is None


def test_an_ungrounded_answer_is_replaced_by_its_fact():
    known = {"8", "6", "150"}
    guard = ReplyGuard("Sam", fact="We are closed on Sunday.", known_numbers=known, caller="Are you open on Sunday?")
    verdict = guard.sentence("Yes, we are open on Sundays.")
    assert verdict.speak == "We are closed on Sunday." and verdict.stop and verdict.reason == "ungrounded"
    guard = ReplyGuard("Sam", fact="A filling costs 150 dollars.", known_numbers=known, caller="How much is a filling?")
    assert guard.sentence("It's $15.00").speak == "A filling costs 150 dollars."  # an invented price
    guard = ReplyGuard("Sam", fact="A filling costs 150 dollars.", known_numbers=known, caller="How much is a filling?")
    assert guard.sentence("A filling is 150 dollars.").speak == "A filling is 150 dollars."
    guard = ReplyGuard("Sam", fact="There is free parking behind the building.", caller="Is there parking close by?")
    assert guard.sentence("Yes, there is parking close by.").reason == "ungrounded"  # only the question again


def test_the_completion_prompt():
    from bridge.config import load_settings
    from bridge.conversation.prompt import build_completion_prompt

    agent = load_settings(
        overrides={
            "agent": {
                "facts": ["We are closed on Sunday.", "A filling costs 150 dollars."],
                "examples": [["Hi!", "Hello!"]],
                "history_turns": 2,
            }
        }
    ).agent
    history = [("caller", "First question?"), ("agent", "First answer."), ("caller", "Are you open on Sunday?")]
    prompt = build_completion_prompt(agent, history)
    lines = prompt.splitlines()
    assert "We are closed on Sunday." in lines[2:4]  # the facts block
    assert "First question?" not in prompt  # outside the history window
    assert lines[-3:] == ["Caller: Are you open on Sunday?", "(Sam looks it up: We are closed on Sunday.)", "Sam:"]
    assert "[collect_digits" not in prompt  # the caller is not asking about a record
    assert "[collect_digits" in build_completion_prompt(agent, [("caller", "Can I check my appointment?")])


def test_an_echo_of_the_question_and_a_repeated_reply_are_not_answers():
    guard = ReplyGuard("Sam", caller="Can you recommend a good pizza place near you?")
    assert guard.sentence("Yes, I can recommend a good pizza place.").reason == "echo"
    assert ReplyGuard("Sam", caller="Good afternoon!").sentence("Good afternoon! How can I help you?").speak
    guard = ReplyGuard(
        "Sam", caller="Third, they afternoon would be ideal.", previous="Yes, I can do a cleaning for you."
    )
    assert guard.sentence("Yes, I can do a cleaning for you.").reason == "repeated_reply"
    assert guard.finish() == "empty"
