"""Playout: the queue of agent frames, played-sample accounting, and the actions that wait
until the caller has heard the last words.

:class:`Playout` hands the leg one 20 ms frame per send slot (:meth:`Playout.pull`),
counts what of each utterance was played (RTP: every frame handed out; Media Streams
and WebRTC data: the leg reports it, :meth:`Playout.mark_played`), runs an action once
the caller has heard the last words (hang-up, transfer: :meth:`Playout.after_playout`),
and takes the turn's latency reading when its first frame goes out. While a barge-in is
pending (:mod:`.backchannel`) it is paused: nothing is handed out, nothing is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Iterable

import numpy as np

from ..audio.wire import FRAME_SAMPLES
from .echo_guard import EchoGuard
from .turn_records import TurnRecorder
from .turns import AgentFrame, AgentUtterance

log = logging.getLogger("bridge.conversation")

#: Longest wait for the mark that confirms the last words were heard (Media Streams), seconds.
HEARD_TIMEOUT_S = 3.0


#: Below this amplitude (about -44 dBFS) a sample of synthesized speech is silence.
SILENCE_LEVEL = 200
#: Kept before the first sound when leading silence is cut, samples (5 ms at 8 kHz).
ONSET_MARGIN = 40


def trim_leading_silence(pcm: np.ndarray) -> np.ndarray:
    """PCM16 8 kHz without the silence a TTS voice puts before its first sound (Piper:
    0-40 ms), keeping :data:`ONSET_MARGIN` samples of it. The first words of an
    utterance then reach the caller that much sooner; all silence: returned as is."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > SILENCE_LEVEL)
    if not len(loud):
        return pcm
    return pcm[max(0, int(loud[0]) - ONSET_MARGIN) :]


class Playout:
    """Agent audio out for one call (see the module docstring).

    Args:
        call_id: the call, for the logs.
        clock: monotonic clock in seconds.
        paused: whether a barge-in has paused the agent (nothing is handed out meanwhile).
        quiet: called with the time when the last queued frame is handed out (the agent
            stops talking then: turn-taking's ``agent_quiet``).
        replying: whether a reply is still being written (more frames may come, so an
            action waiting for the end of playout waits on).
        echo_guard: told every frame sent (``None``: no echo guard).
        metrics: a :class:`bridge.observability.metrics.Metrics` or ``None``.
        played_by_leg: the leg reports what was played (:meth:`mark_played`: Media
            Streams marks) rather than every frame handed out counting as played (RTP).
    """

    def __init__(
        self,
        call_id: str,
        clock: Callable[[], float],
        paused: Callable[[], bool],
        quiet: Callable[[float], None],
        replying: Callable[[], bool],
        echo_guard: EchoGuard | None = None,
        metrics=None,
        played_by_leg: bool = False,
    ) -> None:
        self._call_id = call_id
        self._clock = clock
        self._paused = paused
        self._quiet = quiet
        self._replying = replying
        self._echo_guard = echo_guard
        self._metrics = metrics
        self.played_by_leg = played_by_leg
        self._queue: collections.deque[AgentFrame] = collections.deque()
        self._records: TurnRecorder | None = None
        #: The utterance being heard, and its turn's latency clock readings (``None``: a
        #: fixed phrase, no turn).
        self.current: AgentUtterance | None = None
        self._times: dict[str, float] | None = None
        self._after: Callable[[], None] | None = None
        #: (utterance, action, timer): an action waiting for the utterance's last mark.
        self._heard_wait: tuple[AgentUtterance, Callable[[], None], asyncio.TimerHandle] | None = None
        #: Each turn's latencies relative to the end of the caller's speech, seconds.
        self.latencies: list[dict[str, float]] = []

    def attach_records(self, records: TurnRecorder | None) -> None:
        """Report played progress to ``records`` from now on."""
        self._records = records

    @property
    def playing(self) -> bool:
        """Whether frames are queued."""
        return bool(self._queue)

    def begin(self, utt: AgentUtterance, times: dict[str, float] | None) -> None:
        """``utt`` is what the caller hears from now on; ``times``: its turn's latency
        clock readings (the first frame sent adds ``first_packet``), ``None`` for none."""
        self.current = utt
        self._times = times

    def extend(self, frames: Iterable[AgentFrame]) -> None:
        """Queue ``frames`` after what is queued."""
        self._queue.extend(frames)

    def stop(self) -> None:
        """Drop every queued frame and any action waiting for the end of playout."""
        self._queue.clear()
        self._after = None
        if self._heard_wait is not None:
            self._heard_wait[2].cancel()
            self._heard_wait = None

    def pull(self) -> AgentFrame | None:
        """The agent frame for the current 20 ms send slot, with its owner and sentence
        boundary, or ``None``. With :attr:`played_by_leg` set, handing a frame out does not
        count it as played. While a barge-in is pending nothing is handed out."""
        if not self._queue or self._paused():
            if self._echo_guard is not None:
                self._echo_guard.note_sent(None)
            return None
        if len(self._queue) == 1:
            self._quiet(self._clock())  # the agent stops talking now
        item = self._queue.popleft()
        if self._echo_guard is not None:
            self._echo_guard.note_sent(item.pcm)
        if not self.played_by_leg:
            item.owner.played += FRAME_SAMPLES
            if self._records is not None:
                self._records.progressed(item.owner)
        times = self._times
        if times is not None and item.owner is self.current and "first_packet" not in times and "speech_end" in times:
            times["first_packet"] = self._clock()
            self._log_latency(times)
            if self._metrics:
                self._metrics.observe_turn(times)
        if not self._queue and self._after is not None and not self._replying():
            action, self._after = self._after, None
            self._when_heard(item.owner, action)
        return item

    def mark_played(self, owner: AgentUtterance, offset: int) -> None:
        """The leg learned that ``owner`` was played up to sample ``offset`` (Media Streams marks)."""
        owner.played = max(owner.played, offset)
        if self._records is not None:
            self._records.progressed(owner)
        waiting = self._heard_wait
        if waiting is not None and waiting[0] is owner and owner.played >= sum(owner.samples):
            self._heard_wait = None
            waiting[2].cancel()
            asyncio.get_running_loop().call_soon(waiting[1])

    def after_playout(self, action: Callable[[], None]) -> None:
        """Run ``action`` once what is queued has been played and heard (at once when
        nothing is queued and :attr:`current` was heard to its end)."""
        if self._queue:
            self._after = action
        else:
            self._when_heard(self.current, action)

    def _when_heard(self, owner: AgentUtterance | None, action: Callable[[], None]) -> None:
        """Run ``action`` (hang up, transfer) once the caller has heard ``owner`` to its end.

        On RTP handing a frame out is sending it: the last packet has just gone, so
        at once. On a leg that reports playback (Media Streams), once the mark after
        the last frame comes back, or after ``HEARD_TIMEOUT_S`` if it never does.
        """
        loop = asyncio.get_running_loop()
        if not self.played_by_leg or owner is None or owner.played >= sum(owner.samples):
            loop.call_soon(action)
            return

        def timed_out() -> None:
            if self._heard_wait is not None and self._heard_wait[1] is action:
                self._heard_wait = None
                log.info("call=%s: no mark for the last words within %.0f s, going on", self._call_id, HEARD_TIMEOUT_S)
                action()

        self._heard_wait = (owner, action, loop.call_later(HEARD_TIMEOUT_S, timed_out))

    def _log_latency(self, times: dict[str, float]) -> None:
        start = times["speech_end"]
        rel = {k: round(v - start, 3) for k, v in times.items() if k != "speech_end"}
        self.latencies.append(rel)
        log.info(
            "latency call=%s voice_to_voice=%s endpoint=%s asr_final=%s llm_first_token=%s first_sentence=%s tts_first_audio=%s",
            self._call_id,
            rel.get("first_packet"),
            rel.get("endpoint"),
            rel.get("asr_final"),
            rel.get("llm_first_token"),
            rel.get("first_sentence"),
            rel.get("tts_first_audio"),
        )
