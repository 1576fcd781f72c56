"""Piper for many calls at once (the CUDA default, PiperTts(concurrent=True)): only the
phonemization is serialized; every call still gets its own, intelligible sentence."""

from __future__ import annotations

import threading

import numpy as np

from bridge.audio.resample import resample_all
from bridge.engines.tts import PiperTts, embedded_voice_paths

SENTENCES = {
    "hours": "We are open from nine until five.",
    "price": "A cleaning costs eighty dollars.",
    "parking": "You can park behind the building.",
    "hold": "Please hold while I transfer your call.",
}


def test_concurrent_synthesis_gives_each_call_its_sentence(asr):
    tts = PiperTts(*embedded_voice_paths(), concurrent=True)
    assert PiperTts(*embedded_voice_paths()).concurrent is False  # CPU default: one at a time
    out: dict[str, np.ndarray] = {}
    start = threading.Barrier(len(SENTENCES))

    def speak(name: str) -> None:
        start.wait()
        out[name] = np.concatenate(list(tts.synthesize(SENTENCES[name])))

    threads = [threading.Thread(target=speak, args=(n,)) for n in SENTENCES]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for name, text in SENTENCES.items():
        audio = out[name]
        assert audio.dtype == np.int16 and 0.5 < len(audio) / tts.sample_rate < 5
        assert np.abs(audio).max() > 20000  # peak-normalized as Piper does
        heard = asr.transcribe(resample_all(audio, tts.sample_rate, 8000)).lower()
        # Whisper writes numbers either way ("nine" or "9", or hears "mine"): each sentence
        # has words no other one has, so a call that got another call's audio fails here.
        keys = {
            "hours": ("open", "until"),
            "price": ("clean", "cost", "80", "eighty"),
            "parking": ("park", "behind"),
            "hold": ("hold", "transfer"),
        }[name]
        assert any(k in heard for k in keys), (text, heard)
