"""Compare ASR settings on the evaluation set: word error rate and seconds per pass.

Usage: .venv/bin/python scripts/asr_compare.py [--split tune|heldout] [--voices piper,espeak] SETTING...

Each SETTING is MODEL:BEAM[:WINDOWS[:PROMPT]]:
  MODEL    tiny (tiny.en, embedded) or base (faster-whisper base, embedded-base);
  BEAM     the beam size;
  WINDOWS  the encoder windows in seconds, "/"-separated (bridge/engines/asr_batch.py):
           30 is faster-whisper's fixed window, 10/20/30 the default buckets, 10 alone
           pads every utterance to 10 s (default 10/20/30);
  PROMPT   p (the agent's initial prompt, models.asr_prompt auto, the default) or n.

Every item is spoken by each voice (Piper and espeak-ng at normal and fast rates, through
G.711, as `bridge bench answers` speaks them) with 0.3 s of silence before and 0.12 s
after, as the speculative pass sees an utterance, and recognized once per setting, passes
one at a time. Prints WER per voice and overall, and pass seconds (p50, p95). Asserts nothing.
The held-out split is for scoring a choice made on the tuning split, never for choosing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bridge.config import load_settings
from bridge.engines.asr import WhisperAsr, embedded_asr_path, embedded_base_asr_path
from bridge.engines.asr_hints import initial_prompt
from bridge.engines.tts import PiperTts, embedded_voice_paths
from bridge.evaluation.evalset import load_sets
from bridge.evaluation.scoring import word_error_rate
from bridge.evaluation.voices import DEFAULT_VOICES, voice


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q * 100)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="*", default=["tiny:5:30", "tiny:5:10/20/30", "tiny:2:10/20/30"])
    parser.add_argument("--split", choices=["tune", "heldout"], default="tune")
    parser.add_argument("--voices", default=",".join(DEFAULT_VOICES))
    args = parser.parse_args()
    settings = load_settings(None)
    prompt = initial_prompt(settings.models, settings.agent)
    items = [i for s in load_sets() if s.split == args.split for i in s.items]
    tts = PiperTts(*embedded_voice_paths())
    voices = args.voices.split(",")
    lead, tail = np.zeros(2400, np.int16), np.zeros(960, np.int16)
    audio = {
        (v, i.id): np.concatenate([lead, voice(v, tts, deterministic=True)(i.say), tail]) for v in voices for i in items
    }
    said = {i.id: i.say for i in items}
    print(f"{len(audio)} utterances ({args.split} split, voices {', '.join(voices)})")
    print(f"{'setting':22} {'voice':12} {'WER':>6} {'p50 s':>6} {'p95 s':>6}")
    for cfg in args.settings:
        model, beam, *rest = cfg.split(":")
        windows = tuple(int(w) for w in (rest[0] if rest else "10/20/30").split("/"))
        use_prompt = (rest[1] if len(rest) > 1 else "p") == "p"
        path = embedded_asr_path() if model == "tiny" else embedded_base_asr_path(settings.models.cache_dir)
        asr = WhisperAsr(path, beam_size=int(beam), initial_prompt=prompt if use_prompt else None, windows=windows)
        asr.transcribe(next(iter(audio.values())))  # warm-up
        every_wer, every_s = [], []
        for v in voices:
            wers, seconds = [], []
            for (name, item_id), pcm in audio.items():
                if name != v:
                    continue
                t = time.perf_counter()
                heard = asr.transcribe(pcm)
                seconds.append(time.perf_counter() - t)
                wers.append(word_error_rate(said[item_id], heard))
            every_wer += wers
            every_s += seconds
            print(
                f"{cfg:22} {v:12} {100 * statistics.mean(wers):5.1f}% {_pct(seconds, 0.5):6.3f} {_pct(seconds, 0.95):6.3f}",
                flush=True,
            )
        print(
            f"{cfg:22} {'all':12} {100 * statistics.mean(every_wer):5.1f}% {_pct(every_s, 0.5):6.3f} {_pct(every_s, 0.95):6.3f}",
            flush=True,
        )
        asr.batcher.close()


if __name__ == "__main__":
    main()
