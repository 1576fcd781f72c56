"""G.711 tables against FFmpeg (PyAV) directly, and resampling."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from bridge.audio.resample import Resampler, resample_all
from bridge.media.codecs import G711


def ffmpeg_encode(name: str, pcm: np.ndarray) -> bytes:
    ctx = av.CodecContext.create({"PCMU": "pcm_mulaw", "PCMA": "pcm_alaw"}[name], "w")
    ctx.sample_rate, ctx.layout, ctx.format = 8000, "mono", "s16"
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate, frame.time_base, frame.pts = 8000, Fraction(1, 8000), 0
    return b"".join(bytes(p) for p in ctx.encode(frame))


def ffmpeg_decode(name: str, data: bytes) -> np.ndarray:
    ctx = av.CodecContext.create({"PCMU": "pcm_mulaw", "PCMA": "pcm_alaw"}[name], "r")
    ctx.sample_rate, ctx.layout = 8000, "mono"
    return np.concatenate([f.to_ndarray().reshape(-1) for f in ctx.decode(av.Packet(data))])


@pytest.mark.parametrize("name", ["PCMU", "PCMA"])
def test_sample_exact_against_ffmpeg(name):
    rng = np.random.default_rng(1)
    pcm = np.concatenate([rng.integers(-32768, 32768, 4000), [-32768, -1, 0, 1, 32767]]).astype(np.int16)
    codec = G711(name)
    assert codec.encode(pcm) == ffmpeg_encode(name, pcm)
    every_byte = bytes(range(256))
    assert np.array_equal(codec.decode(every_byte), ffmpeg_decode(name, every_byte))


def test_known_code_points():
    # ITU-T G.711: mu-law silence is 0xFF, A-law silence is 0xD5.
    assert G711("PCMU").encode(np.zeros(2, np.int16)) == b"\xff\xff"
    assert G711("PCMA").encode(np.zeros(2, np.int16)) == b"\xd5\xd5"


def test_resample_lengths_and_tone():
    t = np.arange(22050) / 22050
    tone = (np.sin(2 * np.pi * 440 * t) * 10000).astype(np.int16)
    out = resample_all(tone, 22050, 8000)
    assert abs(len(out) - 8000) <= 2
    spectrum = np.abs(np.fft.rfft(out[:8000]))
    assert abs(int(np.argmax(spectrum)) - 440) <= 2  # 1 Hz bins


def test_streaming_resampler_matches_one_shot():
    rng = np.random.default_rng(2)
    pcm = rng.integers(-8000, 8000, 16000).astype(np.int16)
    r = Resampler(8000, 16000)
    pieces = [r.resample(pcm[i : i + 160]) for i in range(0, len(pcm), 160)] + [r.flush()]
    assert np.array_equal(np.concatenate(pieces), resample_all(pcm, 8000, 16000))
