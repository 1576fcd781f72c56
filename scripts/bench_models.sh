#!/usr/bin/env bash
# Benchmark model presets stage by stage (a thin wrapper over `bridge bench models`).
#   scripts/bench_models.sh [PRESET...]      default: cpu-small cpu-better gpu
# Writes out/bench-models.json and out/bench-models.png (the voice-to-voice budget per
# preset); a preset whose models are not here is reported "not run" with the pull to run.
set -euo pipefail
# Runs in the current directory (models/ and out/ are relative to it, as for bridge itself).
here="$(cd "$(dirname "$0")/.." && pwd)"
bridge=bridge
python=python3
[ -x "$here/.venv/bin/bridge" ] && bridge="$here/.venv/bin/bridge" && python="$here/.venv/bin/python"
presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(cpu-small cpu-better gpu)
mkdir -p out
args=()
for p in "${presets[@]}"; do args+=(--preset "$p"); done
"$bridge" bench models "${args[@]}" --runs "${RUNS:-6}" --json out/bench-models.json --chart out/bench-models.png
