"""Fixed phrases (greeting, goodbye, reprompt, transfer announcements, the apology),
synthesized once per process and kept as 8 kHz PCM.

Every call says the same greeting: synthesizing it per call costs ~0.1-0.3 s of CPU at
the moment calls arrive together, delays the first audio by that much, and grows
onnxruntime's memory a little each time (measured: ~5 KB per Piper run on the embedded
voice, docs/performance.md). Text the LLM produced is never cached.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

import numpy as np


class PhraseCache:
    """``text -> PCM16 mono 8000 Hz`` for fixed phrases, least recently used first out.

    Thread-safe: a miss synthesizes outside the lock (two calls may both synthesize
    the same new phrase once; the second result is dropped).

    Args:
        max_phrases: phrases kept at most.
    """

    def __init__(self, max_phrases: int = 32) -> None:
        self.max_phrases = max_phrases
        self._pcm: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def peek(self, text: str) -> np.ndarray | None:
        """The cached PCM for ``text``, or ``None`` (cheap: for the event loop)."""
        with self._lock:
            pcm = self._pcm.get(text)
            if pcm is not None:
                self._pcm.move_to_end(text)
                self.hits += 1
            return pcm

    def get(self, text: str, synthesize: Callable[[str], np.ndarray]) -> np.ndarray:
        """The PCM for ``text``; ``synthesize(text)`` (PCM16 8 kHz) on a miss. Runs in a
        worker thread on a miss (it calls the TTS engine).

        Raises:
            whatever ``synthesize`` raises (nothing is cached then).
        """
        pcm = self.peek(text)
        if pcm is not None:
            return pcm
        pcm = synthesize(text)
        pcm.setflags(write=False)  # shared by every call
        with self._lock:
            self.misses += 1
            self._pcm[text] = pcm
            while len(self._pcm) > self.max_phrases:
                self._pcm.popitem(last=False)
        return pcm
