"""Keeping the resident size honest on glibc (Linux).

The conversation runs inference in worker threads; glibc gives each thread its own
malloc arena (up to 8 per core) and keeps freed memory in them. With ASR, LLM and TTS
allocating hundreds of MB transiently per turn, the resident size then wanders by tens
of MB from call to call, depending on which threads ran what, although nothing leaks.
Two remedies, both no-ops off glibc:

- :func:`limit_arenas` at start (``mallopt(M_ARENA_MAX, 2)``, as ``MALLOC_ARENA_MAX=2``);
- :func:`trim` after each call (``malloc_trim(0)``), in a worker thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

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


def trim() -> None:
    """Give freed heap memory back to the kernel (``malloc_trim(0)``); takes milliseconds,
    so call it from a worker thread."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
