#!/usr/bin/env bash
# Prove that the CPU image builds and answers a call, on a machine with podman/buildah
# but no registry access: a Debian bookworm base made with debootstrap, the project's
# Dockerfile built on it (podman build --isolation chroot), then the image run and
# called with `bridge call` from the host. Run as root from the repository root:
#   bash scripts/container_proof.sh [WORKDIR]       (WORKDIR default /tmp/bridge-container)
# Needs: debootstrap podman buildah (apt), and .venv (scripts/setup.sh) for `bridge call`.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/bridge-container}
mirror=${MIRROR:-http://deb.debian.org/debian}
port=${PORT:-25070}
mkdir -p "$work"
step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }

if ! podman image exists localhost/debian:bookworm; then
  step "debootstrap --variant=minbase bookworm"
  rm -rf "$work/rootfs"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" > "$work/debootstrap.log"
  tar -C "$work/rootfs" -c . | podman import - localhost/debian:bookworm
fi

step "podman build --isolation chroot (BASE=localhost/debian:bookworm)"
# This machine's HTTPS goes through a proxy with its own CA: pip in the build gets the bundle.
ca=()
[ -f /etc/ssl/certs/ca-certificates.crt ] && ca=(--volume /etc/ssl/certs/ca-certificates.crt:/run/site-ca.crt:ro --build-arg PIP_CERT=/run/site-ca.crt)
podman build --isolation chroot --format docker --network host "${ca[@]}" --build-arg BASE=localhost/debian:bookworm -t localhost/bridge:cpu -f Dockerfile . 2>&1 | tee "$work/build.log" | grep -E "^(STEP|COMMIT|Successfully)|setup|error" || true
podman image exists localhost/bridge:cpu || { echo "build failed: see $work/build.log"; exit 1; }
podman image inspect localhost/bridge:cpu --format 'image {{.Id}}: {{.Size}} bytes, user {{.Config.User}}, healthcheck {{.HealthCheck}}'

step "podman run"
if podman run --rm --network host localhost/bridge:cpu bridge --help > "$work/run.log" 2>&1; then
  runner=podman
else
  echo "podman run fails here:"; tail -3 "$work/run.log"
  runner=buildah
fi

step "serve with $runner, then bridge call from the host"
log="$work/serve.log"
if [ $runner = podman ]; then
  podman run --rm --network host --name bridge-proof localhost/bridge:cpu bridge serve --sip-listen "127.0.0.1:$port" --metrics-listen 127.0.0.1:0 > "$log" 2>&1 &
else
  ctr=$(buildah from localhost/bridge:cpu)
  trap 'buildah rm "$ctr" > /dev/null 2>&1 || true' EXIT
  buildah run --isolation chroot --network host "$ctr" -- /opt/bridge/scripts/entrypoint.sh bridge serve --sip-listen "127.0.0.1:$port" --metrics-listen 127.0.0.1:0 > "$log" 2>&1 &
fi
server=$!
for _ in $(seq 1 180); do grep -q "bridge: ready" "$log" && break; sleep 1; done
grep -q "bridge: ready" "$log" || { echo "the container did not become ready:"; tail -20 "$log"; kill $server; exit 1; }
grep -E "models loaded|listening" "$log" || true
[ $runner = buildah ] && buildah run --isolation chroot --network host "$ctr" -- id
.venv/bin/bridge health --sip "127.0.0.1:$port"
.venv/bin/bridge call "sip:agent@127.0.0.1:$port" --record "$work/greeting.wav" --duration 8 | tee "$work/call.log"
kill -TERM $server 2>/dev/null || true
wait $server 2>/dev/null || true
grep -q "answered: True" "$work/call.log" && awk '/recorded:/ { exit !($2 > 1.0) }' "$work/call.log" \
  && echo "PROOF: the image built from Dockerfile answered a call and played the greeting" \
  || { echo "no greeting"; exit 1; }
