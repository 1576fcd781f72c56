"""Turns as records: what the caller said and what the agent's reply actually played,
handed to a sink when the turn ends.

A turn opens when the agent starts an utterance: the reply to a caller's final
transcript, or an utterance of its own (greeting, reprompt, apology: ``caller_text``
``None``). It ends, and is handed to the sink once, at the first of:

- its utterance is fully generated and fully played (on RTP: sent; on Media
  Streams: marked played by Twilio);
- the agent was stopped (barge-in: the text is cut at the point reached, the same
  truth the history keeps), or the next turn began;
- the call ended.

So a crash loses at most the turn in progress.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from .turns import AgentUtterance

#: The latency keys a turn record carries (seconds after the end of the caller's speech).
LATENCY_KEYS = ("endpoint", "asr_final", "llm_first_token", "first_sentence", "tts_first_audio", "first_packet")


def relative_latencies(times: dict[str, float] | None) -> dict[str, float]:
    """``times`` (clock readings, seconds) relative to ``times["speech_end"]``, rounded to ms;
    ``{}`` without a speech end (agent-only utterances)."""
    if not times or "speech_end" not in times:
        return {}
    start = times["speech_end"]
    return {k: round(times[k] - start, 3) for k in LATENCY_KEYS if k in times}


class TurnRecorder:
    """Builds one record per turn and gives it to ``sink`` (a callable taking a dict).

    The record: ``seq`` (0, 1, ... within the call), ``started_at`` and ``ended_at``
    (UTC datetimes), ``caller_text`` (``None`` for agent-only utterances),
    ``agent_text`` (as played), ``barged_in``, ``endpoint_rule``, ``latencies``
    (:func:`relative_latencies`), ``dtmf`` (digits received during the turn),
    ``tools`` (names of the tools run).

    Args:
        sink: called once per turn, on the event loop; must not block.
        redact: text -> text applied to ``caller_text`` and ``agent_text`` before the
            sink sees them (``privacy.redact``), or ``None``.
    """

    def __init__(self, sink: Callable[[dict], None], redact: Callable[[str], str] | None = None) -> None:
        self.sink = sink
        self.redact = redact
        self.seq = 0
        self._open: dict | None = None

    def begin(self, caller_text: str | None, utt: AgentUtterance, times: dict | None) -> None:
        """The agent starts ``utt`` (in reply to ``caller_text``): the previous turn ends."""
        self.end()
        self._open = {
            "utt": utt,
            "times": times,
            "caller_text": caller_text,
            "started_at": datetime.now(UTC),
            "complete": False,
            "rule": None,
            "tools": [],
            "dtmf": "",
        }

    def generated(self, utt: AgentUtterance, rule: str | None, tools: list[str]) -> None:
        """Everything ``utt`` will say is queued; the turn ends once it has played."""
        turn = self._open
        if turn is None or turn["utt"] is not utt:
            return
        turn.update(complete=True, rule=rule, tools=list(tools))
        self.progressed(utt)

    def progressed(self, utt: AgentUtterance) -> None:
        """More of ``utt`` has played (cheap: called per frame)."""
        turn = self._open
        if turn is not None and turn["utt"] is utt and turn["complete"] and utt.played >= sum(utt.samples):
            self.end()

    def stopped(self, utt: AgentUtterance | None) -> None:
        """The agent was stopped in ``utt`` (barge-in, transfer, the call's end)."""
        if self._open is not None and (utt is None or self._open["utt"] is utt):
            self.end()

    def dtmf(self, digit: str) -> None:
        """A digit arrived; it belongs to the open turn (if any)."""
        if self._open is not None:
            self._open["dtmf"] += digit

    def end(self) -> None:
        """End the open turn now (idempotent) and hand its record to the sink."""
        turn, self._open = self._open, None
        if turn is None:
            return
        utt: AgentUtterance = turn["utt"]
        caller, agent = turn["caller_text"], utt.played_text()
        if self.redact is not None:
            caller = self.redact(caller) if caller is not None else None
            agent = self.redact(agent)
        record = {
            "seq": self.seq,
            "started_at": turn["started_at"],
            "ended_at": datetime.now(UTC),
            "caller_text": caller,
            "agent_text": agent,
            "barged_in": utt.interrupted,
            "endpoint_rule": turn["rule"],
            "latencies": relative_latencies(turn["times"]),
            "dtmf": turn["dtmf"],
            "tools": turn["tools"],
        }
        self.seq += 1
        self.sink(record)
