#!/usr/bin/env bash
# Fetch models for bridge into models/ (a thin wrapper over `bridge models pull`).
#   scripts/download_models.sh NAME...            catalog names (bridge models list)
#   scripts/download_models.sh --preset NAME      every model preset NAME needs
#   scripts/download_models.sh --from DIR NAME    place NAME from a copied folder (air-gapped)
# HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE work as huggingface_hub documents them.
set -euo pipefail
# Runs in the current directory (models/ and out/ are relative to it, as for bridge itself).
here="$(cd "$(dirname "$0")/.." && pwd)"
bridge=bridge
python=python3
[ -x "$here/.venv/bin/bridge" ] && bridge="$here/.venv/bin/bridge" && python="$here/.venv/bin/python"

names=()
from=()
while [ $# -gt 0 ]; do
  case "$1" in
    --preset)
      [ $# -ge 2 ] || { echo "usage: $0 --preset NAME" >&2; exit 2; }
      mapfile -t more < <("$python" -c "import sys; from bridge.models.presets import read_preset; print('\n'.join(read_preset(sys.argv[1])[1].get('requires', [])))" "$2")
      names+=("${more[@]}"); shift 2 ;;
    --from)
      [ $# -ge 2 ] || { echo "usage: $0 --from DIR NAME" >&2; exit 2; }
      from=(--from "$2"); shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) names+=("$1"); shift ;;
  esac
done
[ ${#names[@]} -gt 0 ] || { sed -n '2,7p' "$0" >&2; exit 2; }
for name in "${names[@]}"; do
  "$bridge" models pull "$name" "${from[@]}"
done
