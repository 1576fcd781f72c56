"""Presets (``config/presets/NAME.yaml``): model sets laid over the defaults by
``bridge serve --preset NAME`` (and ``bridge models check``, ``bridge bench models``).

A preset file is a config file with one extra section::

    preset:
      description: "what it runs and on what"
      requires: [whisper-base.en, qwen2.5-1.5b-instruct]   # catalog names

A required model that the final configuration still uses (the operator's own config
may name another) must be here: an embedded one installed, a pulled one in its folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PRESETS_DIR = Path(__file__).resolve().parent.parent.parent / "config" / "presets"


def preset_names(folder: Path = PRESETS_DIR) -> list[str]:
    """The presets shipped in ``folder``, sorted."""
    return sorted(p.stem for p in folder.glob("*.yaml"))


def read_preset(name: str, folder: Path = PRESETS_DIR) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(settings, preset block)`` of preset ``name``.

    Raises:
        KeyError: no such preset (the message lists the known ones).
    """
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(f"no preset {name!r} (known: {', '.join(preset_names(folder))})")
    data = yaml.safe_load(path.read_text()) or {}
    block = data.pop("preset", {}) or {}
    return data, block


def missing_models(block: dict[str, Any], preset: dict[str, Any], data: dict[str, Any]) -> list[str]:
    """Catalog names in ``block["requires"]`` that are not here although the merged
    configuration ``data`` still uses them: its ``models.asr``/``llm``/``tts`` is still the
    preset's value (an operator's config or ``BRIDGE_MODELS__*`` may name another model).
    Here means: an embedded entry's package is installed; any other, its path exists."""
    from .catalog import entry, load_catalog

    catalog = load_catalog()
    models, ours = data.get("models", {}), preset.get("models", {})
    missing = []
    for name in block.get("requires", []):
        item = entry(name, catalog)
        value = models.get(item.kind)
        if value is None or value != ours.get(item.kind):
            continue  # the operator's configuration replaced this model
        here = item.embedded_installed() if item.embedded else Path(str(value)).exists()
        if not here:
            missing.append(name)
    return missing
