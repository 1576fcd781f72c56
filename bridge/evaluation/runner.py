"""``bridge bench answers``: every conversation of the evaluation set, with every voice."""

from __future__ import annotations

import logging
import time

from .evalset import load_sets
from .harness import run_conversation
from .report import build_report
from .voices import voice

log = logging.getLogger("bridge.evaluation")


async def bench_answers(
    settings, engines, voices: list[str], paths: list[str] | None = None, splits: list[str] | None = None
) -> dict:
    """Run the evaluation set and return the report (:func:`.report.build_report`).

    Args:
        settings: :class:`bridge.config.Settings` whose agent is evaluated.
        engines: the loaded engines for ``settings``.
        voices: names from :data:`.voices.VOICES`, or ``text`` (the LLM gets the
            words, no audio: isolates the prompt and the guards).
        paths: evaluation files (default ``config/eval/*.yaml``).
        splits: only these splits (``tune``, ``heldout``); default all.

    Raises:
        KeyError: an unknown voice.
        ValueError: a malformed evaluation file.
    """
    sets = [s for s in load_sets(paths) if not splits or s.split in splits]
    speakers = {name: (None if name == "text" else voice(name, engines.tts)) for name in voices}
    runs = []
    started = time.perf_counter()
    for name, speak in speakers.items():
        for s in sets:
            scores = []
            for conversation in s.conversations:
                scores += await run_conversation(engines, settings, conversation, speak)
            runs.append({"voice": name, "split": s.split, "scores": scores})
    report = build_report(runs)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["voices"] = list(voices)
    report["files"] = [s.path for s in sets]
    report["models"] = {
        "asr": settings.models.asr,
        "llm": settings.models.llm,
        "tts": settings.models.tts,
        "device": engines.device,
        "asr_beam_size": settings.models.asr_beam_size,
    }
    return report
