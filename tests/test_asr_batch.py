"""Batched ASR (bridge/engines/asr_batch.py): passes of calls that coincide run as one
CTranslate2 batch on one model, with the text each call would get alone. Run here on the
CPU with the embedded tiny.en; it is the default (models.asr_batch: auto: up to 8 on CUDA, 4 on the CPU)."""

from __future__ import annotations

import threading
import wave
from pathlib import Path

import numpy as np
import pytest

from bridge.audio.resample import resample_all
from bridge.config import load_settings
from bridge.engines.asr import WhisperAsr, asr_batch, embedded_asr_path

NAMES = ["saturday", "cleaning", "where", "person"]


def _pcm8k(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        return resample_all(pcm, w.getframerate(), 8000)


def _words(text: str) -> list[str]:
    return "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()


@pytest.fixture(scope="module")
def batched():
    asr = WhisperAsr(embedded_asr_path(), "cpu", "int8", beam_size=1, batch=8)
    asr.batcher.window_s = 0.2  # the test's threads start together; give them time to join one batch
    yield asr
    asr.batcher.close()


def test_coinciding_passes_run_as_one_batch_with_the_same_text(speech, batched):
    alone = WhisperAsr(embedded_asr_path(), "cpu", "int8", beam_size=1)
    audio = {name: _pcm8k(speech[name]) for name in NAMES}
    expected = {name: _words(alone.transcribe(pcm)) for name, pcm in audio.items()}

    results: dict[str, str] = {}
    start = threading.Barrier(len(NAMES))

    def call(name: str) -> None:
        start.wait()
        results[name] = batched.transcribe(audio[name])

    threads = [threading.Thread(target=call, args=(name,)) for name in NAMES]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert {name: _words(text) for name, text in results.items()} == expected
    assert batched.batcher.largest == len(NAMES)  # four calls, one pass of the encoder and decoder


def test_initial_prompt_and_beam_size_are_per_call(speech, batched):
    pcm = _pcm8k(speech["cleaning"])
    prompt = "Riverside Dental Clinic, cleaning, whitening."
    other = batched.variant(beam_size=3, initial_prompt=prompt)
    alone = WhisperAsr(embedded_asr_path(), "cpu", "int8", beam_size=3, initial_prompt=prompt)
    assert _words(other.transcribe(pcm)) == _words(alone.transcribe(pcm))  # what faster-whisper hears with them
    assert batched.beam_size == 1 and batched.initial_prompt is None and other.batcher is batched.batcher  # one model


def test_long_audio_takes_faster_whispers_own_path(speech, batched):
    pcm = _pcm8k(speech["where"])
    long = np.concatenate([pcm, np.zeros(8000 * 31, dtype=np.int16)])  # over one 30 s window
    before = batched.batcher.batches
    assert "clinic" in _words(batched.transcribe(long))
    assert batched.batcher.batches == before


def test_auto_batches_on_cuda_only():
    m = load_settings().models
    assert m.asr_batch == "auto" and asr_batch(m, "cuda") == 8 and asr_batch(m, "cpu") == 4
