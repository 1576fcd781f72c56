"""Typed settings (pydantic), loaded from YAML under ``config/``.

Order of precedence: command-line options > environment (``BRIDGE_*``, nested
with ``__``, e.g. ``BRIDGE_SIP__PUBLIC_HOST``) > the YAML file > defaults.

The sections live in rooms of their own: :mod:`.base` (errors, parsers),
:mod:`.telephony` (SIP, media, Media Streams), :mod:`.agent` (models and the agent),
:mod:`.operations` (records, privacy, observability, routes). This module assembles
them into :class:`Settings` and loads them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .agent import AgentSettings, ModelSettings
from .base import BaseModel, ConfigError, parse_hostport, parse_port_range
from .operations import (
    ConsoleSettings,
    ObservabilitySettings,
    PrivacySettings,
    ProfileSettings,
    RecordingSettings,
    RecordsSettings,
    RoutesSettings,
    StorageSettings,
)
from .outbound import AmdSettings, CampaignSettings, OutboundSettings
from .telephony import (
    AccessSettings,
    DigestSettings,
    MediaSettings,
    MediaStreamsSettings,
    SipSettings,
    TransferSettings,
)

__all__ = [
    "DEFAULT_CONFIG",
    "AccessSettings",
    "AgentSettings",
    "BaseModel",
    "ConfigError",
    "ConsoleSettings",
    "DigestSettings",
    "AmdSettings",
    "CampaignSettings",
    "MediaSettings",
    "MediaStreamsSettings",
    "ModelSettings",
    "ObservabilitySettings",
    "OutboundSettings",
    "PrivacySettings",
    "ProfileSettings",
    "RecordingSettings",
    "RecordsSettings",
    "RoutesSettings",
    "Settings",
    "SipSettings",
    "StorageSettings",
    "TransferSettings",
    "load_settings",
    "parse_hostport",
    "parse_port_range",
    "profile_settings",
]

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent.parent / "config" / "default.yaml"


class Settings(BaseSettings):
    """All settings; see ``config/default.yaml`` for the documented defaults."""

    model_config = SettingsConfigDict(env_prefix="BRIDGE_", env_nested_delimiter="__", extra="forbid")

    sip: SipSettings = Field(default_factory=SipSettings)
    access: AccessSettings = Field(default_factory=AccessSettings)
    transfer: TransferSettings = Field(default_factory=TransferSettings)
    outbound: OutboundSettings = Field(default_factory=OutboundSettings)
    media: MediaSettings = Field(default_factory=MediaSettings)
    mediastreams: MediaStreamsSettings = Field(default_factory=MediaStreamsSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    records: RecordsSettings = Field(default_factory=RecordsSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    recording: RecordingSettings = Field(default_factory=RecordingSettings)
    routes: RoutesSettings = Field(default_factory=RoutesSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment above the YAML (passed as init values, merged in load_settings).
        return (env_settings, init_settings)


def profile_settings(settings: Settings, name: str) -> tuple[AgentSettings, TransferSettings, ModelSettings]:
    """The full agent, transfer and model settings of profile ``name`` (``default``:
    ``settings`` itself): the profile's keys laid over ``agent:``, ``transfer:``, ``models:``.

    Raises:
        ConfigError: an unknown profile, or a bad setting in it (named by its dotted path).
    """
    if name == "default":
        return settings.agent, settings.transfer, settings.models
    if name not in settings.routes.profiles:
        raise ConfigError(f"routes.profiles.{name}", "no such profile")
    profile = settings.routes.profiles[name]
    out = []
    for section, cls in (("agent", AgentSettings), ("transfer", TransferSettings), ("models", ModelSettings)):
        base = getattr(settings, section).model_dump()
        try:
            out.append(cls(**_merge(base, getattr(profile, section), f"routes.profiles.{name}.{section}")))
        except ValidationError as exc:
            raise _one_line(exc, f"routes.profiles.{name}.{section}") from None
    return out[0], out[1], out[2]


def _merge(base: dict[str, Any], over: dict[str, Any], path: str = "") -> dict[str, Any]:
    """``over`` merged into ``base`` (nested mappings merged key by key).

    Raises:
        ConfigError: a section that is a mapping in ``base`` is something else in ``over``
            (``agent: echo`` for ``agent: {kind: echo}``).
    """
    out = dict(base)
    for key, value in over.items():
        where = f"{path}.{key}" if path else str(key)
        if isinstance(out.get(key), dict) and not isinstance(value, dict):
            raise ConfigError(where, f"must be a mapping of settings, not {type(value).__name__} {str(value)[:40]!r}")
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, where)
        else:
            out[key] = value
    return out


def _one_line(exc: ValidationError, prefix: str = "") -> ConfigError:
    """A pydantic error as a :class:`ConfigError` naming the first bad setting (and how many more)."""
    errors = exc.errors()
    first = errors[0]
    loc = ".".join(str(part) for part in first["loc"])
    setting = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
    ctx_error = (first.get("ctx") or {}).get("error")
    if isinstance(ctx_error, ConfigError):
        return ctx_error
    if first["type"] == "extra_forbidden":
        problem = "unknown setting (see config/default.yaml)"
    else:
        problem = first["msg"].removeprefix("Value error, ")
        if first["type"] not in ("value_error", "assertion_error") and "input" in first:
            problem += f", got {str(first['input'])[:40]!r}"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return ConfigError(setting, problem + more)


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(file.read_text())
    except OSError as exc:
        raise ConfigError("", f"{file}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{file}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError("", f"{file}: must be a mapping of sections (sip:, agent:, ...), not {type(loaded).__name__}")
    return loaded


def _env_models() -> dict[str, Any]:
    """``BRIDGE_MODELS__*`` variables as a ``{"models": {...}}`` mapping (they win over files)."""
    prefix = "BRIDGE_MODELS__"
    found = {k[len(prefix) :].lower(): v for k, v in os.environ.items() if k.startswith(prefix)}
    return {"models": found} if found else {}


def load_settings(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None, preset: str | None = None
) -> Settings:
    """Load ``config/default.yaml``, then preset ``preset`` (``config/presets/``), then
    ``path`` over them, then the environment, then ``overrides``.

    Raises:
        ConfigError: the file is missing or not YAML, a key is unknown at any depth, a
            value has the wrong type or shape, or a value is invalid (a port range, an
            address, a missing TLS certificate or model file), an unknown preset, or a
            preset whose models are not here (the message says which ``bridge models
            pull`` to run). The message is one line naming the setting by its dotted path.
    """
    data: dict[str, Any] = _read_yaml(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else {}
    block: dict[str, Any] = {}
    preset_data: dict[str, Any] = {}
    if preset:
        from ..models.presets import read_preset

        try:
            preset_data, block = read_preset(preset)
        except KeyError as exc:
            raise ConfigError("--preset", exc.args[0]) from None
        data = _merge(data, preset_data)
    if path:
        data = _merge(data, _read_yaml(Path(path)))
    overrides = {k: v for k, v in (overrides or {}).items() if v != {}}
    if overrides:
        data = _merge(data, overrides)
    if block:
        from ..models.presets import missing_models

        missing = missing_models(block, preset_data, _merge(data, _env_models()))
        if missing:
            raise ConfigError(
                f"preset {preset}",
                "models not here: "
                + ", ".join(missing)
                + "; run "
                + " and ".join(f"`bridge models pull {name}`" for name in missing),
            )
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise _one_line(exc) from None
    except ConfigError:
        raise
    for name in settings.routes.profiles:
        profile_settings(settings, name)  # a bad profile is a bad setting: refuse at load
    ms = settings.mediastreams
    ms.auth_token = ms.auth_token or os.environ.get("TWILIO_AUTH_TOKEN", "")
    ms.account_sid = ms.account_sid or os.environ.get("TWILIO_ACCOUNT_SID", "")
    if overrides:
        # Command-line options win over the environment too: re-validate each
        # overridden section (plain models, so the environment is not read again).
        merged = _merge(settings.model_dump(), overrides)
        for section in overrides:
            model = type(getattr(settings, section))
            try:
                setattr(settings, section, model.model_validate(merged[section]))
            except ValidationError as exc:
                raise _one_line(exc, section) from None
    return settings
