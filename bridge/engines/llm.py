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

import ctypes
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from .llm_batch import ENDINGS, BatchDecoder, Probe, Request
from .llm_setup import amx_kernels_built, embedded_llm_path, keep_until_exit, llm_parallel, quiet_llama_log, smoke

log = logging.getLogger("bridge.engines.llm")

__all__ = ["ENDINGS", "LlamaCppLlm", "Probe", "amx_kernels_built", "embedded_llm_path", "llm_parallel", "smoke"]


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
        quiet_llama_log(llama_cpp)
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
        try:
            self._decoder = BatchDecoder(
                ll, self._model, self._vocab, self.tokenize, n_ctx, self.parallel, n_batch, n_threads, path.name
            )
        except RuntimeError:
            ll.llama_model_free(self._model)
            raise
        keep_until_exit(self)
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
        return self._decoder.waiting

    @property
    def steps(self) -> int:
        """Decode steps run so far (inspection, tests)."""
        return self._decoder.steps

    @property
    def widest(self) -> int:
        """The most sequences one decode step carried (inspection, tests)."""
        return self._decoder.widest

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
        return self._decoder.cached(self.tokenize(prompt))

    def warm(self, prompt: str) -> None:
        """Evaluate ``prompt`` (the persona, facts and examples every prompt starts with)
        once and share its KV cache with every slot, so that a call's first turn only pays
        for its own lines. Blocks until done.

        Raises:
            RuntimeError: llama.cpp failed to evaluate it.
        """
        result = self._decoder.submit(Request("prime", self.tokenize(prompt))).out.get()
        if isinstance(result, BaseException):
            raise result
        self._decoder.share_prefix()

    def prime(self, prompt: str) -> bool:
        """Evaluate ``prompt`` (a call's next prompt up to its caller's coming line) in a
        free slot, unless a turn is waiting or every slot is busy: then nothing. Does not
        wait for the evaluation. Returns whether it was queued."""
        return self._decoder.prime(self.tokenize(prompt))

    def end_probability(self, prompt: str, endings: tuple[str, ...] = ENDINGS) -> float:
        """How likely the text of ``prompt`` ends where it stops: the next-token
        probability of any of ``endings`` (those that are one token each).

        A caller line written without its final punctuation ("Caller: I would like to
        book an appointment for") gets almost none; a finished one ("Caller: What time do
        you open on Saturday") gets much of it (the next token is "?"). Blocks.

        Raises:
            RuntimeError: llama.cpp failed to evaluate it.
        """
        result = self._decoder.submit(Request("probe", self.tokenize(prompt), endings=endings)).out.get()
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
        request = Request(
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
        self._decoder.submit(request)
        try:
            while True:
                piece = request.out.get()
                if piece is None:
                    return
                if isinstance(piece, BaseException):
                    raise piece
                yield piece
        finally:
            self._decoder.abandon(request)

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
            self._decoder.piece(self._ll.llama_vocab_bos(self._vocab), True),
            self._decoder.piece(self._ll.llama_vocab_eos(self._vocab), True),
        )
        formatted = Jinja2ChatFormatter(template.decode("utf-8"), eos_token=eos, bos_token=bos)(messages=messages)
        prompt = formatted.prompt
        if bos and prompt.startswith(bos):
            prompt = prompt[len(bos) :]  # tokenize() adds it
        stop = formatted.stop if isinstance(formatted.stop, list) else ([formatted.stop] if formatted.stop else [])
        yield from self.stream(prompt, stop, max_tokens, temperature, cancel)

    def close(self) -> None:
        """Stop the scheduler and free the context and the model. Requests still queued fail.
        Idempotent."""
        if self._model is None:
            return
        self._decoder.close()
        self._ll.llama_model_free(self._model)
        self._model = None
