"""Print per-stage turn latency from a bridge /metrics endpoint.

p50/p95 are estimated from the histogram buckets the way Prometheus'
histogram_quantile() does (linear interpolation inside a bucket).

Usage: python scripts/metrics_report.py [http://127.0.0.1:9090/metrics]
"""

from __future__ import annotations

import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    total = buckets[-1][1]
    if total == 0:
        return float("nan")
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / max(count - prev_count, 1e-9)
        prev_bound, prev_count = bound, count
    return prev_bound


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:9090/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    series: dict[str, dict] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in ("bridge_turn_stage_seconds", "bridge_voice_to_voice_seconds"):
            continue
        for s in family.samples:
            key = s.labels.get("stage", "voice_to_voice")
            entry = series.setdefault(key, {"buckets": [], "sum": 0.0, "count": 0.0})
            if s.name.endswith("_bucket"):
                entry["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_sum"):
                entry["sum"] = s.value
            elif s.name.endswith("_count"):
                entry["count"] = s.value
    print(f"{'stage (from end of caller speech)':36} {'turns':>5} {'mean ms':>8} {'p50 ms':>7} {'p95 ms':>7}")
    for key in (
        "endpoint",
        "asr_final",
        "llm_first_token",
        "first_sentence",
        "tts_first_audio",
        "first_packet",
        "voice_to_voice",
    ):
        e = series.get(key)
        if not e or not e["count"]:
            continue
        b = sorted(e["buckets"])
        print(
            f"{key:36} {int(e['count']):>5} {1000 * e['sum'] / e['count']:>8.0f} {1000 * quantile(0.5, b):>7.0f} {1000 * quantile(0.95, b):>7.0f}"
        )


if __name__ == "__main__":
    main()
