"""The agent's turn: the caller's words -> call control or LLM -> guards -> TTS -> playout.

:class:`ReplyMixin` is the half of :class:`bridge.conversation.engine.Conversation`
that produces replies (split out of engine.py along that seam); the
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

from ..engines.llm import Probe
from ..engines.tools import TOOL_SCHEMAS, ToolCall, digits_in, split_commands
from .facts import grounding_fact
from .failures import EngineError
from .guards import ReplyGuard
from .intents import about_existing_record, wants_person, wants_to_end
from .prompt import build_chat_messages, build_completion_prompt, completion_prompt_prefix, stop_sequences
from .sentences import first_clause, first_sentence
from .turns import AgentUtterance, EitherEvent, Reply, probe_text

log = logging.getLogger("bridge.conversation")


def _resolve(future: asyncio.Future | None, value) -> None:
    if future is not None and not future.done():
        future.set_result(value)


class ReplyMixin:
    """Reply generation for :class:`~bridge.conversation.engine.Conversation` (see the module docstring)."""

    def _llm_stream(self, cancel, transcript: list[tuple[str, str]], probe: bool = False):
        """The LLM call for this turn, by mode: completion (transcript prompt) or chat.
        ``probe``: also ask for the end-of-line probability after the caller's words
        (:class:`bridge.engines.llm.Probe`, yielded first; completion mode, in-process llama.cpp)."""
        agent = self.agent
        if agent.llm_mode == "chat":
            tools = [t for t in TOOL_SCHEMAS if t["function"]["name"] in agent.tools] or None
            return self.engines.llm.stream_chat(build_chat_messages(agent, transcript), agent.max_tokens, agent.temperature, cancel, tools=tools)
        prompt = build_completion_prompt(agent, transcript)
        extra = {}
        if probe:
            at = prompt.rindex("Caller: ") + len("Caller: ")  # the live caller line is the last one
            extra["probe"] = prompt[:at] + probe_text(" ".join(transcript[-1][1].split()))
        return self.engines.llm.stream(
            prompt, stop_sequences(agent), agent.max_tokens, agent.temperature, cancel, repeat_penalty=agent.repeat_penalty, presence_penalty=agent.presence_penalty,
            **extra,
        )

    def _prime_llm(self) -> None:
        """The caller started speaking while the agent is quiet: evaluate the prompt up
        to the caller's coming line in a worker thread (:func:`.prompt.completion_prompt_prefix`),
        so that the turn's first token waits only for the caller's own line and its
        fact note (measured on 2 cores: first token 106 -> 53 ms on the third turn).
        Completion mode on an engine with ``prime`` (in-process llama.cpp) only; once
        per history; skipped by the engine while turns wait for it."""
        prime = getattr(self.engines.llm, "prime", None)
        if prime is None or self.agent.llm_mode != "completion":
            return
        prefix = completion_prompt_prefix(self.agent, self.transcript())
        if prefix == self._primed:
            return
        self._primed = prefix
        future = self.threads.run(prime, prefix)
        future.add_done_callback(lambda f: f.cancelled() or f.exception() is None or log.debug("llm: priming failed: %s", f.exception()))

    def _llm_thread(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, cancel, times: dict, transcript: list[tuple[str, str]], probed: asyncio.Future | None) -> None:
        """Worker thread: LLM pieces onto ``queue``, then ``None``; an engine
        exception is put on the queue (as :class:`EngineError`) before the ``None``.
        ``probed``: resolved with the end-of-line probability, when the engine gives one."""
        try:
            for piece in self._llm_stream(cancel, transcript, probe=probed is not None):
                if isinstance(piece, Probe):
                    loop.call_soon_threadsafe(_resolve, probed, piece.probability)
                    continue
                if "llm_first_token" not in times:
                    times["llm_first_token"] = self.clock()
                loop.call_soon_threadsafe(queue.put_nowait, piece)
        except Exception as exc:  # noqa: BLE001 - reported to the loop side, never kills the thread pool
            loop.call_soon_threadsafe(queue.put_nowait, EngineError("llm", exc))
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    def _release(self, reply: Reply) -> None:
        """The end of the turn: ``reply`` is heard from now on. Its caller line and utterance
        enter the history and the call record, and what it has synthesized so far goes to
        playout. Asked before the reply has begun (its transcript still running), the
        reply releases itself when it begins."""
        reply.release_asked = True
        if reply.utt is None or reply.released:
            return
        reply.released = True
        self.history.append(("caller", reply.text))
        self.history.append(("agent", reply.utt))
        self._current = reply.utt
        self._times = reply.times
        if self.records is not None:
            self.records.begin(reply.text, reply.utt, reply.times)
        self._playout.extend(reply.stash)
        reply.stash.clear()
        reply.released_event.set()

    async def _reply(
        self, pcm: np.ndarray | None, times: dict[str, float], cancel: threading.Event, rule: str = "unknown", text: str | None = None, reply: Reply | None = None
    ) -> None:
        """One agent turn: the caller's words (``text``, or ASR of ``pcm``) -> LLM -> TTS -> playout.
        ``reply``: a prepared reply (heard once released), else one heard at once. An
        engine failure on the way becomes the apology (:mod:`bridge.conversation.failures`),
        for a prepared reply once it is released."""
        try:
            await self._turn(pcm, times, cancel, rule, text, reply)
        except EngineError as exc:
            if reply is None or reply.release_asked:
                self._engine_failed(exc)
            else:
                reply.failure = exc
        finally:
            if reply is not None:
                _resolve(reply.probed, None)  # no LLM pass gave one (a call-control turn, a failure)

    async def _turn(
        self, pcm: np.ndarray | None, times: dict[str, float], cancel: threading.Event, rule: str, text: str | None, reply: Reply | None
    ) -> None:
        if text is None:
            text = (await self.threads.call("asr", self.engines.asr.transcribe, pcm)).strip()
            times["asr_final"] = self.clock()
            if not text or cancel.is_set():
                log.info("turn call=%s: no words recognized in %.2f s of audio", self.leg.call_id, len(pcm) / 8000)
                return
            if self._collecting is not None:
                # collect_digits: spoken digits count like keyed ones.
                self._add_digits(digits_in(text), spoken=text)
                return
        if reply is None:
            reply = Reply(0, 0, cancel, times=times, rule=rule, release_asked=True)
        before = self.transcript()  # the history this turn answers (without its own lines)
        utt = AgentUtterance()
        reply.text, reply.utt = text, utt
        if reply.release_asked:
            self._release(reply)
        if await self._call_control(text, utt, reply, cancel, before):
            return
        calls: list[ToolCall] = []
        fact, known_numbers = grounding_fact(self.agent, text)
        guard = ReplyGuard(self.agent.name, self.agent.max_sentences, fact=fact, known_numbers=known_numbers, caller=text, previous=self._previous_reply(text, before))
        stop = threading.Event()  # the guards stop generation; ``cancel`` is barge-in's
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        producer = self.threads.run(self._llm_thread, loop, queue, EitherEvent(cancel, stop), reply.times, [*before, ("caller", text)], reply.probed)
        buffer = ""
        failure: EngineError | None = None
        clause = self.agent.first_clause_words
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
                while not stop.is_set():
                    found, part = first_sentence(buffer), False
                    if found is None and clause and not utt.sentences and guard.fact is None:
                        found = first_clause(buffer, clause)  # speak the first clause while the model writes on
                        part = found is not None
                    if found is None:
                        break
                    sentence, buffer = found
                    await self._speak_generated(sentence, utt, reply, cancel, calls, guard, stop, clause=part)
                if not stop.is_set() and guard.partial(buffer):
                    # A loop or another speaker's line before any sentence end: the
                    # guard keeps what may be said of it, and generation stops.
                    tail, buffer = buffer, ""
                    await self._speak_generated(tail, utt, reply, cancel, calls, guard, stop)
                    stop.set()
            if buffer.strip() and not cancel.is_set() and failure is None and not stop.is_set():
                await self._speak_generated(buffer.strip(), utt, reply, cancel, calls, guard, stop)
            if failure is None and not cancel.is_set() and guard.finish() == "empty" and not calls and self.agent.fallback:
                # Nothing speakable survived the guards: a short clarifying question instead.
                self._guarded("empty", "")
                await self._speak_sentence(self.agent.fallback, utt, reply.times, cancel, fixed=True, reply=reply)
        finally:
            cancel.set()
            await asyncio.shield(producer)
            if reply.released:
                self._log_turn(text, utt, reply.rule, calls, guard.dropped, reply.reason, reply.scores)
        if failure is not None:
            raise failure
        if not reply.released:
            await reply.released_event.wait()
            self._log_turn(text, utt, reply.rule, calls, guard.dropped, reply.reason, reply.scores)
        self._run_tools(calls, " ".join(utt.sentences), text, before)

    async def _call_control(self, text: str, utt: AgentUtterance, reply: Reply, cancel: threading.Event, before: list[tuple[str, str]]) -> bool:
        """Leave-taking and explicit requests for a person are answered in code
        (:mod:`bridge.conversation.intents`), not by the model: say ``agent.goodbye``
        and hang up, or say ``transfer.announce`` and transfer (once released). True when handled."""
        agent = self.agent
        t = self.transfer_settings
        if "end_call" in agent.tools and wants_to_end(text, self._asked_anything_else(before)):
            phrase, tool, action = agent.goodbye, "end_call", self._hangup
        elif "transfer" in agent.tools and t is not None and t.target and wants_person(text):
            unavailable = getattr(self.leg, "transfer_unavailable", "")  # a browser call cannot be transferred
            phrase, tool, action = (unavailable, "transfer", lambda: None) if unavailable else (t.announce, "transfer", lambda: self.leg.transfer(t.target))
        else:
            return False
        await self._speak_sentence(phrase, utt, None, cancel, fixed=True, reply=reply)
        await reply.released_event.wait()
        if tool == "transfer":
            log.info("transfer call=%s to %s (the caller asked for a person)", self.leg.call_id, t.target)
        self._log_turn(text, utt, reply.rule, [ToolCall(tool)], reason=reply.reason)
        self._after_playout_do(action)
        return True

    def _previous_reply(self, caller: str, before: list[tuple[str, str]]) -> str:
        """The agent's reply before this turn (``before``: the transcript without this
        turn), when the caller now says something else (the same question twice may get
        the same answer twice)."""
        callers = [t for r, t in before if r == "caller"]
        if callers and " ".join(callers[-1].lower().split()) == " ".join(caller.lower().split()):
            return ""
        agents = [t for r, t in before if r == "agent"]
        return agents[-1] if agents else ""

    @staticmethod
    def _asked_anything_else(before: list[tuple[str, str]]) -> bool:
        """Whether the agent's last words before this turn asked if the caller needs
        anything else (then a plain "no" takes leave)."""
        for role, said in reversed(before):
            if role == "agent":
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

    def _run_tools(self, calls: list[ToolCall], said: str, caller: str, before: list[tuple[str, str]]) -> None:
        """Execute the turn's tool calls once what was said has been played.

        The model proposes, the caller's words dispose (:mod:`bridge.conversation.intents`):
        ``end_call`` only when the caller took leave, ``transfer`` only on an
        explicit request, ``collect_digits`` only about an existing appointment or
        account. A refused call is counted and logged, never run.
        """
        allowed = set(self.agent.tools)
        permitted = {
            "end_call": lambda: wants_to_end(caller, self._asked_anything_else(before)),
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
                    self._after_playout_do(lambda target=target: self.leg.transfer(target))
                else:
                    log.warning("call=%s: transfer asked but transfer.target is not configured", self.leg.call_id)
                return
            if call.name == "collect_digits":
                count = call.arguments.get("count", 4)
                self._start_collecting(int(count) if str(count).isdigit() else 4)
                return
        if self._end_call_re and self._end_call_re.search(said) and wants_to_end(caller, self._asked_anything_else(before)):
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
        self, sentence: str, utt: AgentUtterance, reply: Reply, cancel: threading.Event, calls: list[ToolCall], guard: ReplyGuard, stop: threading.Event,
        clause: bool = False,
    ) -> None:
        """One generated sentence (``clause``: the first clause of one): take out
        ``[command]`` markers, pass the rest through the guard, speak what it allows;
        set ``stop`` when it says so."""
        text, commands = split_commands(sentence)
        calls.extend(commands)
        if not text:
            return
        verdict = guard.clause(text) if clause else guard.sentence(text)
        if verdict.reason:
            self._guarded(verdict.reason, text)
        if verdict.stop:
            stop.set()
        if not verdict.speak:
            return
        if "first_sentence" not in reply.times:
            reply.times["first_sentence"] = self.clock()
        await self._speak_sentence(verdict.speak, utt, reply.times, cancel, reply=reply)

    def _log_turn(
        self, caller: str, utt: AgentUtterance, rule: str, calls: list[ToolCall] | None = None, dropped: list[str] | None = None, reason: str = "", scores: dict | None = None,
    ) -> None:
        agent = " ".join(utt.sentences)
        if self.records is not None:
            self.records.generated(utt, rule, [c.name for c in calls or []])
        self.turn_log.append(
            {"caller": caller, "agent": agent, "interrupted": utt.interrupted, "endpoint_rule": rule, "endpoint_reason": reason, "end_scores": dict(scores or {}),
             "tools": [c.name for c in calls or []], "dropped": list(dropped or [])}
        )
        log.info("turn call=%s caller=%r agent=%r endpoint_rule=%s%s%s", self.leg.call_id, caller, agent, rule, f" ({reason})" if reason else "",
                 " (interrupted)" if utt.interrupted else "")
