"""The fixed-phrase cache: synthesized once, shared read-only, least recently used out."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.engines.phrases import PhraseCache


def test_fixed_phrase_synthesized_once_then_shared():
    made: list[str] = []

    def synthesize(text: str) -> np.ndarray:
        made.append(text)
        return np.full(160 * len(text), len(made), dtype=np.int16)

    cache = PhraseCache(max_phrases=2)
    first = cache.get("Hello", synthesize)
    assert cache.get("Hello", synthesize) is first and cache.peek("Hello") is first
    assert made == ["Hello"]
    with pytest.raises(ValueError):
        first[0] = 1  # shared by every call: read-only
    cache.get("Bye", synthesize)
    cache.get("Hello", synthesize)  # Hello is now the most recent
    cache.get("Hold on", synthesize)  # evicts Bye
    assert cache.peek("Bye") is None and cache.peek("Hello") is first
    assert made == ["Hello", "Bye", "Hold on"]


def test_a_failed_synthesis_is_not_cached():
    cache = PhraseCache()

    def broken(text: str) -> np.ndarray:
        raise RuntimeError("tts down")

    with pytest.raises(RuntimeError):
        cache.get("Hello", broken)
    assert cache.peek("Hello") is None
