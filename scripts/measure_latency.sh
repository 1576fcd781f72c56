#!/usr/bin/env bash
# Measure per-turn latency against a running `bridge serve`:
#   10 caller turns through `bridge call` (figures from the caller's side),
#   then the server's /metrics histograms (figures from the bridge's side).
# Usage: bash scripts/measure_latency.sh [SIP_URI] [METRICS_URL]
set -euo pipefail
cd "$(dirname "$0")/.."
uri=${1:-sip:agent@127.0.0.1:5060}
metrics=${2:-http://127.0.0.1:9090/metrics}
dir=$(mktemp -d)
questions=(
  "What time do you open on Saturday?"
  "How much does a cleaning cost?"
  "Where is the clinic?"
  "Can I book an appointment for Monday?"
  "Are you open on Sunday?"
  "Do you take new patients?"
  "What time do you close on Friday?"
  "Can I speak to a dentist?"
  "Is there parking near the clinic?"
  "Thank you very much."
)
args=()
for i in "${!questions[@]}"; do
  espeak-ng -s 150 -w "$dir/q$i.wav" "${questions[$i]}"
  args+=(--play "$dir/q$i.wav")
done
.venv/bin/bridge call "$uri" "${args[@]}" --record "$dir/agent.wav"
echo "agent audio: $dir/agent.wav"
echo
.venv/bin/python scripts/metrics_report.py "$metrics"
