"""Turns are served in arrival order: the oldest waiting turn takes the model first
(bridge/engines/fifo.py for TTS and unbatched ASR; the LLM's admission to its sequences)."""

from __future__ import annotations

import threading

import pytest

from bridge.engines.fifo import FifoLock

from .conftest import ROOT
from .waiting import eventually


def test_waiters_get_the_lock_in_the_order_they_asked():
    lock = FifoLock()
    order = []
    lock.acquire()
    threads = []
    for name in "abcd":
        t = threading.Thread(target=lambda n=name: (lock.acquire(), order.append(n), lock.release()))
        t.start()
        threads.append(t)
        assert eventually(
            lambda k=len(threads): lock.waiting == k, interval=0.001
        )  # each one queued before the next asks
    assert lock.acquire(blocking=False) is False  # held
    lock.release()
    for t in threads:
        t.join(5)
    assert order == list("abcd")
    assert lock.waiting == 0 and lock.acquire(blocking=False) is True
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()


def test_the_llm_serves_waiting_turns_in_arrival_order():
    """More turns than sequences: the waiting ones take a sequence in the order they asked."""
    from bridge.engines.llm import LlamaCppLlm, embedded_llm_path

    llm = LlamaCppLlm(embedded_llm_path(ROOT / "models"), n_ctx=512, parallel=1)
    try:
        order = []
        never = threading.Event()
        a = llm.stream("The first of three short notes:", [], 8, 0.0, never)
        next(a)  # one turn holds the only sequence, generating
        threads = []
        for name in "bcd":
            t = threading.Thread(
                target=lambda n=name: (list(llm.stream(f"Note {n}:", [], 4, 0.0, never)), order.append(n))
            )
            t.start()
            threads.append(t)
            assert eventually(lambda k=len(threads): llm.waiting == k, interval=0.001)
        list(a)
        for t in threads:
            t.join(60)
        assert order == list("bcd")
    finally:
        llm.close()
