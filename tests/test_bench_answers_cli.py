"""``bridge bench answers`` end to end through the command line (report, JSON, --preset), on a
two-turn evaluation file of the test's own (the real set is measured, not tested)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # real models in subprocesses

EVAL = """split: tune
conversations:
  - id: cli1
    turns:
      - {id: cli1-1, category: hours, say: "When do you close on Fridays?", must: [["5", "five"]]}
      - {id: cli1-2, category: goodbye, say: "Great, thank you, bye.", tool: end_call}
"""


def test_bench_answers_reports_and_writes_json(tmp_path):
    evalfile = tmp_path / "mini.yaml"
    evalfile.write_text(EVAL)
    out = tmp_path / "answers.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge",
            "bench",
            "answers",
            "--preset",
            "cpu-small",
            "--voices",
            "text",
            "--eval",
            str(evalfile),
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("answers: 2 turns (text)")
    report = json.loads(out.read_text())
    assert report["overall"]["turns"] == 2 and report["models"]["llm"] == "embedded"
    two = subprocess.run(
        [sys.executable, "-m", "bridge", "bench", "answers", "--preset", "cpu-small", "--preset", "gpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert two.returncode == 2 and "one --preset at a time" in two.stderr
