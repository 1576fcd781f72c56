#!/usr/bin/env bash
# A bridge cluster on one machine, in the foreground: Debian's kamailio (dispatcher,
# deploy/kamailio/kamailio.cfg) on --sip-listen in front of N `bridge serve` nodes on
# loopback ports. SIGTERM drains the nodes, then stops Kamailio; Ctrl-C stops at once.
#   bash scripts/run_cluster.sh --nodes 2 --sip-listen 0.0.0.0:5060 [--agent echo|llm] [--llm-server URL]
# All options: bash scripts/run_cluster.sh --help (bridge/cluster/runner.py).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m bridge.cluster "$@"
