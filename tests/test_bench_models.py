"""``bridge bench models`` through scripts/bench_models.sh: figures per preset, JSON, and the PNG chart."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import matplotlib.image
import pytest

from bridge.config import load_settings

pytestmark = pytest.mark.slow  # real models in subprocesses

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_models.sh"


def test_bench_models_compares_presets_and_draws_the_budget(tmp_path):
    done = subprocess.run(
        ["bash", str(SCRIPT), "cpu-small", "cpu-better"],
        cwd=tmp_path,
        env={**os.environ, "RUNS": "2"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    results = {r["label"]: r for r in json.loads((tmp_path / "out" / "bench-models.json").read_text())}
    small = results["cpu-small"]
    assert small["device"] == "cpu" and small["runs"] == 2 and small["models"]["llm_mode"] == "completion"
    assert 0 < small["asr"]["pass_p50"] and 0 <= small["asr"]["wer_mean"] <= 1
    assert (
        0 < small["llm"]["first_token_p50"] <= small["llm"]["first_sentence_p50"]
        and small["llm"]["tokens_per_s_mean"] > 0
    )
    assert 0 < small["tts"]["first_audio_p50"] and 0 < small["tts"]["rtf_mean"]
    assert small["memory"]["models_mb"] > 0 and small["memory"]["peak_mb"] >= small["memory"]["models_mb"]
    stages = small["budget"]
    assert (
        stages["endpoint"] == load_settings(preset="cpu-small").agent.endpoint_fast_ms / 1000
        and abs(stages["total"] - sum(stages[s] for s in ("endpoint", "asr", "llm", "tts"))) < 1e-9
    )
    # A preset that cannot run here is a column that says why, not a crash.
    assert "bridge models pull whisper-base.en" in results["cpu-better"]["error"]
    assert "cpu-better: not run:" in done.stdout and "voice-to-voice budget (s)" in done.stdout
    image = matplotlib.image.imread(tmp_path / "out" / "bench-models.png")
    assert image.shape[0] > 100 and image.shape[1] > 400  # a real PNG, drawn
