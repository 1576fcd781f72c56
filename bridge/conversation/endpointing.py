"""Turn-taking's pure judgements: how much silence ends the caller's turn
(:func:`endpoint_threshold`), whether words heard over the agent are a guess of the
recognizer (:func:`unsure`), and the silence watch that reprompts a quiet caller
(:class:`SilenceWatch`). No clock is read here: times are passed in (monotonic seconds).
"""

from __future__ import annotations

from ..config import AgentSettings
from .actions import Action, GiveUp, Reprompt
from .backchannel import words_of
from .turns import sentence_state


def endpoint_threshold(
    agent: AgentSettings, text: str | None, p_text: float | None, p_audio: float | None, interim_text: str
) -> tuple[int, str, str]:
    """``(silence ms, rule, reason)`` that ends the caller's utterance, from its speculative
    transcript ``text`` (``None``: none yet) with the language model's end-of-line
    probability ``p_text`` and Smart Turn's ``p_audio`` (``None``: not known), else the
    latest ``interim_text``.

    ``rule`` is ``finished``, ``unfinished`` or ``unknown``; ``reason`` names the signal
    that decided (``words``, ``language``, ``audio``, ``short answer``, ``language (unsure)``).
    """
    a = agent
    if text is not None:
        if sentence_state(text) == "unfinished":
            return a.endpoint_slow_ms, "unfinished", "words"
        if p_text is not None and p_text < a.turn_text_threshold:
            return a.endpoint_slow_ms, "unfinished", "language"
        if p_audio is not None and p_audio < a.turn_audio_threshold:
            return a.endpoint_slow_ms, "unfinished", "audio"
        if p_text is not None and p_text < a.turn_text_sure:
            if len(words_of(text)) <= a.turn_short_words:
                return a.endpoint_fast_ms, "finished", "short answer"
            return a.endpoint_slow_ms, "finished", "language (unsure)"
        if text:
            return a.endpoint_fast_ms, "finished", ""
    if interim_text and sentence_state(interim_text) == "unfinished":
        return a.endpoint_slow_ms, "unfinished", "words"
    return a.endpoint_silence_ms, "unknown", ""


def unsure(agent: AgentSettings, text: str, logprob: float | None, voiced_s: float) -> bool:
    """Whether ``text`` is a guess of the recognizer: its average log probability
    ``logprob`` under ``barge_in_min_logprob``, and either no more than
    ``barge_in_unsure_max_words`` words or more words than ``voiced_s`` seconds of voiced
    speech could carry (``barge_in_unsure_words_per_s``: a 0.3 s cough heard as five
    words). ``False`` when ``logprob`` is not known."""
    if logprob is None or logprob >= agent.barge_in_min_logprob:
        return False
    words = len(text.split())
    voiced_s = max(voiced_s, 0.02)  # at least one 20 ms frame
    return words <= agent.barge_in_unsure_max_words or words > agent.barge_in_unsure_words_per_s * voiced_s


class SilenceWatch:
    """Reprompts a caller who says nothing: after ``reprompt_after_s`` of silence on both
    sides a :class:`~.actions.Reprompt`, after ``max_reprompts`` unanswered a
    :class:`~.actions.GiveUp`.

    Args:
        agent: :class:`bridge.config.AgentSettings`.
        now: the call's start, monotonic seconds.
    """

    def __init__(self, agent: AgentSettings, now: float) -> None:
        self._agent = agent
        self._last_activity = now
        self._reprompts = 0

    def caller_spoke(self, now: float) -> None:
        """The caller is speaking: the clock and the count start again."""
        self._last_activity = now
        self._reprompts = 0

    def agent_quiet(self, now: float) -> None:
        """The agent stopped speaking: the silence clock starts now."""
        self._last_activity = now

    def tick(self, now: float, busy: bool, utterance: int) -> list[Action]:
        """Time passes; ``busy``: someone speaks or something keeps the line busy, so the
        silence clock does not run. ``utterance``: the caller's latest, for the action."""
        a = self._agent
        if busy:
            self._last_activity = now  # the clock runs only while both sides are quiet
            return []
        if a.reprompt_after_s <= 0 or now - self._last_activity < a.reprompt_after_s:
            return []
        self._last_activity = now
        if self._reprompts >= a.max_reprompts:
            return [GiveUp(utterance)]
        self._reprompts += 1
        return [Reprompt(utterance)]
