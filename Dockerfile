# bridge: SIP voice-agent endpoint with local models (CPU image).
# Build: docker build -t bridge .      Run: docker run --network host bridge
# The install is editable so that config/ stays beside the code (config/default.yaml).
# (host networking: SIP and a wide RTP port range. On its default 0.0.0.0 bind it gives
#  each peer the host's address on the route to that peer; behind NAT set
#  BRIDGE_SIP__PUBLIC_HOST to the public address).
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake espeak-ng \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/bridge
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY config ./config
COPY models/README.md ./models/README.md
# llama.cpp without Intel AMX (its AMX kernels crash with the embedded GGUF; see scripts/setup.sh).
ARG CMAKE_ARGS="-DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'"
RUN CMAKE_ARGS="$CMAKE_ARGS" pip install --no-cache-dir -e . \
 && python -c "from bridge.engines.llm import embedded_llm_path, smoke; smoke(embedded_llm_path('models'))"

# Call records (SQLite by default), the records spool and recordings: keep them on a volume.
VOLUME /opt/bridge/data
EXPOSE 5060/udp 5060/tcp 5061/tcp 9090/tcp 10000-20000/udp
ENV BRIDGE_OBSERVABILITY__METRICS_LISTEN=0.0.0.0:9090
CMD ["bridge", "serve"]
