"""One faster-whisper model for many calls: passes that coincide run as one batch.

A GPU runs a batch of utterances in about the time of one, so calls whose turns end
together should not queue behind a lock. :class:`WhisperBatcher` takes ``transcribe``
requests from any number of threads; a dispatcher thread collects those that arrive
within ``window_s`` of the first (up to ``max_batch``, grouped by beam size), computes
each one's log-Mel features, and runs CTranslate2's Whisper ``encode`` and ``generate``
once over the stacked batch (https://opennmt.net/CTranslate2/python/ctranslate2.models.Whisper.html),
with the prompt faster-whisper would build for that request (its initial prompt, then
the start-of-transcript sequence and ``<|notimestamps|>``).

What faster-whisper's ``transcribe`` adds on top and this path leaves out: the
temperature fallback (re-decoding at higher temperatures when a result looks like a
loop), and audio longer than one 30 s window; :class:`bridge.engines.asr.WhisperAsr`
sends such audio down faster-whisper's own path.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("bridge.engines.asr")

#: Whisper hears 30 s windows at 16 kHz.
WINDOW_SAMPLES = 30 * 16000


@dataclass(eq=False)  # compared by identity: the audio is an array
class _Request:
    audio: np.ndarray
    beam_size: int
    initial_prompt: str | None
    future: Future = field(default_factory=Future)


class WhisperBatcher:
    """Coalesces concurrent transcriptions on one ``faster_whisper.WhisperModel``.

    Args:
        model: the loaded faster-whisper model (CPU or CUDA).
        language: the spoken language (``en``).
        max_batch: most utterances in one batch.
        window_s: how long the dispatcher waits after a request for others to join, s.

    Attributes:
        batches: batches run so far; ``largest``: the most requests in one of them.
    """

    def __init__(self, model, language: str = "en", max_batch: int = 8, window_s: float = 0.005) -> None:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self.model = model
        self.max_batch = max(1, max_batch)
        self.window_s = window_s
        self.tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language)
        self.suppress = list(get_suppressed_tokens(self.tokenizer, [-1]))
        self.batches = 0
        self.largest = 0
        self._queue: list[_Request] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._dispatch, name="asr-batcher", daemon=True)
        self._thread.start()

    def transcribe(self, audio16k: np.ndarray, beam_size: int = 1, initial_prompt: str | None = None) -> str:
        """Text of ``audio16k`` (float32 mono, 16000 Hz, at most 30 s), blocking until its batch ran.

        Raises:
            ValueError: the audio is longer than one 30 s window.
            RuntimeError: the batcher was closed.
            Exception: whatever CTranslate2 raised for the batch (every request in it gets it).
        """
        if len(audio16k) > WINDOW_SAMPLES:
            raise ValueError(f"{len(audio16k) / 16000:.1f} s of audio: the batched path takes at most 30 s")
        request = _Request(np.asarray(audio16k, dtype=np.float32), beam_size, initial_prompt)
        with self._cond:
            if self._closed:
                raise RuntimeError("the ASR batcher is closed")
            self._queue.append(request)
            self._cond.notify()
        return request.future.result()

    def close(self) -> None:
        """Stop the dispatcher; requests still queued fail with RuntimeError."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _take(self) -> list[_Request] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                for r in self._queue:
                    r.future.set_exception(RuntimeError("the ASR batcher is closed"))
                self._queue.clear()
                return None
            deadline = time.monotonic() + self.window_s
            while len(self._queue) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)  # others whose turns end now join this batch
            beam = self._queue[0].beam_size
            batch = [r for r in self._queue if r.beam_size == beam][: self.max_batch]
            taken = {id(r) for r in batch}
            self._queue = [r for r in self._queue if id(r) not in taken]
            return batch

    def _dispatch(self) -> None:
        while (batch := self._take()) is not None:
            try:
                texts = self._run(batch)
            except Exception as exc:  # noqa: BLE001 - every caller of this batch gets the error
                log.warning("asr: batch of %d failed: %s", len(batch), exc)
                for r in batch:
                    r.future.set_exception(exc)
                continue
            for r, text in zip(batch, texts):
                r.future.set_result(text)

    def _prompt(self, initial_prompt: str | None) -> list[int]:
        previous = self.tokenizer.encode(" " + initial_prompt.strip()) if initial_prompt else []
        return self.model.get_prompt(self.tokenizer, previous, without_timestamps=True)

    def _run(self, batch: list[_Request]) -> list[str]:
        from faster_whisper.audio import pad_or_trim

        # The last frame is left out, as faster-whisper does (its content_frames = frames - 1).
        features = np.stack([pad_or_trim(self.model.feature_extractor(r.audio)[..., :-1]) for r in batch])
        encoded = self.model.encode(features)
        results = self.model.model.generate(
            encoded, [self._prompt(r.initial_prompt) for r in batch], beam_size=batch[0].beam_size,
            max_length=self.model.max_length, suppress_blank=True, suppress_tokens=self.suppress,
        )
        self.batches += 1
        self.largest = max(self.largest, len(batch))
        return [self.tokenizer.decode(r.sequences_ids[0]).strip() for r in results]
