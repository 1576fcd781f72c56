"""Playout: the queue of agent frames, played-sample accounting, and TTS into it.

:class:`PlayoutMixin` is the part of :class:`bridge.conversation.engine.Conversation`
that hands agent audio to the leg (split out of engine.py along that seam):
one 20 ms frame per send slot (:meth:`PlayoutMixin.pull_item`), what of each
utterance was played (RTP: every frame handed out; Media Streams: ``mark`` echoes),
actions that wait until the caller has heard the last words (hang-up, transfer),
and synthesis of a sentence into the queue. The engine keeps turn-taking and
barge-in; while a barge-in is pending (:mod:`.backchannel`) playout is paused:
nothing is handed out, nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import numpy as np

from ..audio.resample import resample_all
from ..audio.wire import FRAME_SAMPLES
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


class PlayoutMixin:
    """Agent audio out for :class:`~bridge.conversation.engine.Conversation` (see the module docstring)."""

    def pull_frame(self, now: float | None = None) -> np.ndarray | None:
        """The agent frame for the current 20 ms send slot (PCM16 8 kHz, 160 samples) or ``None``."""
        item = self.pull_item(now)
        return item.pcm if item is not None else None

    def mark_played(self, owner: AgentUtterance, offset: int) -> None:
        """The leg learned that ``owner`` was played up to sample ``offset`` (Media Streams marks)."""
        owner.played = max(owner.played, offset)
        if self.records is not None:
            self.records.progressed(owner)
        waiting = self._heard_wait
        if waiting is not None and waiting[0] is owner and owner.played >= sum(owner.samples):
            self._heard_wait = None
            waiting[2].cancel()
            asyncio.get_running_loop().call_soon(waiting[1])

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
                log.info("call=%s: no mark for the last words within %.0f s, going on", self.leg.call_id, HEARD_TIMEOUT_S)
                action()

        self._heard_wait = (owner, action, loop.call_later(HEARD_TIMEOUT_S, timed_out))

    def pull_item(self, now: float | None = None) -> AgentFrame | None:
        """Like :meth:`pull_frame`, with the frame's owner and sentence boundary.

        With ``played_by_leg`` set, handing a frame out does not count it as
        played: the leg reports playback with :meth:`mark_played`. While a
        barge-in is pending (the agent is paused) nothing is handed out."""
        if not self._playout or self.turns.paused is not None:
            if self.echo_guard is not None:
                self.echo_guard.note_sent(None)
            return None
        if len(self._playout) == 1:
            self.turns.agent_quiet(self.clock())  # the agent stops talking now
        item = self._playout.popleft()
        if self.echo_guard is not None:
            self.echo_guard.note_sent(item.pcm)
        if not self.played_by_leg:
            item.owner.played += FRAME_SAMPLES
            if self.records is not None:
                self.records.progressed(item.owner)
        times = self._times
        if times is not None and item.owner is self._current and "first_packet" not in times and "speech_end" in times:
            times["first_packet"] = self.clock()
            self._log_latency(times)
            if self.metrics:
                self.metrics.observe_turn(times)
        if not self._playout and self._after_playout is not None and (self._reply_task is None or self._reply_task.done()):
            action, self._after_playout = self._after_playout, None
            self._when_heard(item.owner, action)
        return item


    def _after_playout_do(self, action: Callable[[], None]) -> None:
        if self._playout:
            self._after_playout = action
        else:
            self._when_heard(self._current, action)

    async def _speak_sentence(self, text: str, utt: AgentUtterance, times: dict | None, cancel: threading.Event, fixed: bool = False, reply=None) -> None:
        """Synthesize ``text`` (``fixed``: from the phrase cache) and queue it as 20 ms frames of ``utt``:
        to playout, or to ``reply``'s stash while that prepared reply is not released
        (:class:`~.turns.Reply`).

        Raises:
            EngineError: TTS failed (stage ``tts``).
        """
        phrases = getattr(self.engines, "phrases", None)
        if fixed and phrases is not None:
            pcm = phrases.peek(text)
            if pcm is None:
                pcm = await self.threads.call("tts", phrases.get, text, lambda t: self._synthesize(t, None))
        else:
            pcm = await self.threads.call("tts", self._synthesize, text, times)
        if cancel.is_set():
            return
        if not utt.sentences:
            pcm = trim_leading_silence(pcm)
        n = int(np.ceil(len(pcm) / FRAME_SAMPLES)) * FRAME_SAMPLES
        pcm = np.pad(pcm, (0, n - len(pcm)))
        utt.sentences.append(text)
        utt.samples.append(n)
        base = sum(utt.samples[:-1])
        queue = self._playout if reply is None or reply.released else reply.stash
        for i in range(0, n, FRAME_SAMPLES):
            queue.append(AgentFrame(pcm[i : i + FRAME_SAMPLES], utt, i + FRAME_SAMPLES >= n, base + i + FRAME_SAMPLES))

    def _synthesize(self, text: str, times: dict | None) -> np.ndarray:
        """Worker thread: text -> PCM16 8 kHz via Piper and FFmpeg resampling."""
        chunks = []
        for chunk in self.engines.tts.synthesize(text):
            if times is not None and "tts_first_audio" not in times:
                times["tts_first_audio"] = self.clock()
            chunks.append(chunk)
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        return resample_all(np.concatenate(chunks), self.engines.tts.sample_rate, 8000)

    def _log_latency(self, times: dict[str, float]) -> None:
        start = times["speech_end"]
        rel = {k: round(v - start, 3) for k, v in times.items() if k != "speech_end"}
        self.latencies.append(rel)
        log.info(
            "latency call=%s voice_to_voice=%s endpoint=%s asr_final=%s llm_first_token=%s first_sentence=%s tts_first_audio=%s",
            self.leg.call_id,
            rel.get("first_packet"),
            rel.get("endpoint"),
            rel.get("asr_final"),
            rel.get("llm_first_token"),
            rel.get("first_sentence"),
            rel.get("tts_first_audio"),
        )
