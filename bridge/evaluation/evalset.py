"""The evaluation set: ``config/eval/*.yaml`` (format in ``config/eval/README.md``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

CATEGORIES = (
    "hours",
    "prices",
    "address",
    "booking",
    "insurance",
    "services",
    "smalltalk",
    "offtopic",
    "person",
    "goodbye",
    "digits",
)
TOOLS = ("end_call", "transfer", "collect_digits")


class EvalItem(BaseModel):
    """One caller turn and what its reply is scored against.

    ``must``: groups of alternatives, every group must match (a plain string is a
    group of one); ``must_not``: phrases that must not appear; ``tool``: the tool
    the turn must trigger, or ``none`` (then every tool is a misfire).
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    category: Literal[CATEGORIES]  # type: ignore[valid-type]
    say: str
    must: list[list[str]] = Field(default_factory=list)
    must_not: list[str] = Field(default_factory=list)
    tool: Literal["none", "end_call", "transfer", "collect_digits"] = "none"

    @field_validator("must", mode="before")
    @classmethod
    def _groups(cls, value):
        return [[g] if isinstance(g, str) else g for g in value or []]


class EvalConversation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    turns: list[EvalItem]

    @field_validator("turns")
    @classmethod
    def _ending_tools_last(cls, turns: list[EvalItem]) -> list[EvalItem]:
        for item in turns[:-1]:
            if item.tool != "none":
                raise ValueError(f"{item.id}: a turn that expects {item.tool} must be the conversation's last")
        return turns


class EvalSet(BaseModel):
    """One file: ``split`` (``tune`` or ``heldout``) and its conversations."""

    model_config = ConfigDict(extra="forbid")

    split: Literal["tune", "heldout"]
    conversations: list[EvalConversation]
    path: str = ""

    @property
    def items(self) -> list[EvalItem]:
        return [t for c in self.conversations for t in c.turns]


def default_paths() -> list[Path]:
    """``config/eval/*.yaml`` next to the package's checkout, sorted."""
    folder = Path(__file__).resolve().parents[2] / "config" / "eval"
    return sorted(folder.glob("*.yaml"))


def load_sets(paths: list[str | Path] | None = None) -> list[EvalSet]:
    """Load and validate evaluation files (default: :func:`default_paths`).

    Raises:
        ValueError: a file is malformed (pydantic's message names the field), or
            an item id repeats.
    """
    return load_yaml_sets(paths or default_paths(), EvalSet, with_path=True)


def load_yaml_sets(paths, model, with_path: bool = False, check=None) -> list:
    """Each YAML file of ``paths`` validated as ``model`` (a pydantic model with ``items``,
    each with an ``id``); ``with_path`` adds the file's path as the ``path`` field;
    ``check(item)`` returns a problem with an item, or ``None``. The evaluation sets of
    ``bench answers``, ``bench turns`` and ``bench amd`` are all read this way.

    Raises:
        ValueError: a file is malformed (pydantic's message names the field), an item id
            repeats across the files, or ``check`` found a problem.
    """
    sets, seen = [], set()
    for path in paths:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        s = model.model_validate({**data, "path": str(path)} if with_path else data)
        for item in s.items:
            if item.id in seen:
                raise ValueError(f"{path}: item id {item.id} repeats")
            problem = check(item) if check is not None else None
            if problem:
                raise ValueError(f"{path}: {item.id}: {problem}")
            seen.add(item.id)
        sets.append(s)
    return sets
