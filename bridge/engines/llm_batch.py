"""The llama.cpp batch decoder: every active turn is one sequence of one ``llama_decode``
(slots share one KV cache, a prompt reuses the longest prefix a slot holds), turns beyond
the slots wait in arrival order. One scheduler thread is the only caller into the
context; requests come from worker threads and get their pieces through a queue."""

from __future__ import annotations

import codecs
import ctypes
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger("bridge.engines.llm")

#: Tokens the next-token distribution is summed over for "the caller's line ends here".
ENDINGS = (".", "?", "!", "\n")


@dataclass(frozen=True)
class Probe:
    """What :meth:`LlamaCppLlm.stream` yields first when asked to ``probe``: the
    probability (0..1) that the text ends where the probe stops (:meth:`LlamaCppLlm.end_probability`)."""

    probability: float


class _Cancelled:
    """A cancel flag that is always set (a consumer that stopped reading)."""

    def is_set(self) -> bool:
        return True


CANCELLED = _Cancelled()


@dataclass(eq=False)
class Request:
    """One piece of work for the scheduler. ``kind``: ``generate``, ``probe`` or ``prime``.

    ``out`` receives text pieces then ``None`` (generate), the probability (probe), or
    ``None`` (prime); an exception before the ``None`` when it failed."""

    kind: str
    tokens: list[int]
    out: queue.Queue = field(default_factory=queue.Queue)
    stop: tuple[str, ...] = ()
    max_tokens: int = 0
    temperature: float = 0.0
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    cancel: object = None
    endings: tuple[str, ...] = ENDINGS
    #: generate: read the ending probability at this prompt position too (-1: no)
    probe_index: int = -1
    # scheduler state
    slot: Slot | None = None
    todo: list[int] = field(default_factory=list)
    sampler: object = None
    next_token: int | None = None
    generated: int = 0
    text: str = ""
    sent: int = 0
    decoder: object = None
    batch_index: int = -1
    probe_batch: int = -1


@dataclass
class Slot:
    """One llama.cpp sequence and the tokens its KV cache holds."""

    seq: int
    tokens: list[int] = field(default_factory=list)
    busy: Request | None = None
    used_at: float = 0.0


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class BatchDecoder:
    """The decode loop over one llama.cpp context (see the module docstring).

    Args:
        ll: the ``llama_cpp`` module (its low-level API).
        model: the loaded model.
        vocab: its vocabulary.
        tokenize: ``(text, special=...)`` -> the model's tokens (:meth:`bridge.engines.llm.LlamaCppLlm.tokenize`).
        n_ctx: context length per sequence, tokens.
        parallel: sequences decoded together (slots).
        n_batch: most tokens in one ``llama_decode``.
        n_threads: CPU threads.
        name: the model's file name, for the errors.

    Raises:
        RuntimeError: llama.cpp could not make the context.
    """

    def __init__(
        self,
        ll: Any,
        model: Any,
        vocab: Any,
        tokenize: Any,
        n_ctx: int,
        parallel: int,
        n_batch: int,
        n_threads: int,
        name: str,
    ) -> None:
        self._ll = ll
        self._vocab = vocab
        self._tokenize = tokenize
        self.n_vocab = ll.llama_vocab_n_tokens(vocab)
        self.parallel = parallel
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        cparams = ll.llama_context_default_params()
        cparams.n_ctx = n_ctx * self.parallel
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = self.parallel
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        cparams.swa_full = True  # sliding-window models (Gemma 3) keep every position: prefixes can be reused
        # One KV cache for all sequences: a step over several sequences is one graph (with a
        # cache per sequence llama.cpp splits it, and 4 sequences cost 4 steps), and a
        # prefix copied to another sequence shares its cells.
        cparams.kv_unified = True
        cparams.no_perf = True
        self._ctx = ll.llama_init_from_model(model, cparams)
        if not self._ctx:
            raise RuntimeError(f"llama.cpp could not make a context for {name} ({n_ctx} tokens x {self.parallel})")
        self._mem = ll.llama_get_memory(self._ctx)
        self._batch = ll.llama_batch_init(n_batch, 0, 1)
        self._slots = [Slot(i) for i in range(self.parallel)]
        self._pending: deque[Request] = deque()
        self._active: list[Request] = []
        self._cond = threading.Condition()
        self._closed = False
        self._ending_ids: dict[tuple[str, ...], list[int]] = {}
        #: Decode steps run, and the most sequences one of them carried (inspection, tests).
        self.steps = 0
        self.widest = 0
        self._thread = threading.Thread(target=self._run, name="llm-batch", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Requests queued for a free slot now."""
        with self._cond:
            return len(self._pending)

    def prime(self, tokens: list[int]) -> bool:
        """Evaluate ``tokens`` in a free slot, unless a turn is waiting or every slot is
        busy. Does not wait. Returns whether it was queued."""
        with self._cond:
            if self._closed or self._pending or all(s.busy is not None for s in self._slots):
                return False
            self._pending.append(Request("prime", tokens))
            self._cond.notify_all()
        return True

    def share_prefix(self) -> None:
        """Copy the longest cached prompt into every idle slot (the prefix every prompt
        of the agent starts with)."""
        with self._cond:
            source = max(self._slots, key=lambda s: len(s.tokens))
            for slot in self._slots:
                if slot is not source and slot.busy is None:
                    self._ll.llama_memory_seq_rm(self._mem, slot.seq, -1, -1)
                    self._ll.llama_memory_seq_cp(self._mem, source.seq, slot.seq, -1, -1)
                    slot.tokens = list(source.tokens)

    def cached(self, tokens: list[int]) -> bool:
        """Whether some slot's KV cache holds all of ``prompt`` but its last token (inspection, tests)."""
        with self._cond:
            return any(_common(s.tokens, tokens) >= len(tokens) - 1 for s in self._slots)

    def piece(self, token: int, special: bool = False) -> str:
        """The text of ``token`` (``special``: control tokens such as BOS written out)."""
        return self._piece(token, special)

    def close(self) -> None:
        """Stop the scheduler and free the context. Requests still queued fail."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=10)
        self._ll.llama_batch_free(self._batch)
        self._ll.llama_free(self._ctx)

    def submit(self, request: Request) -> Request:
        """Queue ``request``.

        Raises:
            RuntimeError: the decoder is closed, or the prompt does not fit the context.
        """
        with self._cond:
            if self._closed:
                raise RuntimeError("the LLM is closed")
            if len(request.tokens) >= self.n_ctx:
                raise RuntimeError(f"a prompt of {len(request.tokens)} tokens does not fit the context of {self.n_ctx}")
            self._pending.append(request)
            self._cond.notify_all()
        return request

    def abandon(self, request: Request) -> None:
        """The consumer stopped reading: drop the request wherever it is."""
        with self._cond:
            if request in self._pending:
                self._pending.remove(request)
            elif request in self._active:
                request.cancel = CANCELLED
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._pending and not self._active:
                    self._cond.wait()
                if self._closed:
                    for r in list(self._pending) + self._active:
                        r.out.put(RuntimeError("the LLM is closed"))
                        r.out.put(None)
                    self._pending.clear()
                    self._active.clear()
                    return
                self._admit()
                active = list(self._active)
            try:
                self._step(active)
            except Exception as exc:  # noqa: BLE001 - every request in the step gets it; the thread goes on
                log.warning("llm: decode failed: %s", exc)
                for r in active:
                    if r.slot is not None:  # what its KV cache holds is no longer known
                        self._ll.llama_memory_seq_rm(self._mem, r.slot.seq, -1, -1)
                        r.slot.tokens = []
                    self._finish(r, error=exc)

    def _admit(self) -> None:
        """Give free slots to waiting requests, oldest first (under the lock)."""
        while self._pending:
            free = [s for s in self._slots if s.busy is None]
            if not free:
                return
            request = self._pending.popleft()
            if request.kind == "prime" and self._pending:
                request.out.put(None)  # a turn waits: priming would only displace a cache
                continue
            slot = max(free, key=lambda s: (_common(s.tokens, request.tokens), -s.used_at))
            keep = _common(slot.tokens, request.tokens)
            if keep == len(request.tokens) and request.kind != "prime":
                keep -= 1  # the last prompt token is evaluated again: its logits are needed
            if request.probe_index >= 0:
                keep = min(keep, request.probe_index)  # ...and so is the probe's
            if keep < len(slot.tokens):
                if not self._ll.llama_memory_seq_rm(self._mem, slot.seq, keep, -1):
                    self._ll.llama_memory_seq_rm(self._mem, slot.seq, -1, -1)
                    keep = 0
                slot.tokens = slot.tokens[:keep]
            request.slot, request.todo = slot, request.tokens[keep:]
            slot.busy = request
            slot.used_at = time.monotonic()
            if request.kind == "generate":
                request.sampler = self._sampler(request)
                request.decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
            self._active.append(request)

    def _sampler(self, r: Request):
        ll = self._ll
        chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        ll.llama_sampler_chain_add(
            chain, ll.llama_sampler_init_penalties(self.n_vocab, 64, r.repeat_penalty, 0.0, r.presence_penalty)
        )
        if r.temperature <= 0:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_greedy())
        else:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_k(40))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(0.95, 1))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_min_p(0.05, 1))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_temp(r.temperature))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_dist(time.time_ns() & 0xFFFFFFFF))
        return chain

    def _step(self, active: list[Request]) -> None:
        """One ``llama_decode`` over every active request: the next token of each generating
        one, then as much of the waiting prompts as ``n_batch`` holds, oldest first."""
        batch, n = self._batch, 0
        for r in active:
            r.batch_index = -1
            if r.cancel is not None and r.cancel.is_set():
                self._finish(r)
            elif r.next_token is not None:
                self._add(n, r.next_token, len(r.slot.tokens), r.slot.seq, True)
                r.slot.tokens.append(r.next_token)
                r.next_token = None
                r.batch_index = n
                n += 1
        for r in active:
            if not r.todo or r.slot is None or r.slot.busy is not r or n >= self.n_batch:
                continue
            take, r.todo = r.todo[: self.n_batch - n], r.todo[self.n_batch - n :]
            first = len(r.tokens) - len(r.todo) - len(take)  # the prompt position of take[0]
            for i, token in enumerate(take):
                last = not r.todo and i == len(take) - 1
                probe = first + i == r.probe_index
                self._add(n, token, len(r.slot.tokens), r.slot.seq, (last and r.kind != "prime") or probe)
                r.slot.tokens.append(token)
                if last:
                    r.batch_index = n
                if probe:
                    r.probe_index, r.probe_batch = -1, n
                n += 1
        if n:
            batch.n_tokens = n
            rc = self._ll.llama_decode(self._ctx, batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc} (1: the KV cache is full)")
            self.steps += 1
            self.widest = max(self.widest, sum(1 for r in active if r.batch_index >= 0))
        for r in active:
            if r.slot is None or r.slot.busy is not r:
                continue
            if r.probe_batch >= 0:
                r.out.put(Probe(self._ending_mass(r.probe_batch, r.endings)))
                r.probe_batch = -1
            if r.kind == "prime":
                if not r.todo:
                    self._finish(r)
            elif r.batch_index >= 0 and r.kind == "probe":
                r.out.put(self._ending_mass(r.batch_index, r.endings))
                self._finish(r, quiet=True)
            elif r.batch_index >= 0:
                self._sample(r)

    def _add(self, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        batch = self._batch
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = 1 if logits else 0

    def _sample(self, r: Request) -> None:
        token = self._ll.llama_sampler_sample(r.sampler, self._ctx, r.batch_index)
        if self._ll.llama_vocab_is_eog(self._vocab, token):
            self._flush(r, final=True)
            self._finish(r)
            return
        r.generated += 1
        r.text += r.decoder.decode(self._piece_bytes(token))
        if self._flush(r, final=r.generated >= r.max_tokens) or r.generated >= r.max_tokens:
            self._finish(r)
            return
        r.next_token = token

    def _flush(self, r: Request, final: bool) -> bool:
        """Hand out the text that can no longer become a stop string; True at a stop string."""
        for s in r.stop:
            at = r.text.find(s, max(0, r.sent - len(s)))
            if at >= 0:
                if at > r.sent:
                    r.out.put(r.text[r.sent : at])
                r.sent = len(r.text)
                return True
        end = len(r.text)
        if not final:
            for s in r.stop:
                for k in range(min(len(s) - 1, len(r.text)), 0, -1):
                    if r.text.endswith(s[:k]):
                        end = min(end, len(r.text) - k)
                        break
        if end > r.sent:
            r.out.put(r.text[r.sent : end])
            r.sent = end
        return False

    def _finish(self, r: Request, error: BaseException | None = None, quiet: bool = False) -> None:
        with self._cond:
            if r in self._active:
                self._active.remove(r)
            if r.slot is not None and r.slot.busy is r:
                r.slot.busy = None
            r.next_token = None
            if r.sampler is not None:
                self._ll.llama_sampler_free(r.sampler)
                r.sampler = None
            self._cond.notify_all()
        if error is not None:
            r.out.put(error)
        if not quiet or error is not None:
            r.out.put(None)

    def _ending_mass(self, index: int, endings: tuple[str, ...]) -> float:
        ids = self._ending_ids.get(endings)
        if ids is None:
            ids = self._ending_ids[endings] = sorted(
                {t[0] for t in (self._tokenize(e, special=False) for e in endings) if len(t) == 1}
            )
        logits = np.ctypeslib.as_array(self._ll.llama_get_logits_ith(self._ctx, index), shape=(self.n_vocab,)).astype(
            np.float64
        )
        p = np.exp(logits - logits.max())
        return float(p[ids].sum() / p.sum())

    def _piece_bytes(self, token: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._ll.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._ll.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def _piece(self, token: int, special: bool = False) -> str:
        return self._piece_bytes(token, special).decode("utf-8", errors="ignore") if token >= 0 else ""
