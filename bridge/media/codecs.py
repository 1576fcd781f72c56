"""G.711 codecs, computed by FFmpeg through PyAV.

G.711 (ITU-T G.711, PCMU = mu-law, PCMA = A-law) is a fixed per-sample
mapping. Running a PyAV codec context for every 20 ms packet costs tens of
microseconds of Python/FFmpeg overhead, so the codec is
a numpy lookup table, and the table itself is produced by FFmpeg's
``pcm_mulaw``/``pcm_alaw`` encoder and decoder once per process: every one of
the 65536 PCM16 values is encoded and every one of the 256 code bytes
decoded. The tables are therefore FFmpeg's codec, sample for sample (the
tests check this against PyAV directly).

Resampling lives in :mod:`bridge.audio.resample`.
"""

from __future__ import annotations

import functools
from fractions import Fraction
from typing import cast

import av
import numpy as np
from av.audio.codeccontext import AudioCodecContext

from ..audio.wire import SAMPLE_RATE

#: FFmpeg codec names for the SDP encoding names.
FFMPEG_CODEC = {"PCMU": "pcm_mulaw", "PCMA": "pcm_alaw"}


def _ffmpeg_encode(codec: str, pcm: np.ndarray) -> bytes:
    ctx = cast(AudioCodecContext, av.CodecContext.create(FFMPEG_CODEC[codec], "w"))
    ctx.sample_rate = SAMPLE_RATE
    ctx.layout = "mono"
    ctx.format = "s16"
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = SAMPLE_RATE
    frame.time_base = Fraction(1, SAMPLE_RATE)
    frame.pts = 0
    return b"".join(bytes(p) for p in ctx.encode(frame)) + b"".join(bytes(p) for p in ctx.encode(None))


def _ffmpeg_decode(codec: str, data: bytes) -> np.ndarray:
    ctx = cast(AudioCodecContext, av.CodecContext.create(FFMPEG_CODEC[codec], "r"))
    ctx.sample_rate = SAMPLE_RATE
    ctx.layout = "mono"
    packet = av.Packet(data)
    frames = ctx.decode(packet)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16)


@functools.cache
def _tables(codec: str) -> tuple[np.ndarray, np.ndarray]:
    """(encode table: 65536 -> uint8 indexed by uint16 view, decode table: 256 -> int16)."""
    every_sample = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
    encoded = np.frombuffer(_ffmpeg_encode(codec, every_sample), dtype=np.uint8)
    encode = np.empty(65536, dtype=np.uint8)
    encode[every_sample.view(np.uint16)] = encoded
    decode = _ffmpeg_decode(codec, bytes(range(256)))
    return encode, decode


class G711:
    """A G.711 codec (``"PCMU"`` or ``"PCMA"``), stateless, thread-safe.

    Raises:
        KeyError: unknown codec name.
    """

    def __init__(self, codec: str) -> None:
        self.name = codec
        self._encode, self._decode = _tables(codec)

    def encode(self, pcm: np.ndarray) -> bytes:
        """PCM16 mono 8000 Hz (int16 array, any length) -> one byte per sample."""
        return self._encode[np.asarray(pcm, dtype=np.int16).view(np.uint16)].tobytes()

    def decode(self, payload: bytes) -> np.ndarray:
        """G.711 bytes -> PCM16 mono 8000 Hz int16 array of ``len(payload)`` samples."""
        return self._decode[np.frombuffer(payload, dtype=np.uint8)]
