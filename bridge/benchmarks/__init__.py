"""Benchmarks that print figures: ``bridge bench models`` (:mod:`.stages`, :mod:`.chart`)
and ``bridge bench calls`` (:mod:`.calls`). They measure; they assert nothing (tests
never assert wall-clock times). ``bridge bench answers`` lives in :mod:`bridge.evaluation`."""

from __future__ import annotations

import json
from pathlib import Path


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, linearly interpolated; NaN when empty."""
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def write_json(path: str | None, result: dict | list) -> None:
    """Write ``result`` as indented JSON to ``path`` (nothing when ``path`` is empty)."""
    if path:
        Path(path).write_text(json.dumps(result, indent=2, default=float))
