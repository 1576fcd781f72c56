"""The voice-to-voice budget of each preset as a PNG (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

from .stages import STAGE_NAMES, STAGES

COLORS = {"endpoint": "#9e9e9e", "asr": "#1f77b4", "llm": "#ff7f0e", "tts": "#2ca02c"}


def budget_chart(results: list[dict], path: str | Path, title: str = "voice-to-voice budget per preset") -> Path:
    """Write a horizontal stacked bar per preset (``results`` from
    :func:`bridge.benchmarks.stages.bench_stages`; failed ones are left out), one segment
    per stage in seconds, the total written at the end of each bar. Returns ``path``.

    Raises:
        ValueError: no result has figures to draw.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    rows = [r for r in results if "budget" in r]
    if not rows:
        raise ValueError("no preset ran: nothing to chart")
    fig, ax = plt.subplots(figsize=(9, 1.0 + 0.6 * len(rows)))
    labels = [f"{r['label']} ({r['device']})" for r in rows]
    left = [0.0] * len(rows)
    for stage in STAGES:
        widths = [r["budget"][stage] for r in rows]
        ax.barh(labels, widths, left=left, color=COLORS[stage], label=STAGE_NAMES[stage])
        left = [a + b for a, b in zip(left, widths)]
    for y, total in enumerate(left):
        ax.text(total + 0.01, y, f"{total:.2f} s", va="center")
    ax.set_xlabel("seconds from the end of the caller's speech to the agent's first audio (serial upper bound)")
    ax.set_title(title, pad=26)
    ax.invert_yaxis()
    ax.set_xlim(0, max(left) * 1.2)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, frameon=False)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
