"""The habits the code keeps, checked with the tests: ruff's lint and format, the layer
rule (import-linter's layers contract, as docs/architecture.md draws it), the type
checker on the sans-IO cores, and rooms of one concern (no module over 450 lines)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .conftest import ROOT

BIN = Path(sys.executable).parent
#: The longest a module under bridge/ may grow, lines as formatted: a longer one holds
#: more than one concern and is split along its seams.
MAX_MODULE_LINES = 450


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_lint_passes():
    run = _run("ruff", "check", "--no-cache", "bridge", "tests", "scripts")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def test_ruff_format_leaves_every_file_as_it_is():
    run = _run("ruff", "format", "--check", "--no-cache", "bridge", "tests", "scripts")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def test_the_layer_rule_holds_without_exceptions():
    """Every package has its place in the contract, and no import is let off."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = config["contracts"]
    assert contract["type"] == "layers" and "ignore_imports" not in contract
    placed = {name.strip() for layer in contract["layers"] for name in layer.replace(":", "|").split("|")}
    packages = {
        p.stem if p.is_file() else p.name
        for p in (ROOT / "bridge").iterdir()
        if p.suffix == ".py" or (p / "__init__.py").exists()
    }
    unplaced = packages - placed - {"__init__", "__main__"}
    assert not unplaced, f"modules with no layer in the contract: {sorted(unplaced)}"
    run = _run("lint-imports", "--no-cache")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def test_type_checker_passes():
    run = _run("mypy")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def test_no_module_holds_more_than_one_room():
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "bridge").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"split these along their seams: {long}"


@pytest.mark.parametrize("tool", ["ruff", "lint-imports", "mypy"])
def test_the_tools_are_installed(tool):
    """The checks above run the project's own tools, installed by the test extra."""
    assert (BIN / tool).exists(), f"{tool} missing: bash scripts/setup.sh --test installs it"
