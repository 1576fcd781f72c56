"""``bridge models check``, presets, and the llama.cpp build the models run on."""

from __future__ import annotations

from bridge.engines.llm import amx_kernels_built


def test_llama_cpp_build_has_no_amx_kernels():
    """scripts/setup.sh rebuilds a llama-cpp-python that carries ggml's AMX kernels (they
    crash on the embedded GGUF on AMX CPUs); pip's wheel cache once slipped one through."""
    assert amx_kernels_built() is False
