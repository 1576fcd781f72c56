"""One faster-whisper model for many calls: passes that coincide run as one batch.

A GPU runs a batch of utterances in about the time of one, so calls whose turns end
together should not queue behind a lock. :class:`WhisperBatcher` takes ``transcribe``
requests from any number of threads; a dispatcher thread collects those that arrive
within ``window_s`` of the first (up to ``max_batch``, grouped by beam size), computes
each one's log-Mel features, and runs CTranslate2's Whisper ``encode`` and ``generate``
once over the stacked batch (https://opennmt.net/CTranslate2/python/ctranslate2.models.Whisper.html),
with the prompt faster-whisper would build for that request (its initial prompt, then
the start-of-transcript sequence and ``<|notimestamps|>``).

**A pass costs what the utterance costs.** Whisper was trained on 30 s windows, and
faster-whisper pads every utterance to one; CTranslate2's encoder also takes a shorter
mel window. A batch is padded to the smallest window in ``windows`` (seconds; 10, 20
and 30 by default) that is at least ``headroom`` times as long as its longest
utterance: on 2 cores the tiny.en encoder takes ~60 ms for a 10 s window and ~280 ms
for 30 s. Cutting the window to the utterance's own length makes Whisper hallucinate;
a window comfortably longer than the audio does not, except that it sometimes says a
short utterance twice ("Hello there. Hello there."). So each result loses a sentence
that repeats the one before it (:func:`drop_repeats`), and decoding stops after
:func:`token_budget` tokens, which bounds what a loop can cost. ``scripts/asr_compare.py``
measures word error rate and pass time per window on the evaluation set.

What faster-whisper's ``transcribe`` adds on top and this path leaves out: the
temperature fallback (re-decoding at higher temperatures when a result looks like a
loop), and audio longer than one 30 s window; :class:`bridge.engines.asr.WhisperAsr`
sends such audio down faster-whisper's own path.
"""

from __future__ import annotations

import atexit
import logging
import math
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("bridge.engines.asr")

#: Whisper hears 30 s windows at 16 kHz.
WINDOW_SAMPLES = 30 * 16000
#: Mel frames per second of audio (hop of 160 samples at 16 kHz).
FRAMES_PER_SECOND = 100
#: faster-whisper's no-speech test (``no_speech_threshold``, ``log_prob_threshold``).
NO_SPEECH = 0.6
LOW_LOGPROB = -1.0
#: Default encoder windows, seconds, and how much longer than the audio a window must be.
WINDOWS = (10, 20, 30)
HEADROOM = 2.0


@dataclass(frozen=True)
class Transcript:
    """What Whisper heard in one pass: ``text`` (stripped; empty when nothing was
    recognized) and ``avg_logprob``, the average log probability of its tokens (0 =
    certain; faster-whisper calls a segment under -1.0 unreliable), ``None`` where not
    known (the long-audio path)."""

    text: str
    avg_logprob: float | None = None


def window_for(seconds: float, windows: tuple[int, ...] = WINDOWS, headroom: float = HEADROOM) -> int:
    """The encoder window, in seconds, for ``seconds`` of audio: the smallest of
    ``windows`` that is at least ``headroom`` times as long, else the largest (30 s, as
    faster-whisper always uses)."""
    for window in sorted(windows):
        if window >= seconds * headroom:
            return window
    return max(windows)


def token_budget(seconds: float) -> int:
    """Most tokens a pass over ``seconds`` of speech may generate: 12 plus 8 per second
    (fast speech is about 4 words, 5-6 tokens, a second)."""
    return 12 + math.ceil(8 * seconds)


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def drop_repeats(text: str) -> str:
    """``text`` without a sentence that only repeats the sentence before it, case and
    punctuation aside ("Hello there. Hello there." -> "Hello there.")."""
    out: list[str] = []
    for sentence in _SENTENCE.split(text.strip()):
        key = re.sub(r"\W+", "", sentence.lower())
        if out and key and key == re.sub(r"\W+", "", out[-1].lower()):
            continue
        out.append(sentence)
    return " ".join(out)


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
        windows: encoder windows to pad to, seconds (:func:`window_for`).
        headroom: how much longer than the audio the window must be.

    Attributes:
        batches: batches run so far; ``largest``: the most requests in one of them.
    """

    def __init__(
        self,
        model,
        language: str = "en",
        max_batch: int = 8,
        window_s: float = 0.005,
        windows: tuple[int, ...] = WINDOWS,
        headroom: float = HEADROOM,
    ) -> None:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self.model = model
        self.max_batch = max(1, max_batch)
        self.window_s = window_s
        self.windows = tuple(windows)
        self.headroom = headroom
        #: Passes run per encoder window (seconds -> count), for inspection.
        self.by_window: dict[int, int] = {}
        self.tokenizer = Tokenizer(
            model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language
        )
        self.suppress = list(get_suppressed_tokens(self.tokenizer, [-1]))
        self.batches = 0
        self.largest = 0
        self._queue: list[_Request] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._dispatch, name="asr-batcher", daemon=True)
        self._thread.start()
        atexit.register(self.close)  # no pass left running under CTranslate2's teardown

    def transcribe(self, audio16k: np.ndarray, beam_size: int = 1, initial_prompt: str | None = None) -> Transcript:
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

        longest = max(len(r.audio) for r in batch) / 16000
        window = window_for(longest, self.windows, self.headroom)
        frames = window * FRAMES_PER_SECOND
        # The last frame is left out, as faster-whisper does (its content_frames = frames - 1).
        features = np.stack([pad_or_trim(self.model.feature_extractor(r.audio)[..., :-1], frames) for r in batch])
        encoded = self.model.encode(features)
        prompts = [self._prompt(r.initial_prompt) for r in batch]
        results = self.model.model.generate(
            encoded,
            prompts,
            beam_size=batch[0].beam_size,
            # max_length counts the prompt too
            max_length=min(self.model.max_length, max(map(len, prompts)) + token_budget(longest)),
            suppress_blank=True,
            suppress_tokens=self.suppress,
            return_scores=True,
            return_no_speech_prob=True,
        )
        self.batches += 1
        self.largest = max(self.largest, len(batch))
        self.by_window[window] = self.by_window.get(window, 0) + 1
        return [self._text(r) for r in results]

    def _text(self, result) -> Transcript:
        """A result's text (with its average log probability), or "" where Whisper itself
        says there was no speech: its no-speech probability over ``NO_SPEECH`` and the
        average log probability of what it wrote under ``LOW_LOGPROB`` (faster-whisper's
        defaults for the same test; a cough otherwise comes out as words of the initial prompt)."""
        tokens = result.sequences_ids[0]
        avg_logprob = (
            result.scores[0] * len(tokens) / (len(tokens) + 1)
        )  # length_penalty 1, as faster-whisper recovers it
        if result.no_speech_prob > NO_SPEECH and avg_logprob < LOW_LOGPROB:
            return Transcript("", avg_logprob)
        return Transcript(drop_repeats(self.tokenizer.decode(tokens).strip()), avg_logprob)
