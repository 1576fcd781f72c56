"""The agent's voice: a sentence of text -> 20 ms frames of agent audio.

:class:`Voice` synthesizes with the TTS engine in a worker thread, resamples to the
call's 8000 Hz with FFmpeg (:mod:`bridge.audio.resample`), cuts the voice's leading
silence off an utterance's first sentence, and cuts the audio into
:class:`~.turns.AgentFrame`\\ s of the utterance. Fixed phrases (greeting, goodbye, the
apology) come from the process's phrase cache, synthesized once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from ..audio.resample import resample_all
from ..audio.wire import FRAME_SAMPLES, SAMPLE_RATE
from .playout import trim_leading_silence
from .turns import AgentFrame, AgentUtterance
from .work import WorkerThreads


class Voice:
    """Text to agent frames for one call.

    Args:
        engines: the shared :class:`bridge.engines.Engines` (``tts``, and ``phrases``
            when the process has a phrase cache).
        threads: the call's :class:`~.work.WorkerThreads` (synthesis never runs on the loop).
        clock: monotonic clock in seconds (``tts_first_audio`` readings).
    """

    def __init__(self, engines, threads: WorkerThreads, clock: Callable[[], float]) -> None:
        self._tts = engines.tts
        self._phrases = getattr(engines, "phrases", None)
        self._threads = threads
        self._clock = clock

    async def prepare(self, text: str) -> None:
        """Synthesize fixed ``text`` into the phrase cache now.

        Raises:
            EngineError: TTS failed (stage ``tts``).
        """
        if self._phrases is not None and text:
            await self._threads.call("tts", self._phrases.get, text, lambda t: self.synthesize(t, None))

    async def speak(
        self,
        text: str,
        utt: AgentUtterance,
        times: dict[str, float] | None,
        cancel: threading.Event,
        fixed: bool = False,
    ) -> list[AgentFrame]:
        """``text`` as frames of ``utt`` (``fixed``: from the phrase cache), the sentence
        recorded in ``utt``; none when ``cancel`` was set meanwhile. ``times``: the turn's
        latency readings (``tts_first_audio`` is added), or ``None``.

        Raises:
            EngineError: TTS failed (stage ``tts``).
        """
        if fixed and self._phrases is not None:
            pcm = self._phrases.peek(text)
            if pcm is None:
                pcm = await self._threads.call("tts", self._phrases.get, text, lambda t: self.synthesize(t, None))
        else:
            pcm = await self._threads.call("tts", self.synthesize, text, times)
        if cancel.is_set():
            return []
        if not utt.sentences:
            pcm = trim_leading_silence(pcm)
        n = int(np.ceil(len(pcm) / FRAME_SAMPLES)) * FRAME_SAMPLES
        pcm = np.pad(pcm, (0, n - len(pcm)))
        utt.sentences.append(text)
        utt.samples.append(n)
        base = sum(utt.samples[:-1])
        return [
            AgentFrame(pcm[i : i + FRAME_SAMPLES], utt, i + FRAME_SAMPLES >= n, base + i + FRAME_SAMPLES)
            for i in range(0, n, FRAME_SAMPLES)
        ]

    def synthesize(self, text: str, times: dict[str, float] | None) -> np.ndarray:
        """Worker thread: ``text`` -> PCM16 mono 8000 Hz (Piper, then FFmpeg resampling).
        ``times``: ``tts_first_audio`` is set at the first chunk, unless already there."""
        chunks = []
        for chunk in self._tts.synthesize(text):
            if times is not None and "tts_first_audio" not in times:
                times["tts_first_audio"] = self._clock()
            chunks.append(chunk)
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        return resample_all(np.concatenate(chunks), self._tts.sample_rate, SAMPLE_RATE)
