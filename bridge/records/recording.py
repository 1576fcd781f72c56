"""Call recordings: stereo, caller on the left and agent on the right, PCM16 at
8000 Hz, exactly as the audio went over the wire, streamed to disk while the call runs.

The leg drives one :class:`CallRecording` per call in 20 ms slots (160 samples per
channel per slot):

- SIP/RTP: every send slot of the RTP pacer is one slot. The agent channel is the
  frame that slot sent (silence when none: a barge-in cut shows as silence at once);
  the caller channel is the next frame received (silence when none arrived).
- Media Streams: every inbound ``media`` frame is one slot (Twilio paces them in real
  time). The agent channel models Twilio's playback buffer: the frames we sent, one
  per slot, emptied by ``clear`` (what Twilio drops on barge-in is never heard, so it
  is never recorded).

Frames are gathered for a second on the event loop, then encoded and written by
one shared writer thread (PyAV: WAV ``pcm_s16le`` or FLAC), so the loop never waits
on the disk. :meth:`CallRecording.close` writes the rest and closes the file.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..audio.wire import FRAME_SAMPLES as FRAME
from ..audio.wire import SAMPLE_RATE as RATE

log = logging.getLogger("bridge.records")

#: Slots gathered before a write (1 s).
BATCH = 50
#: Caller frames that may wait for a slot (a burst after a stall); older ones are dropped.
MAX_CALLER_BACKLOG = 10

_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recordings")


def recording_path(base: str | Path, call_id: str, fmt: str, when: datetime | None = None) -> Path:
    """``base/YYYY/MM/DD/<call id>.<fmt>`` (UTC date; the call id reduced to safe characters)."""
    when = when or datetime.now(UTC)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", call_id)[:120] or "call"
    return Path(base) / f"{when:%Y/%m/%d}" / f"{safe}.{fmt}"


class _File:
    """The PyAV side (writer thread only)."""

    def __init__(self, path: Path, fmt: str) -> None:
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), "w", format=fmt)
        self.stream = self.container.add_stream("pcm_s16le" if fmt == "wav" else "flac", rate=RATE, layout="stereo")
        self.pts = 0

    def write(self, stereo: np.ndarray) -> None:
        import av

        frame = av.AudioFrame.from_ndarray(stereo.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = RATE
        frame.pts = self.pts
        self.pts += stereo.shape[0]
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()


class CallRecording:
    """One call's recording.

    Args:
        path: the file to write (its folder is created).
        fmt: ``wav`` or ``flac``.

    Raises:
        ValueError: another format.
    """

    def __init__(self, path: str | Path, fmt: str = "wav") -> None:
        if fmt not in ("wav", "flac"):
            raise ValueError(f"recording format {fmt!r}: use wav or flac")
        self.path = Path(path)
        self.fmt = fmt
        self.dropped = 0
        self.failed = False
        self._caller: collections.deque = collections.deque()
        self._agent: collections.deque = collections.deque()
        self._batch: list[np.ndarray] = []
        self._file: _File | None = None
        self._last: Future = _writer.submit(self._open)
        self._closed = False

    # ---------------------------------------------------------------- the leg's side

    def caller(self, pcm: np.ndarray) -> None:
        """A caller frame arrived (PCM16 mono 8 kHz, 160 samples)."""
        if len(self._caller) >= MAX_CALLER_BACKLOG:
            self._caller.popleft()
            self.dropped += 1
        self._caller.append(pcm)

    def agent(self, pcm: np.ndarray) -> None:
        """An agent frame went out (PCM16 mono 8 kHz, 160 samples)."""
        self._agent.append(pcm)

    def send_slot(self, pcm: np.ndarray | None) -> None:
        """A leg that paces its own sending (RTP, WebRTC) used one 20 ms send slot: the
        agent's frame (``None``: silence), then :meth:`tick`."""
        if pcm is not None:
            self.agent(pcm)
        self.tick()

    def clear_agent(self) -> None:
        """The far end dropped what it had not played (Media Streams ``clear``)."""
        self._agent.clear()

    def tick(self) -> None:
        """One 20 ms slot: one frame of each channel (silence for a channel with none)."""
        if self._closed:
            return
        slot = np.zeros((FRAME, 2), dtype=np.int16)
        if self._caller:
            pcm = self._caller.popleft()
            slot[: len(pcm), 0] = pcm[:FRAME]
        if self._agent:
            pcm = self._agent.popleft()
            slot[: len(pcm), 1] = pcm[:FRAME]
        self._batch.append(slot)
        if len(self._batch) >= BATCH:
            self._flush()

    async def close(self) -> None:
        """Write what is left and close the file (idempotent). The agent frames still
        queued on a Media Streams leg were never played, so they are not written."""
        if self._closed:
            return
        self._flush()
        self._closed = True
        if self.dropped:
            log.info(
                "recording %s: %d caller frames dropped (they arrived in a burst, more than %d ahead)",
                self.path,
                self.dropped,
                MAX_CALLER_BACKLOG,
            )
        self._last = _writer.submit(self._finish)
        await asyncio.wrap_future(self._last)

    # ---------------------------------------------------------------- the writer's side

    def _flush(self) -> None:
        if self._batch:
            stereo, self._batch = np.concatenate(self._batch), []
            self._last = _writer.submit(self._write, stereo)

    def _open(self) -> None:
        try:
            self._file = _File(self.path, self.fmt)
        except Exception as exc:  # noqa: BLE001 - a recording failure never ends the call
            self._fail("open", exc)

    def _write(self, stereo: np.ndarray) -> None:
        if self._file is None:
            return
        try:
            self._file.write(stereo)
        except Exception as exc:  # noqa: BLE001
            self._fail("write", exc)

    def _finish(self) -> None:
        if self._file is None:
            return
        try:
            self._file.close()
        except Exception as exc:  # noqa: BLE001
            self._fail("close", exc)
        self._file = None

    def _fail(self, what: str, exc: Exception) -> None:
        if not self.failed:
            log.error("recording %s: %s failed, the rest of this call is not recorded: %s", self.path, what, exc)
        self.failed = True
        self._file = None
