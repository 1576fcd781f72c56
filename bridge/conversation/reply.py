"""The agent's turn: the caller's words -> call control or LLM -> guards -> TTS -> playout.

:class:`ReplyMixin` is the half of :class:`bridge.conversation.engine.Conversation`
that produces replies (split out of engine.py along that seam, issue 9); the
engine keeps turn-taking, barge-in and playout. The reply path, in order:

1. leave-taking and requests for a person are answered in code
   (:mod:`.intents`): goodbye + hang-up, announcement + transfer;
2. otherwise the LLM streams (completion prompt with facts and a bounded
   history, :mod:`.prompt`), sentence by sentence (:mod:`.sentences`);
3. every sentence passes :class:`.guards.ReplyGuard` (loops, leaked speaker
   lines, a third sentence, an unasked farewell, an answer against the facts)
   before it is synthesized; nothing it rejects is spoken or kept in the history,
   and a reply with nothing left becomes ``agent.fallback``;
4. the model's tool calls run only when the caller asked for them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable

import numpy as np

from ..engines.tools import TOOL_SCHEMAS, ToolCall, digits_in, split_commands
from .failures import EngineError, awaited
from .facts import grounding_fact
from .guards import ReplyGuard
from .intents import about_existing_record, wants_person, wants_to_end
from .prompt import build_chat_messages, build_completion_prompt, completion_prompt_prefix, stop_sequences
from .sentences import first_sentence
from .turns import AgentUtterance, EitherEvent, Speculation

log = logging.getLogger("bridge.conversation")


class ReplyMixin:
    """Reply generation for :class:`~bridge.conversation.engine.Conversation` (see the module docstring)."""

    def _llm_stream(self, cancel):
        """The LLM call for this turn, by mode: completion (transcript prompt) or chat."""
        agent = self.agent
        transcript = self.transcript()
        if agent.llm_mode == "chat":
            tools = [t for t in TOOL_SCHEMAS if t["function"]["name"] in agent.tools] or None
            return self.engines.llm.stream_chat(build_chat_messages(agent, transcript), agent.max_tokens, agent.temperature, cancel, tools=tools)
        prompt = build_completion_prompt(agent, transcript)
        return self.engines.llm.stream(
            prompt, stop_sequences(agent), agent.max_tokens, agent.temperature, cancel, repeat_penalty=agent.repeat_penalty, presence_penalty=agent.presence_penalty
        )

    def _prime_llm(self) -> None:
        """The caller started speaking while the agent is quiet: evaluate the prompt up
        to the caller's coming line in a worker thread (:func:`.prompt.completion_prompt_prefix`),
        so that the turn's first token waits only for the caller's own line and its
        fact note (measured on 2 cores: first token 106 -> 53 ms on the third turn).
        Completion mode on an engine with ``prime`` (in-process llama.cpp) only; once
        per history; skipped by the engine while another call's turn holds it."""
        prime = getattr(self.engines.llm, "prime", None)
        if prime is None or self.agent.llm_mode != "completion":
            return
        prefix = completion_prompt_prefix(self.agent, self.transcript())
        if prefix == self._primed:
            return
        self._primed = prefix
        future = self.threads.run(prime, prefix)
        future.add_done_callback(lambda f: f.cancelled() or f.exception() is None or log.debug("llm: priming failed: %s", f.exception()))

    def _llm_thread(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, cancel, times: dict) -> None:
        """Worker thread: LLM pieces onto ``queue``, then ``None``; an engine
        exception is put on the queue (as :class:`EngineError`) before the ``None``."""
        try:
            for piece in self._llm_stream(cancel):
                if "llm_first_token" not in times:
                    times["llm_first_token"] = self.clock()
                loop.call_soon_threadsafe(queue.put_nowait, piece)
        except Exception as exc:  # noqa: BLE001 - reported to the loop side, never kills the thread pool
            loop.call_soon_threadsafe(queue.put_nowait, EngineError("llm", exc))
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    async def _reply(
        self, pcm: np.ndarray | None, times: dict[str, float], cancel: threading.Event, spec: Speculation | None = None, rule: str = "unknown", text: str | None = None
    ) -> None:
        """One agent turn: the caller's words (``text``, or ASR of ``pcm``) -> LLM -> TTS -> playout.
        An engine failure on the way becomes the apology (:mod:`bridge.conversation.failures`)."""
        try:
            await self._turn(pcm, times, cancel, spec, rule, text)
        except EngineError as exc:
            self._engine_failed(exc)

    async def _turn(
        self, pcm: np.ndarray | None, times: dict[str, float], cancel: threading.Event, spec: Speculation | None, rule: str, text: str | None
    ) -> None:
        if text is None:
            if spec is not None:
                # The speculative pass covers the whole utterance (the caller did not resume).
                text = (await awaited("asr", spec.future)).strip()
                times["asr_final"] = spec.done_at or self.clock()
            else:
                text = (await self.threads.call("asr", self.engines.asr.transcribe, pcm)).strip()
                times["asr_final"] = self.clock()
            if not text or cancel.is_set():
                log.info("turn call=%s: no words recognized in %.2f s of audio", self.leg.call_id, len(pcm) / 8000)
                return
            if self._collecting is not None:
                # collect_digits: spoken digits count like keyed ones.
                self._add_digits(digits_in(text), spoken=text)
                return
        self.history.append(("caller", text))
        utt = AgentUtterance()
        self._current = utt
        self._times = times
        self.history.append(("agent", utt))
        if self.records is not None:
            self.records.begin(text, utt, times)
        if await self._call_control(text, utt, rule, cancel):
            return
        calls: list[ToolCall] = []
        fact, known_numbers = grounding_fact(self.agent, text)
        guard = ReplyGuard(self.agent.name, self.agent.max_sentences, fact=fact, known_numbers=known_numbers, caller=text, previous=self._previous_reply(text))
        stop = threading.Event()  # the guards stop generation; ``cancel`` is barge-in's
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        producer = self.threads.run(self._llm_thread, loop, queue, EitherEvent(cancel, stop), times)
        buffer = ""
        failure: EngineError | None = None
        try:
            while True:
                piece = await queue.get()
                if piece is None:
                    break
                if isinstance(piece, EngineError):
                    failure = piece
                    continue
                if isinstance(piece, ToolCall):
                    calls.append(piece)
                    continue
                if stop.is_set():
                    continue
                buffer += piece
                while not stop.is_set() and (found := first_sentence(buffer)) is not None:
                    sentence, buffer = found
                    await self._speak_generated(sentence, utt, times, cancel, calls, guard, stop)
                if not stop.is_set() and guard.partial(buffer):
                    # A loop or another speaker's line before any sentence end: the
                    # guard keeps what may be said of it, and generation stops.
                    tail, buffer = buffer, ""
                    await self._speak_generated(tail, utt, times, cancel, calls, guard, stop)
                    stop.set()
            if buffer.strip() and not cancel.is_set() and failure is None and not stop.is_set():
                await self._speak_generated(buffer.strip(), utt, times, cancel, calls, guard, stop)
            if failure is None and not cancel.is_set() and guard.finish() == "empty" and not calls and self.agent.fallback:
                # Nothing speakable survived the guards: a short clarifying question instead.
                self._guarded("empty", "")
                await self._speak_sentence(self.agent.fallback, utt, times, cancel, fixed=True)
        finally:
            cancel.set()
            await asyncio.shield(producer)
            self._log_turn(text, utt, rule, calls, guard.dropped)
        if failure is not None:
            raise failure
        self._run_tools(calls, " ".join(utt.sentences), text)

    async def _call_control(self, text: str, utt: AgentUtterance, rule: str, cancel: threading.Event) -> bool:
        """Leave-taking and explicit requests for a person are answered in code
        (:mod:`bridge.conversation.intents`), not by the model: say ``agent.goodbye``
        and hang up, or say ``transfer.announce`` and transfer. True when handled."""
        agent = self.agent
        if "end_call" in agent.tools and wants_to_end(text, self._asked_anything_else()):
            await self._speak_sentence(agent.goodbye, utt, None, cancel, fixed=True)
            self._log_turn(text, utt, rule, [ToolCall("end_call")])
            self._after_playout_do(self._hangup)
            return True
        t = self.transfer_settings
        if "transfer" in agent.tools and t is not None and t.target and wants_person(text):
            log.info("transfer call=%s to %s (the caller asked for a person)", self.leg.call_id, t.target)
            await self._speak_sentence(t.announce, utt, None, cancel, fixed=True)
            self._log_turn(text, utt, rule, [ToolCall("transfer")])
            self._after_playout_do(lambda: self.leg.transfer(t.target))
            return True
        return False

    def _previous_reply(self, caller: str) -> str:
        """The agent's reply before this turn, when the caller now says something else
        (the same question twice may get the same answer twice)."""
        said = self.transcript()[:-1]  # without this turn's caller line (its agent line is still empty)
        callers = [t for r, t in said if r == "caller"]
        if callers and " ".join(callers[-1].lower().split()) == " ".join(caller.lower().split()):
            return ""
        agents = [t for r, t in said if r == "agent"]
        return agents[-1] if agents else ""

    def _asked_anything_else(self) -> bool:
        """Whether the agent's last words asked if the caller needs anything else
        (then a plain "no" takes leave)."""
        for role, item in reversed(self.history[:-2]):
            if role == "agent":
                said = item.played_text() if isinstance(item, AgentUtterance) else str(item)
                return bool(re.search(r"\banything else\b", said, re.I))
        return False

    def _guarded(self, reason: str, text: str) -> None:
        """Count (``bridge_reply_guard_total{reason}``) and log (INFO) output the guards kept from the caller."""
        if self.metrics:
            self.metrics.guarded.labels(reason).inc()
        log.info("guard call=%s %s: not spoken %r", self.leg.call_id, reason, text[:120])

    def _engine_failed(self, exc: EngineError) -> None:
        """Count and log the failure (once per call and stage), apologize, then
        continue, transfer or hang up as ``agent.on_engine_error`` says."""
        if self.metrics:
            self.metrics.engine_errors.labels(exc.stage).inc()
        if exc.stage not in self._failed_stages:
            self._failed_stages.add(exc.stage)
            log.warning("engine failure call=%s stage=%s: %s (apologizing, then %s)", self.leg.call_id, exc.stage, exc, self.agent.on_engine_error)
        if self._closed:
            return
        action = self.agent.on_engine_error
        target = self.transfer_settings.target if self.transfer_settings is not None else ""
        then = None
        if action == "end_call":
            then = self._hangup
        elif action == "transfer" and target:
            then = lambda: self.leg.transfer(target)  # noqa: E731
        self._cancel = threading.Event()
        self._spawn(self._apologize(then))

    async def _apologize(self, then: Callable[[], None] | None) -> None:
        try:
            if self.agent.error_apology:
                await self._say(self.agent.error_apology)
        except EngineError as exc:  # TTS itself is down: nothing can be said
            log.warning("call=%s: cannot say the apology: %s", self.leg.call_id, exc)
        if then is not None:
            self._after_playout_do(then)

    def _run_tools(self, calls: list[ToolCall], said: str, caller: str) -> None:
        """Execute the turn's tool calls once what was said has been played.

        The model proposes, the caller's words dispose (:mod:`bridge.conversation.intents`):
        ``end_call`` only when the caller took leave, ``transfer`` only on an
        explicit request, ``collect_digits`` only about an existing appointment or
        account. A refused call is counted and logged, never run.
        """
        allowed = set(self.agent.tools)
        permitted = {
            "end_call": lambda: wants_to_end(caller, self._asked_anything_else()),
            "transfer": lambda: wants_person(caller),
            "collect_digits": lambda: about_existing_record(caller),
        }
        for call in calls:
            if call.name not in allowed:
                log.info("call=%s: tool %s not enabled, ignored", self.leg.call_id, call.name)
                continue
            if not permitted[call.name]():
                log.info("call=%s: tool %s refused: the caller did not ask for it (%r)", self.leg.call_id, call.name, caller[:80])
                if self.metrics:
                    self.metrics.tools_refused.labels(call.name).inc()
                continue
            log.info("tool call=%s %s %s", self.leg.call_id, call.name, call.arguments or "")
            if call.name == "end_call":
                self._after_playout_do(self._hangup)
                return
            if call.name == "transfer":
                target = self.transfer_settings.target if self.transfer_settings is not None else ""
                if target:
                    self._after_playout_do(lambda: self.leg.transfer(target))
                else:
                    log.warning("call=%s: transfer asked but transfer.target is not configured", self.leg.call_id)
                return
            if call.name == "collect_digits":
                count = call.arguments.get("count", 4)
                self._start_collecting(int(count) if str(count).isdigit() else 4)
                return
        if self._end_call_re and self._end_call_re.search(said) and wants_to_end(caller, self._asked_anything_else()):
            self._after_playout_do(self._hangup)

    # collect_digits ---------------------------------------------------------

    def _start_collecting(self, count: int) -> None:
        count = max(1, min(count, 20))
        self._collecting = {"count": count, "digits": ""}
        log.info("call=%s: collecting %d digits", self.leg.call_id, count)
        if self._digits_timer is not None:
            self._digits_timer.cancel()
        self._digits_timer = asyncio.get_running_loop().call_later(self.agent.digits_timeout_s, self._digits_timed_out)

    def _add_digits(self, digits: str, spoken: str | None = None) -> None:
        state = self._collecting
        if state is None or not digits:
            return
        state["digits"] += digits
        if len(state["digits"]) >= state["count"]:
            self._finish_collecting(state["digits"][: state["count"]])

    def _finish_collecting(self, digits: str | None) -> None:
        self._collecting = None
        if self._digits_timer is not None:
            self._digits_timer.cancel()
            self._digits_timer = None
        if digits:
            self.collected_digits.append(digits)
        log.info("call=%s: digits collected: %s", self.leg.call_id, digits if digits else "(none, timed out)")
        said = f"(entered {' '.join(digits)})" if digits else "(entered nothing)"
        self._start_reply(None, {}, text=said)

    def _digits_timed_out(self) -> None:
        self._digits_timer = None
        if self._collecting is not None:
            self._finish_collecting(self._collecting["digits"] or None)

    async def _speak_generated(
        self, sentence: str, utt: AgentUtterance, times: dict, cancel: threading.Event, calls: list[ToolCall], guard: ReplyGuard, stop: threading.Event
    ) -> None:
        """One generated sentence: take out ``[command]`` markers, pass the rest
        through the guard, speak what it allows; set ``stop`` when it says so."""
        text, commands = split_commands(sentence)
        calls.extend(commands)
        if not text:
            return
        verdict = guard.sentence(text)
        if verdict.reason:
            self._guarded(verdict.reason, text)
        if verdict.stop:
            stop.set()
        if not verdict.speak:
            return
        if "first_sentence" not in times:
            times["first_sentence"] = self.clock()
        await self._speak_sentence(verdict.speak, utt, times, cancel)

    def _log_turn(self, caller: str, utt: AgentUtterance, rule: str, calls: list[ToolCall] | None = None, dropped: list[str] | None = None) -> None:
        agent = " ".join(utt.sentences)
        if self.records is not None:
            self.records.generated(utt, rule, [c.name for c in calls or []])
        self.turn_log.append(
            {"caller": caller, "agent": agent, "interrupted": utt.interrupted, "endpoint_rule": rule, "tools": [c.name for c in calls or []], "dropped": list(dropped or [])}
        )
        log.info("turn call=%s caller=%r agent=%r endpoint_rule=%s%s", self.leg.call_id, caller, agent, rule, " (interrupted)" if utt.interrupted else "")
