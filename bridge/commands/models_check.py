"""``bridge models check``: load every configured model and say how it runs.

Each model is loaded alone, timed, measured by the growth of the process's resident
memory (``VmRSS`` in ``/proc/self/status``), and made to work once (ASR: one pass over
half a second of silence; LLM: one token; TTS: one short sentence), so a model that
loads but cannot run is caught here too.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from threading import Event

import numpy as np

from ..memory import rss_mb

#: llama.cpp's ``general.file_type`` (enum llama_ftype) -> the quantization's name.
GGUF_FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    32: "BF16",
}


@dataclass
class ModelReport:
    """One model's check.

    Attributes:
        role: ``asr``, ``llm`` or ``tts``.
        model: what the config names (``embedded``, a path, or a server URL).
        device: where it runs (``cpu``, ``cuda``, ``cuda (all layers)``, ``server``).
        precision: e.g. ``int8``, ``float16``, ``Q4_K_M``, ``fp32``.
        load_s: seconds to load, s.
        rss_mb: growth of the resident set while loading and running it once, MB.
        error: one line when it failed; empty when it works.
    """

    role: str
    model: str
    device: str = ""
    precision: str = ""
    load_s: float = 0.0
    rss_mb: float = 0.0
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def as_dict(self) -> dict:
        return asdict(self) | {"ok": self.ok}


def _asr(m, device: str) -> tuple[str, str]:
    from ..engines.asr import WhisperAsr, asr_model_path

    compute = m.asr_compute_type if device == "cpu" else "float16"
    asr = WhisperAsr(asr_model_path(m), device, compute)
    asr.transcribe(np.zeros(4000, dtype=np.int16))
    return device, compute


def _llm(m, device: str) -> tuple[str, str]:
    if m.llm_backend == "openai":
        from ..engines.openai_llm import OpenAiLlm

        llm = OpenAiLlm.from_settings(m, device)
        for _ in llm.stream("Hello", [], 1, 0.0, Event()):
            break
        return f"server {m.openai_base_url}", m.openai_model
    from ..engines.llm import LlamaCppLlm

    llm = LlamaCppLlm.from_settings(m, device)
    try:
        for _ in llm.stream("Hello", [], 1, 0.0, Event()):
            pass
        file_type = llm.metadata("general.file_type")
    finally:
        llm.close()
    precision = GGUF_FILE_TYPES.get(int(file_type), f"file type {file_type}") if file_type is not None else "?"
    layers = m.llm_gpu_layers if device == "cuda" else 0
    where = "cpu" if not layers else ("cuda (all layers)" if layers < 0 else f"cuda ({layers} layers)")
    return where, precision


def _tts(m, device: str) -> tuple[str, str]:
    from ..engines.tts import PiperTts

    tts = PiperTts.from_settings(m, device)
    for _ in tts.synthesize("Hello."):
        pass
    providers = tts.voice.session.get_providers()
    where = "cuda" if providers and providers[0].startswith("CUDA") else "cpu"
    # Piper voices are exported in fp32; an fp16 export shows in its float inputs (scales).
    floats = {i.type for i in tts.voice.session.get_inputs() if "float" in i.type}
    return where, "fp16" if "tensor(float16)" in floats else "fp32"


def check_models(settings) -> list[ModelReport]:
    """Load and run once each model ``settings.models`` names; never raises for a broken
    model (its report carries the error), so every model gets checked."""
    from ..engines import resolve_device
    from ..offline import lock_down

    lock_down()
    m = settings.models
    device = resolve_device(m.device)
    names = {"asr": m.asr, "llm": m.openai_base_url if m.llm_backend == "openai" else m.llm, "tts": m.tts}
    reports = []
    for role, load in (("asr", _asr), ("llm", _llm), ("tts", _tts)):
        report = ModelReport(role, names[role])
        before, started = rss_mb(), time.perf_counter()
        try:
            report.device, report.precision = load(m, device)
        except Exception as exc:  # noqa: BLE001 - a broken model is a line in the report
            lines = str(exc).strip().splitlines()
            report.error = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
        report.load_s = round(time.perf_counter() - started, 2)
        report.rss_mb = round(rss_mb() - before, 1)
        reports.append(report)
    return reports


def print_reports(reports: list[ModelReport]) -> None:
    """The reports as a table on stdout; a failed model is one line with its error."""
    print(f"{'role':5} {'model':44} {'device':18} {'precision':10} {'load s':>7} {'RSS MB':>7}")
    for r in reports:
        model = r.model if len(r.model) <= 44 else "..." + r.model[-41:]
        if r.ok:
            print(f"{r.role:5} {model:44} {r.device:18} {r.precision:10} {r.load_s:>7.2f} {r.rss_mb:>7.1f}")
        else:
            print(f"{r.role:5} {model:44} FAILED: {r.error}")
