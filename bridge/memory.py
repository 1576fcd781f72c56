"""Keeping the resident size honest on glibc (Linux).

The conversation runs inference in worker threads; glibc gives each thread its own
malloc arena (up to 8 per core) and keeps freed memory in them. With ASR, LLM and TTS
allocating hundreds of MB transiently per turn, the resident size then wanders by tens
of MB from call to call, depending on which threads ran what, although nothing leaks.
Two remedies, both no-ops off glibc:

- :func:`limit_arenas` at start (``mallopt(M_ARENA_MAX, 2)``, as ``MALLOC_ARENA_MAX=2``);
- :func:`trim` after each call (``malloc_trim(0)``), in a worker thread.

A finished call also leaves reference cycles behind (asyncio tasks and the
exceptions that cancelled them, frames, callbacks): measured on test_leaks, about
3 MB per conversation that only the next full cyclic-GC pass frees, a saw-tooth of
tens of MB. So :func:`freeze` moves everything alive at start (models, libraries)
out of the collector's sight (``gc.freeze``), and :func:`collect` runs a full
pass after each call: it then scans only what calls created, milliseconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import time
from pathlib import Path

log = logging.getLogger("bridge.memory")

_M_ARENA_MAX = -8  # glibc malloc.h


def _libc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018 - glibc only
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def limit_arenas(count: int = 2) -> bool:
    """Cap glibc's malloc arenas at ``count`` (call before threads start). Returns whether it applied."""
    if _LIBC is None:
        return False
    return bool(_LIBC.mallopt(_M_ARENA_MAX, count))


def freeze() -> None:
    """Exclude every object alive now from future GC passes (call once, after the
    models are loaded and before calls arrive)."""
    gc.collect()
    gc.freeze()


def collect() -> int:
    """A full cyclic-GC pass over what is not frozen; returns the objects freed (logged at DEBUG with its time)."""
    started = time.perf_counter()
    freed = gc.collect()
    log.debug("gc: %d unreachable objects freed in %.1f ms", freed, (time.perf_counter() - started) * 1000)
    return freed


def trim() -> None:
    """Give freed heap memory back to the kernel (``malloc_trim(0)``); takes milliseconds,
    so call it from a worker thread."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def rss_mb(pid: int | str = "self", field: str = "VmRSS") -> float:
    """Resident memory of process ``pid`` now (``VmRSS``) or its peak so far (``VmHWM``),
    MB, from ``/proc/PID/status`` (Linux).

    Raises:
        RuntimeError: the status file has no such field.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")
