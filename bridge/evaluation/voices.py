"""The caller's voices for the evaluation: Piper and espeak-ng, at normal and fast rates.

Every voice returns what the agent would receive from a phone: PCM16 mono
8000 Hz (int16 array) that went through G.711 mu-law (ITU-T G.711, via PyAV),
resampled with FFmpeg (PyAV), never by hand.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from collections.abc import Callable

import numpy as np

from ..audio.resample import resample_all
from ..media.codecs import G711

#: name -> (engine, rate). Piper rate is its ``length_scale`` (smaller is faster);
#: espeak-ng's is words per minute.
VOICES: dict[str, tuple[str, float]] = {
    "piper": ("piper", 1.0),
    "piper-fast": ("piper", 0.75),
    "espeak": ("espeak", 160),
    "espeak-fast": ("espeak", 220),
}
DEFAULT_VOICES = ("piper", "piper-fast", "espeak", "espeak-fast")


def telephone(pcm: np.ndarray, rate: int) -> np.ndarray:
    """PCM16 mono at ``rate`` Hz -> 8000 Hz through a G.711 mu-law encode and decode."""
    codec = G711("PCMU")
    return codec.decode(codec.encode(resample_all(pcm.astype(np.int16), rate, 8000)))


def _piper(tts, length_scale: float, deterministic: bool = False) -> Callable[[str], np.ndarray]:
    from piper.config import SynthesisConfig

    noise = {"noise_scale": 0.0, "noise_w_scale": 0.0} if deterministic else {}

    def speak(text: str) -> np.ndarray:
        # The bench's own use of the loaded voice, outside any call: the adapter's
        # lock keeps it off a synthesis in flight.
        with tts._lock:  # noqa: SLF001 - same process, same voice object
            chunks = [
                np.asarray(c.audio_int16_array, dtype=np.int16).reshape(-1)
                for c in tts.voice.synthesize(text, syn_config=SynthesisConfig(length_scale=length_scale, **noise))
            ]
        return telephone(np.concatenate(chunks), tts.sample_rate)

    return speak


def _espeak(wpm: float) -> Callable[[str], np.ndarray]:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("the espeak voices need espeak-ng (Debian package espeak-ng; scripts/setup.sh installs it)")

    def speak(text: str) -> np.ndarray:
        out = subprocess.run(
            [exe, "-v", "en-us", "-s", str(int(wpm)), "--stdout", text], check=True, capture_output=True
        ).stdout
        with wave.open(io.BytesIO(out), "rb") as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        return telephone(pcm, rate)

    return speak


def voice(name: str, tts, deterministic: bool = False) -> Callable[[str], np.ndarray]:
    """The speaker called ``name`` (a key of :data:`VOICES`): text -> 8 kHz telephone PCM16.

    Piper varies its delivery at random (VITS noise); ``deterministic`` turns that
    off, so that the same text is the same audio every time (tests).

    Raises:
        KeyError: an unknown voice name.
        RuntimeError: espeak-ng is not installed.
    """
    engine, rate = VOICES[name]
    return _piper(tts, rate, deterministic) if engine == "piper" else _espeak(rate)
