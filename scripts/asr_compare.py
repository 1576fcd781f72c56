"""Compare ASR settings on the evaluation set's tuning items: WER and seconds per pass.

Usage: .venv/bin/python scripts/asr_compare.py tiny:1:n,tiny:5:p,base:1:p

Each setting is MODEL:BEAM:PROMPT, MODEL tiny (tiny.en) or base (faster-whisper base,
pip extra asr-base), PROMPT p (the agent's initial prompt, models.asr_prompt auto) or n.
Every item is spoken by espeak-ng (160 wpm) and Piper, through G.711, and recognized
once per setting. Prints figures; asserts nothing.
"""

from __future__ import annotations

import statistics
import sys
import time

from bridge.config import load_settings
from bridge.engines.asr import WhisperAsr, embedded_asr_path, embedded_base_asr_path
from bridge.engines.asr_hints import initial_prompt
from bridge.engines.tts import PiperTts, embedded_voice_paths
from bridge.evaluation.evalset import load_sets
from bridge.evaluation.scoring import word_error_rate
from bridge.evaluation.voices import voice


def main(configs: list[str]) -> None:
    settings = load_settings(None)
    prompt = initial_prompt(settings.models, settings.agent)
    items = [i for s in load_sets() if s.split == "tune" for i in s.items]
    tts = PiperTts(*embedded_voice_paths())
    speakers = {"espeak": voice("espeak", tts), "piper": voice("piper", tts, deterministic=True)}
    audio = {(v, i.id): speak(i.say) for v, speak in speakers.items() for i in items}
    print(f"{'setting':12} {'voice':7} {'WER':>6} {'s/pass p50':>10}")
    for cfg in configs:
        model, beam, p = cfg.split(":")
        path = embedded_asr_path() if model == "tiny" else embedded_base_asr_path(settings.models.cache_dir)
        asr = WhisperAsr(path, beam_size=int(beam), initial_prompt=prompt if p == "p" else None)
        asr.transcribe(audio[("espeak", items[0].id)])  # warm-up
        for v in speakers:
            wers, seconds = [], []
            for i in items:
                t = time.perf_counter()
                heard = asr.transcribe(audio[(v, i.id)])
                seconds.append(time.perf_counter() - t)
                wers.append(word_error_rate(i.say, heard))
            print(f"{cfg:12} {v:7} {100 * statistics.mean(wers):5.1f}% {statistics.median(seconds):10.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1].split(",") if len(sys.argv) > 1 else ["tiny:1:n", "tiny:5:p", "base:1:p"])
