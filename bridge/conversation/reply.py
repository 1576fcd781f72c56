"""The agent's words for one turn: reply source -> sentences -> guards -> voice.

:class:`ReplyWriter` streams the reply from a :class:`~.sources.ReplySource` in a worker
thread, cuts it into sentences (the first clause of the first one as soon as it is
written: :mod:`.sentences`), passes every sentence through :class:`.guards.ReplyGuard`
(loops, leaked speaker lines, a third sentence, an unasked farewell, an answer against
the facts) and speaks what it allows with the :class:`~.voice.Voice`, handing the frames
on as they are synthesized. Nothing the guards reject is spoken or kept in the history;
a reply with nothing left becomes ``agent.fallback``. ``[command]`` markers and tool calls
are collected for the conversation to carry out (:mod:`.control`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ..engines.llm import Probe
from ..engines.tools import ToolCall, split_commands
from .facts import grounding_fact
from .failures import EngineError
from .guards import ReplyGuard
from .sentences import first_clause, first_sentence
from .sources import ReplySource, Transcript
from .turns import AgentFrame, AgentUtterance, EitherEvent, Reply
from .voice import Voice
from .work import WorkerThreads

log = logging.getLogger("bridge.conversation")


def _resolve(future: asyncio.Future | None, value) -> None:
    if future is not None and not future.done():
        future.set_result(value)


def resolve_probe(reply: Reply) -> None:
    """No end-of-line probability will come for ``reply`` (a turn answered in code, a
    failure): whoever awaits :attr:`~.turns.Reply.probed` gets ``None``."""
    _resolve(reply.probed, None)


@dataclass
class Written:
    """What a reply came to, filled in as it is written (so that an interrupted reply
    still tells): the tool calls the source asked for, and the sentences the guards dropped."""

    calls: list[ToolCall] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


class ReplyWriter:
    """Writes and speaks the agent's replies for one call (see the module docstring).

    Args:
        agent: :class:`bridge.config.AgentSettings`.
        source: the :class:`~.sources.ReplySource`.
        voice: the call's :class:`~.voice.Voice`.
        threads: the call's :class:`~.work.WorkerThreads`.
        clock: monotonic clock in seconds.
        deliver: takes each sentence's frames with the reply they belong to (the
            conversation queues them to playout, or to the reply's stash until released).
        call_id: the call, for the logs.
        metrics: a :class:`bridge.observability.metrics.Metrics` or ``None``.
    """

    def __init__(
        self,
        agent,
        source: ReplySource,
        voice: Voice,
        threads: WorkerThreads,
        clock: Callable[[], float],
        deliver: Callable[[list[AgentFrame], Reply | None], None],
        call_id: str,
        metrics=None,
    ) -> None:
        self._agent = agent
        self._source = source
        self._voice = voice
        self._threads = threads
        self._clock = clock
        self._deliver = deliver
        self._call_id = call_id
        self._metrics = metrics

    async def speak(
        self,
        text: str,
        utt: AgentUtterance,
        times: dict | None,
        cancel: threading.Event,
        reply: Reply | None = None,
        fixed: bool = False,
    ) -> None:
        """Speak ``text`` as the next sentence of ``utt`` (``fixed``: from the phrase cache).

        Raises:
            EngineError: TTS failed (stage ``tts``).
        """
        frames = await self._voice.speak(text, utt, times, cancel, fixed=fixed)
        if frames:
            self._deliver(frames, reply)

    async def write(
        self,
        caller: str,
        before: Transcript,
        utt: AgentUtterance,
        reply: Reply,
        cancel: threading.Event,
        written: Written,
    ) -> None:
        """Write and speak the reply to the ``caller``'s line after ``before`` into ``utt``,
        until the source ends, the guards stop it, or ``cancel`` is set (barge-in).
        ``cancel`` is set when this returns, and the source's thread has finished.

        Raises:
            EngineError: the source (stage ``llm``) or TTS (stage ``tts``) failed; what was
                spoken before stays spoken.
        """
        agent = self._agent
        fact, known_numbers = grounding_fact(agent, caller)
        guard = ReplyGuard(
            agent.name,
            agent.max_sentences,
            fact=fact,
            known_numbers=known_numbers,
            caller=caller,
            previous=previous_reply(caller, before),
        )
        stop = threading.Event()  # the guards stop generation; ``cancel`` is barge-in's
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        producer = self._threads.run(
            self._produce,
            loop,
            queue,
            EitherEvent(cancel, stop),
            reply.times,
            [*before, ("caller", caller)],
            reply.probed,
        )
        buffer = ""
        failure: EngineError | None = None
        clause = agent.first_clause_words
        try:
            while True:
                piece = await queue.get()
                if piece is None:
                    break
                if isinstance(piece, EngineError):
                    failure = piece
                    continue
                if isinstance(piece, ToolCall):
                    written.calls.append(piece)
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
                    await self._sentence(sentence, utt, reply, cancel, written, guard, stop, clause=part)
                if not stop.is_set() and guard.partial(buffer):
                    # A loop or another speaker's line before any sentence end: the
                    # guard keeps what may be said of it, and generation stops.
                    tail, buffer = buffer, ""
                    await self._sentence(tail, utt, reply, cancel, written, guard, stop)
                    stop.set()
            if buffer.strip() and not cancel.is_set() and failure is None and not stop.is_set():
                await self._sentence(buffer.strip(), utt, reply, cancel, written, guard, stop)
            if (
                failure is None
                and not cancel.is_set()
                and guard.finish() == "empty"
                and not written.calls
                and agent.fallback
            ):
                # Nothing speakable survived the guards: a short clarifying question instead.
                self._guarded("empty", "")
                await self.speak(agent.fallback, utt, reply.times, cancel, reply=reply, fixed=True)
        finally:
            written.dropped[:] = guard.dropped
            cancel.set()
            await asyncio.shield(producer)
        if failure is not None:
            raise failure

    def _produce(
        self,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue,
        cancel,
        times: dict,
        transcript: Transcript,
        probed: asyncio.Future | None,
    ) -> None:
        """Worker thread: the source's pieces onto ``queue``, then ``None``; an exception
        is put on the queue (as :class:`EngineError`) before the ``None``. ``probed``:
        resolved with the end-of-line probability, when the source gives one."""
        try:
            for piece in self._source.stream(transcript, cancel, probe=probed is not None):
                if isinstance(piece, Probe):
                    loop.call_soon_threadsafe(_resolve, probed, piece.probability)
                    continue
                if "llm_first_token" not in times:
                    times["llm_first_token"] = self._clock()
                loop.call_soon_threadsafe(queue.put_nowait, piece)
        except Exception as exc:  # noqa: BLE001 - reported to the loop side, never kills the thread pool
            loop.call_soon_threadsafe(queue.put_nowait, EngineError("llm", exc))
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    async def _sentence(
        self,
        sentence: str,
        utt: AgentUtterance,
        reply: Reply,
        cancel: threading.Event,
        written: Written,
        guard: ReplyGuard,
        stop: threading.Event,
        clause: bool = False,
    ) -> None:
        """One generated sentence (``clause``: the first clause of one): take out
        ``[command]`` markers, pass the rest through the guard, speak what it allows;
        set ``stop`` when it says so."""
        text, commands = split_commands(sentence)
        written.calls.extend(commands)
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
            reply.times["first_sentence"] = self._clock()
        await self.speak(verdict.speak, utt, reply.times, cancel, reply=reply)

    def _guarded(self, reason: str, text: str) -> None:
        """Count (``bridge_reply_guard_total{reason}``) and log (INFO) output the guards kept from the caller."""
        if self._metrics:
            self._metrics.guarded.labels(reason).inc()
        log.info("guard call=%s %s: not spoken %r", self._call_id, reason, text[:120])


def previous_reply(caller: str, before: Transcript) -> str:
    """The agent's reply before this turn (``before``: the transcript without this
    turn), when the caller now says something else (the same question twice may get
    the same answer twice)."""
    callers = [t for r, t in before if r == "caller"]
    if callers and " ".join(callers[-1].lower().split()) == " ".join(caller.lower().split()):
        return ""
    agents = [t for r, t in before if r == "agent"]
    return agents[-1] if agents else ""
