"""Nothing leaves the machine unless the operator configured it.

The model libraries can reach out on their own: onnxruntime (Piper TTS, Silero VAD)
has telemetry events, and huggingface_hub (under faster-whisper) resolves model
names and reports usage. :func:`lock_down` switches all of that off before any
engine loads; ``tests/test_residency.py`` watches a serving process with strace and
fails on any destination that is not a call peer, the configured database or a
configured engine.

An operator who wants a library online sets its variable first: :func:`lock_down` only
fills in what is unset. ``bridge models pull``, whose job is to reach the hub, leaves
``HF_HUB_OFFLINE`` to the operator (``HF_HUB_OFFLINE=1`` there means: ``--from DIR`` only).
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


#: What stays unset for ``bridge models pull``, the one command whose job is to reach
#: the hub the operator names (``HF_ENDPOINT``, with ``HF_TOKEN`` or a stored login).
HUB_ACCESS = ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_IMPLICIT_TOKEN")


def lock_down(hub: bool = False) -> None:
    """Set :data:`OFFLINE_ENV` where unset and turn onnxruntime's telemetry events off.
    Idempotent; call before onnxruntime or huggingface_hub is imported (the CLI does it
    first thing). ``hub=True`` (``bridge models pull``) leaves :data:`HUB_ACCESS` alone,
    so the operator's own ``HF_HUB_OFFLINE`` still decides; telemetry stays off."""
    for key, value in OFFLINE_ENV.items():
        if not (hub and key in HUB_ACCESS):
            os.environ.setdefault(key, value)
    try:
        import onnxruntime
    except ImportError:  # pragma: no cover - Piper depends on it
        return
    disable = getattr(onnxruntime, "disable_telemetry_events", None)
    if disable is not None:
        disable()
