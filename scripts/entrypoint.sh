#!/bin/sh
# Container entry point: pull the models named in BRIDGE_PULL that are not here yet
# (catalog names, `bridge models list`), then run the command (default: bridge serve).
# With no BRIDGE_PULL nothing is fetched: the container reaches no model hub on its own.
set -e
if [ -n "${BRIDGE_PULL:-}" ]; then
  for name in $BRIDGE_PULL; do
    bridge models pull "$name"
  done
fi
exec "$@"
