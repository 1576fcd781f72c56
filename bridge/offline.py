"""Nothing leaves the machine unless the operator configured it.

The model libraries can reach out on their own: onnxruntime (Piper TTS, Silero VAD)
has telemetry events, and huggingface_hub (under faster-whisper) resolves model
names and reports usage. :func:`lock_down` switches all of that off before any
engine loads; ``tests/test_residency.py`` watches a serving process with strace and
fails on any destination that is not a call peer, the configured database or a
configured engine.

An operator who wants a library online sets its variable first (``HF_HUB_OFFLINE=0``,
for ``bridge models pull``): :func:`lock_down` only fills in what is unset.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("bridge.offline")

#: Environment defaults: Hugging Face Hub offline and without telemetry; the
#: cross-tool "do not track" convention.
OFFLINE_ENV = {
    # onnxruntime >= 1.2x on Linux carries Microsoft's 1DS telemetry client, which
    # resolves and posts to mobile.events.data.microsoft.com from inference threads;
    # it reads this variable when the library loads (disable_telemetry_events()
    # afterwards is not enough: tests/test_residency.py saw the DNS queries).
    "ORT_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "DO_NOT_TRACK": "1",
}


def lock_down() -> None:
    """Set :data:`OFFLINE_ENV` where unset and turn onnxruntime's telemetry events off.
    Idempotent; call before onnxruntime is imported (the CLI does it first thing)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    try:
        import onnxruntime
    except ImportError:  # pragma: no cover - Piper depends on it
        return
    disable = getattr(onnxruntime, "disable_telemetry_events", None)
    if disable is not None:
        disable()
