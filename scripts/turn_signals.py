"""How well each end-of-turn signal tells a finished turn from a caller's pause, offline.

Usage: .venv/bin/python scripts/turn_signals.py [--config F] [--split tune|heldout] [--voices piper,espeak] [--json F]

For every item of config/eval/turns/ and every voice (through G.711, as `bridge bench
turns` renders them), three moments of the caller's audio are judged the way the
speculative pass judges them (bridge/conversation/turntaking.py): a `complete` utterance
(should read finished), a `paused` utterance up to its pause (should read unfinished),
and the same with its completion (should read finished). Each gets its transcript
(the configured ASR), the word rule (sentence_state), the LLM's end-of-line probability
(bridge/engines/llm.py) and Smart Turn's (bridge/engines/turn.py). Prints, per signal and
for the combination the agent uses, how many moments it reads right. Asserts nothing;
choose thresholds on the tuning split only.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from bridge.benchmarks.turns import LEAD_S, _trimmed, load_turn_sets
from bridge.config import load_settings
from bridge.conversation.prompt import completion_prompt_prefix
from bridge.conversation.turns import probe_text, sentence_state
from bridge.evaluation.voices import DEFAULT_VOICES, voice
from bridge.warmup import load_warm_engines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML merged over config/default.yaml (another ASR, say)")
    parser.add_argument("--split", choices=["tune", "heldout"], default="tune")
    parser.add_argument("--voices", default=",".join(DEFAULT_VOICES))
    parser.add_argument("--json")
    args = parser.parse_args()
    settings = load_settings(args.config)
    agent = settings.agent
    engines = load_warm_engines(settings)
    prefix = completion_prompt_prefix(agent, []) + "Caller: "
    lead, tail = (
        np.zeros(int(LEAD_S * 8000), np.int16),
        np.zeros(800, np.int16),
    )  # 0.1 s: the speculative pass's silence
    moments = []
    for s in load_turn_sets():
        if s.split != args.split:
            continue
        for v in args.voices.split(","):
            speak = voice(v, engines.tts, deterministic=True)
            for item in s.items:
                if item.kind == "complete":
                    cases = [("complete", np.concatenate([lead, _trimmed(speak(item.say)), tail]), True)]
                else:
                    phrase = item.say if item.say.rstrip()[-1:] in ",.?!" else item.say + ","
                    first = _trimmed(speak(phrase))
                    whole = np.concatenate(
                        [lead, first, np.zeros(int(item.pause_s * 8000), np.int16), _trimmed(speak(item.then)), tail]
                    )
                    cases = [("pause", np.concatenate([lead, first, tail]), False), ("completed", whole, True)]
                for moment, pcm, finished in cases:
                    heard = engines.asr.transcribe(pcm)
                    text = heard.strip()
                    p_text = engines.llm.end_probability(prefix + probe_text(text)) if text else None
                    p_audio = engines.turn.probability(pcm) if engines.turn is not None else None
                    moments.append(
                        {
                            "id": item.id,
                            "voice": v,
                            "moment": moment,
                            "finished": finished,
                            "text": text,
                            "words": sentence_state(text),
                            "p_text": p_text,
                            "p_audio": p_audio,
                            "avg_logprob": getattr(heard, "avg_logprob", None),
                        }
                    )

    def verdicts(m: dict, text_t: float, audio_t: float) -> dict[str, bool]:
        words = m["words"] != "unfinished"
        text = m["p_text"] is None or m["p_text"] >= text_t
        audio = m["p_audio"] is None or m["p_audio"] >= audio_t
        return {
            "words": words,
            "language": text,
            "audio": audio,
            "words+language": words and text,
            "all three": words and text and audio,
        }

    print(
        f"{len(moments)} moments ({args.split}); a moment is read right when a signal says finished exactly when it is"
    )
    for text_t in (0.005, 0.02, 0.05):
        for audio_t in (0.2, 0.5):
            print(f"\nturn_text_threshold {text_t}, turn_audio_threshold {audio_t}")
            print(f"{'signal':16} {'right':>6} {'pause read finished':>20} {'finished read unfinished':>25}")
            for signal in ("words", "language", "audio", "words+language", "all three"):
                said = [(m, verdicts(m, text_t, audio_t)[signal]) for m in moments]
                right = sum(v == m["finished"] for m, v in said)
                early = sum(v and not m["finished"] for m, v in said)
                late = sum(not v and m["finished"] for m, v in said)
                print(f"{signal:16} {right:>3}/{len(said):<3} {early:>20} {late:>25}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(moments, f, indent=1)


if __name__ == "__main__":
    main()
