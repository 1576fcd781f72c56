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

A full pass holds the event loop, and with it every call's media, for as long as
it scans the objects of the calls still up: about 30 ms with 500 calls on 2 cores
(measured: 20 calls ending per second stalling the loop by 30-60 ms each
time). :func:`collect_after_call` therefore runs the full pass only while few calls
are up (:data:`FULL_PASS_MAX_CALLS`), where it is cheap and where the saw-tooth
shows; with more, a pass of the young generations (what the ending created), and
CPython's own full passes as the heap grows.
"""

from __future__ import annotations

import asyncio
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


#: Calls still up at most, for a full cyclic-GC pass at the end of a call.
FULL_PASS_MAX_CALLS = 8


def collect_after_call(calls_up: int) -> int:
    """The GC pass at the end of a call, with ``calls_up`` calls still in progress:
    :func:`collect` when ``calls_up <= FULL_PASS_MAX_CALLS``, else a pass over the
    two young generations (``gc.collect(1)``: sub-millisecond). Returns the objects freed."""
    if calls_up <= FULL_PASS_MAX_CALLS:
        return collect()
    return gc.collect(1)


async def release_after_call(calls_up: int) -> None:
    """What a server does once a call is over: :func:`collect_after_call` with ``calls_up``
    calls still in progress, then :func:`trim` in a worker thread."""
    collect_after_call(calls_up)
    await asyncio.to_thread(trim)


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
