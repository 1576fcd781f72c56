"""Whether a caller frame is speech: the VAD's verdict, less the agent's own voice coming
back down the line (:mod:`.echo_guard`: telephone lines echo, and an agent that takes its
own echo for the caller interrupts itself)."""

from __future__ import annotations

import numpy as np

from .echo_guard import EchoGuard


class Hearing:
    """Speech detection for one call.

    Args:
        vad: the call's VAD (:class:`bridge.engines.Vad`).
        echo_guard: the call's :class:`~.echo_guard.EchoGuard`, or ``None`` (off).
        metrics: a :class:`bridge.observability.metrics.Metrics` or ``None``
            (``bridge_echo_frames_total``).
    """

    def __init__(self, vad, echo_guard: EchoGuard | None, metrics=None) -> None:
        self._vad = vad
        self._echo_guard = echo_guard
        self._metrics = metrics
        #: Frames the VAD called speech that were the agent's own echo.
        self.echo_frames = 0

    def voiced(self, frame: np.ndarray) -> bool:
        """Whether ``frame`` (PCM16 mono 8000 Hz, 160 samples) is the caller speaking."""
        voiced = self._vad.is_speech(frame)
        guard = self._echo_guard
        if guard is not None:
            guard.note_received(frame)
            if voiced and guard.active and guard.is_echo():
                self.echo_frames += 1
                if self._metrics:
                    self._metrics.echo_frames.inc()
                return False  # our own voice coming back, not the caller
        return voiced
