#!/usr/bin/env bash
# One OpenAI-compatible LLM server that several bridge nodes share (models.llm_backend:
# openai, models.openai_base_url: http://HOST:PORT/v1; run_cluster.sh --llm-server URL).
#   bash scripts/llm_server.sh [--model PATH] [--parallel N] [--listen HOST:PORT] [--config FILE] [--preset NAME]
# --model defaults to the GGUF the configuration names (models.llm; the embedded one by
# default), with its models.llm_context, llm_threads and llm_gpu_layers.
# With llama.cpp's own `llama-server` on PATH it runs that: --parallel N slots with
# continuous batching (the many-calls path; on GPU, vLLM is the other). Otherwise it runs
# llama-cpp-python's server (pip extra llm-server), which evaluates one request at a
# time, in arrival order; it is started with --interrupt_requests False, because its
# default cuts a streaming reply short whenever another request arrives: with several
# nodes, one call's turn would silence another's.
set -euo pipefail
cd "$(dirname "$0")/.."

model="" parallel=1 listen="127.0.0.1:8080" config="" preset=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=$2; shift 2 ;;
    --parallel) parallel=$2; shift 2 ;;
    --listen) listen=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --preset) preset=$2; shift 2 ;;
    -h|--help) sed -n 2,13p "$0"; exit 0 ;;
    *) echo "llm_server: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$parallel" in ''|*[!0-9]*|0) echo "llm_server: --parallel needs a positive integer" >&2; exit 2 ;; esac

# The configured model and its settings: PATH CTX THREADS GPU_LAYERS.
read -r cfg_model ctx threads gpu_layers < <(.venv/bin/python - "$config" "$preset" <<'PY'
import sys
from bridge.config import load_settings
from bridge.engines import resolve_device
from bridge.engines.llm import embedded_llm_path
config, preset = sys.argv[1] or None, sys.argv[2] or None
m = load_settings(config, preset=preset).models
path = embedded_llm_path(m.cache_dir) if m.llm == "embedded" else m.llm
gpu = m.llm_gpu_layers if resolve_device(m.device) == "cuda" else 0
print(path, m.llm_context, m.llm_threads, gpu)
PY
)
model=${model:-$cfg_model}
[ -f "$model" ] || { echo "llm_server: no GGUF at $model (bridge models pull NAME, or --model PATH)" >&2; exit 2; }
host=${listen%:*} port=${listen##*:}

if command -v llama-server >/dev/null 2>&1; then
  echo "llm_server: llama-server $model on http://$host:$port/v1, $parallel slot(s)"
  # The context is shared by the slots: each gets models.llm_context.
  exec llama-server --model "$model" --host "$host" --port "$port" --parallel "$parallel" --cont-batching \
    --ctx-size $((ctx * parallel)) --threads "$threads" --n-gpu-layers "$gpu_layers" --alias default
fi
if [ "$parallel" -gt 1 ]; then
  echo "llm_server: llama.cpp's llama-server is not installed: llama-cpp-python's server answers one request at a time (--parallel $parallel needs llama-server)" >&2
fi
echo "llm_server: llama-cpp-python server $model on http://$host:$port/v1 (one request at a time)"
exec .venv/bin/python -m llama_cpp.server --model "$model" --model_alias default --host "$host" --port "$port" \
  --n_ctx "$ctx" --n_threads "$threads" --n_gpu_layers "$gpu_layers" --interrupt_requests False
