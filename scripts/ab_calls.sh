#!/usr/bin/env bash
# `bridge bench calls` against an older commit and this checkout, alternating on this machine in one run.
#
#   bash scripts/ab_calls.sh OLD_REV [ROUNDS]
#
# Run from the project's root after `bash scripts/setup.sh --test`. OLD_REV is extracted to
# /tmp/ab-OLD_REV and run with a copy of .venv (the editable install removed, PYTHONPATH set),
# so both sides use the same packages and models, each with its own config/default.yaml. Each
# round starts a fresh server per side (its first call's first turn included) and runs, with
# this checkout's client, one call of 10 turns, then 4 concurrent calls of 5 turns. Prints
# p50/p95 per side and figure, over all rounds. Machines differ by up to 1.7x in speed:
# compare the two sides of one run, never figures from different days.
set -euo pipefail
OLD=${1:?usage: ab_calls.sh OLD_REV [ROUNDS]}; ROUNDS=${2:-2}
ROOT=$(pwd); [ -x .venv/bin/bridge ] || { echo "run bash scripts/setup.sh --test first" >&2; exit 1; }
BASE=/tmp/ab-$(git rev-parse --short "$OLD")
if [ ! -f $BASE/.ready ]; then
  rm -rf $BASE; mkdir -p $BASE; git archive "$OLD" | tar -x -C $BASE
  cp -a .venv $BASE/.venv; rm -rf $BASE/.venv/lib/python3*/site-packages/__editable__*bridge* $BASE/.venv/lib/python3*/site-packages/bridge-*.dist-info
  mkdir -p $BASE/models; cp -a models/. $BASE/models/ 2>/dev/null || true; touch $BASE/.ready
fi
W=$(mktemp -d /tmp/ab-calls.XXXXXX); SP=""
trap '[ -n "$SP" ] && kill $SP 2>/dev/null || true' EXIT
wait_up() { for _ in $(seq 1 300); do grep -q "bridge: ready" "$1" 2>/dev/null && return 0; sleep 1; done; return 1; }
for r in $(seq 1 "$ROUNDS"); do
  for side in old new; do
    if [ $side = old ]; then (cd $BASE && PYTHONPATH=$BASE exec .venv/bin/python -m bridge serve --sip-listen 127.0.0.1:5198 --rtp-ports 38000-38400 --metrics-listen 127.0.0.1:9598 > $W/$side-$r.log 2>&1) &
    else (cd $ROOT && exec .venv/bin/bridge serve --sip-listen 127.0.0.1:5198 --rtp-ports 38000-38400 --metrics-listen 127.0.0.1:9598 > $W/$side-$r.log 2>&1) & fi
    SP=$!; wait_up $W/$side-$r.log || { echo "$side server did not start" >&2; tail -20 $W/$side-$r.log >&2; exit 1; }
    .venv/bin/bridge bench calls --uri sip:agent@127.0.0.1:5198 --turns 10 --json $W/$side-$r-one.json > /dev/null
    .venv/bin/bridge bench calls --uri sip:agent@127.0.0.1:5198 --concurrency 4 --turns 5 --json $W/$side-$r-four.json > /dev/null
    kill -INT $SP; wait $SP 2>/dev/null || true; SP=""
  done
done
.venv/bin/python - "$W" <<'PY'
import glob, json, sys
import numpy as np
w = sys.argv[1]
for figure, label in (("one", "1 call x 10 turns"), ("four", "4 calls x 5 turns")):
    for side in ("old", "new"):
        lat, failed = [], 0
        for f in sorted(glob.glob(f"{w}/{side}-*-{figure}.json")):
            r = json.load(open(f)); lat += r["latencies"]; failed += r["calls_failed"]
        if lat:
            print(f"{label:18} {side}: n={len(lat)} p50={np.percentile(lat, 50):.3f} s p95={np.percentile(lat, 95):.3f} s failed calls={failed}")
        else:
            print(f"{label:18} {side}: no turns measured")
PY
