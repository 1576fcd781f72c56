"""``bridge models check``, presets, and the llama.cpp build the models run on."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.config import ConfigError, load_settings
from bridge.engines import resolve_device
from bridge.engines.llm import amx_kernels_built

pytestmark = pytest.mark.slow  # real models in subprocesses


def test_llama_cpp_build_has_no_amx_kernels():
    """scripts/setup.sh rebuilds a llama-cpp-python that carries ggml's AMX kernels (they
    crash on the embedded GGUF on AMX CPUs); pip's wheel cache once slipped one through."""
    assert amx_kernels_built() is False


ROOT = Path(__file__).resolve().parent.parent


def bridge(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_check_loads_and_runs_the_embedded_set():
    result = bridge("models", "check", "--preset", "cpu-small", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["role"]: r for r in json.loads(result.stdout)}
    assert (rows["asr"]["device"], rows["asr"]["precision"]) == ("cpu", "int8")
    assert (rows["llm"]["device"], rows["llm"]["precision"]) == ("cpu", "Q4_K_M")
    assert (rows["tts"]["device"], rows["tts"]["precision"]) == ("cpu", "fp32")
    for row in rows.values():
        assert row["ok"] and row["load_s"] > 0 and row["rss_mb"] > 0


def test_a_broken_model_is_one_line_and_exit_status_1(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes((ROOT / "models" / "gemma-3-270m-q4_k_m.gguf").read_bytes()[:2_000_000])  # a cut copy
    config = tmp_path / "broken.yaml"
    config.write_text(f"models:\n  llm: {broken}\n")
    result = bridge("models", "check", "--config", str(config))
    assert result.returncode == 1
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert set(lines) == {"asr", "llm", "tts"}  # one line each: the others are still checked
    assert "FAILED: RuntimeError: llama.cpp could not load" in lines["llm"] and str(broken) in lines["llm"]
    assert "FAILED" not in lines["asr"] and "FAILED" not in lines["tts"]


def test_without_a_gpu_cuda_falls_back_to_the_cpu(tmp_path, caplog):
    """No CUDA device here: ``auto`` picks the CPU, ``cuda`` warns and falls back, and a
    model configured for the GPU runs on the CPU with CPU precision (int8, not float16)."""
    assert resolve_device("auto") == "cpu"
    with caplog.at_level(logging.WARNING, logger="bridge.engines"):
        assert resolve_device("cuda") == "cpu"
    assert "no CUDA device is usable: falling back to CPU" in caplog.text
    config = tmp_path / "gpu.yaml"
    config.write_text("models:\n  device: cuda\n  llm_gpu_layers: -1\n")
    result = bridge("models", "check", "--config", str(config), "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["role"]: r for r in json.loads(result.stdout)}
    assert {r["device"] for r in rows.values()} == {"cpu"} and rows["asr"]["precision"] == "int8"


def test_a_preset_with_missing_models_says_what_to_pull():
    result = bridge("serve", "--preset", "cpu-better", "--sip-listen", "127.0.0.1:0")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "bridge serve: preset cpu-better: models not here: whisper-base.en, qwen2.5-1.5b-instruct; "
        "run `bridge models pull whisper-base.en` and `bridge models pull qwen2.5-1.5b-instruct`"
    )
    unknown = bridge("serve", "--preset", "fastest")
    assert unknown.returncode == 2 and "no preset 'fastest' (known: cpu-better, cpu-small, gpu)" in unknown.stderr


def test_presets_layer_under_the_config_and_the_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # The operator's config replaces the preset's LLM: only the ASR is still missing.
    own = tmp_path / "own.yaml"
    own.write_text("models:\n  llm: embedded\nagent:\n  llm_mode: completion\n")
    with pytest.raises(
        ConfigError, match=r"models not here: whisper-base.en; run `bridge models pull whisper-base.en`$"
    ):
        load_settings(own, preset="cpu-better")
    # Placed where `bridge models pull` puts them, the gpu preset loads: default < preset < file < environment.
    (tmp_path / "models/whisper-large-v3-turbo").mkdir(parents=True)
    gguf = tmp_path / "models/llama-3.1-8b-instruct/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(b"GGUF")
    settings = load_settings(preset="gpu")
    assert (settings.models.device, settings.models.llm_gpu_layers, settings.agent.llm_mode) == ("cuda", -1, "chat")
    assert settings.models.llm == "models/llama-3.1-8b-instruct/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"
    assert settings.sip.listen == load_settings().sip.listen  # the rest is the defaults
    file = tmp_path / "threads.yaml"
    file.write_text("models:\n  llm_context: 4096\n")
    assert load_settings(file, preset="gpu").models.llm_context == 4096
    monkeypatch.setenv("BRIDGE_MODELS__LLM_CONTEXT", "2048")
    assert load_settings(file, preset="gpu").models.llm_context == 2048
