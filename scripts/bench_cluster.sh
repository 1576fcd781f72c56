#!/usr/bin/env bash
# Voice-to-voice with 2 nodes behind Kamailio: one shared llama.cpp server
# (scripts/llm_server.sh) against a local model in each node. For each setup it starts
# scripts/run_cluster.sh, runs `bridge bench calls` through Kamailio (CONCURRENCY calls
# at once, TURNS caller turns each; call-load dispatch gives each node its share), prints
# the table and the calls each node took, and stops the cluster.
#   CONCURRENCY=2 TURNS=4 [SETUPS="shared local"] bash scripts/bench_cluster.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/bench-cluster}
mkdir -p "$out"
concurrency=${CONCURRENCY:-2} turns=${TURNS:-4}
sip=127.0.0.1:${SIP_PORT:-5960} llm_port=${LLM_PORT:-8311}
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

run_setup() {  # NAME [run_cluster options...]
  local name=$1; shift
  local dir="$out/$name"
  rm -rf "$dir"; mkdir -p "$dir"
  setsid bash scripts/run_cluster.sh --nodes 2 --sip-listen "$sip" --agent llm --allow 127.0.0.0/8 --workdir "$dir/cluster" "$@" > "$dir/cluster.out" 2>&1 &
  local cpid=$!
  for _ in $(seq 600); do grep -q "cluster: ready" "$dir/cluster.out" && break; sleep 0.5; done
  grep -q "cluster: ready" "$dir/cluster.out" || { cat "$dir/cluster.out"; exit 1; }
  .venv/bin/bridge bench calls --uri "sip:agent@$sip" --concurrency "$concurrency" --turns "$turns" --json "$dir/calls.json" | tee "$dir/calls.txt"
  for i in 1 2; do echo "node $i: $(grep -c 'confirmed (ACK)' "$dir/cluster/node-$i.log") call(s)"; done | tee -a "$dir/calls.txt"
  kill -TERM -- "-$cpid"; wait "$cpid" || true
}

setups=${SETUPS:-shared local}
if [[ " $setups " == *" shared "* ]]; then
echo "== 2 nodes, one shared llama.cpp server (scripts/llm_server.sh) =="
setsid bash scripts/llm_server.sh --listen "127.0.0.1:$llm_port" > "$out/llm_server.log" 2>&1 &
pids+=($!)
for _ in $(seq 240); do curl -sf "http://127.0.0.1:$llm_port/v1/models" >/dev/null && break; sleep 0.5; done
run_setup shared --llm-server "http://127.0.0.1:$llm_port/v1"
kill -TERM -- "-${pids[0]}" 2>/dev/null || true
pids=()
fi

if [[ " $setups " == *" local "* ]]; then
echo "== 2 nodes, a local llama.cpp model in each =="
run_setup local
fi
