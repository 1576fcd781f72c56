"""The in-process LLM decodes several calls' turns as sequences of one llama.cpp batch
(bridge/engines/llm.py), with the text each turn gets alone, and tells a finished caller
line from an unfinished one by its next-token distribution."""

from __future__ import annotations

import threading

import pytest

from bridge.config import load_settings
from bridge.conversation.prompt import build_completion_prompt, completion_prompt_prefix, stop_sequences
from bridge.engines.llm import LlamaCppLlm, embedded_llm_path

from .conftest import ROOT

pytestmark = pytest.mark.slow  # loads the real models

QUESTIONS = [
    "What time do you open on Saturday?",
    "How much does a cleaning cost?",
    "Where is the clinic?",
    "Do you take new patients?",
]


@pytest.fixture(scope="module")
def llm():
    model = LlamaCppLlm(embedded_llm_path(ROOT / "models"), parallel=4)
    yield model
    model.close()


def _reply(llm, agent, question: str) -> str:
    prompt = build_completion_prompt(agent, [("caller", question)])
    return "".join(
        llm.stream(prompt, stop_sequences(agent), 48, 0.0, threading.Event(), repeat_penalty=agent.repeat_penalty)
    )


def test_coinciding_turns_decode_together_with_the_text_each_gets_alone(llm):
    agent = load_settings(None).agent
    llm.warm(build_completion_prompt(agent, []))
    alone = {q: _reply(llm, agent, q) for q in QUESTIONS}
    assert llm.widest == 1
    together: dict[str, str] = {}
    start = threading.Barrier(len(QUESTIONS))

    def call(q: str) -> None:
        start.wait()
        together[q] = _reply(llm, agent, q)

    threads = [threading.Thread(target=call, args=(q,)) for q in QUESTIONS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert together == alone
    assert llm.widest == len(QUESTIONS)  # one llama_decode carried all four turns
    assert "9" in alone[QUESTIONS[0]] and "90" in alone[QUESTIONS[1]]


def test_stop_strings_end_the_text_and_are_not_yielded(llm):
    text = "".join(
        llm.stream(
            "Caller: Hello\nSam: Hi there, how can I help?\nCaller: What is two plus two?\nSam:",
            ["\n"],
            40,
            0.0,
            threading.Event(),
        )
    )
    assert text and "\n" not in text


def test_a_cancelled_turn_stops_and_frees_its_sequence(llm):
    cancel = threading.Event()
    pieces = []
    for piece in llm.stream("Count slowly from one to one hundred: one, two,", [], 200, 0.0, cancel):
        pieces.append(piece)
        if len(pieces) == 3:
            cancel.set()
    assert 3 <= len(pieces) <= 5  # at most a step more once cancelled
    stream = llm.stream("Count slowly from one to one hundred: one, two,", [], 200, 0.0, threading.Event())
    next(stream)
    stream.close()  # the reader went away: the sequence is freed too
    assert len(list(llm.stream("One, two,", [], 3, 0.0, threading.Event()))) >= 1
    assert llm.waiting == 0


def test_the_end_of_a_caller_line_from_the_next_token(llm):
    agent = load_settings(None).agent
    prefix = completion_prompt_prefix(agent, []) + "Caller: "
    finished = [
        llm.end_probability(prefix + t) for t in ("What time do you open on Saturday", "How much does a cleaning cost")
    ]
    unfinished = [
        llm.end_probability(prefix + t)
        for t in (
            "I would like to book an appointment for",
            "My daughter needs to see someone because",
            "Could you tell me whether you take",
        )
    ]
    assert min(finished) > 0.1 and max(unfinished) < agent.turn_text_threshold, (finished, unfinished)
