"""Routing by called number: which agent profile answers a call (``routes:``).

A Twilio Elastic SIP Trunk (or several) can carry many numbers to one ``bridge
serve``; the called number is in the Request-URI user part (Twilio Elastic SIP Trunking, origination) and, on
Media Streams, in the ``To`` parameter our TwiML passes. Each profile is the
``agent:``, ``transfer:`` and ``models:`` settings with the profile's own keys laid
over them (:func:`bridge.config.profile_settings`). Models load once per file and
device and are shared by every profile that names them
(:func:`bridge.engines.load_engines` with a shared cache).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from .config import AgentSettings, ModelSettings, TransferSettings, profile_settings

log = logging.getLogger("bridge.routing")


def number_key(number: str | None) -> str:
    """A called number as compared: its digits (``+1 (415) 555-0100`` -> ``14155550100``);
    a SIP user part that is not a number is compared as it is, lowercased."""
    if not number:
        return ""
    digits = re.sub(r"\D", "", number)
    return digits if digits and re.fullmatch(r"[+\d\s().-]+", number) else number.strip().lower()


@dataclass
class Profile:
    """One agent profile: its name (``default`` for ``agent:``), full settings and engines."""

    name: str
    agent: AgentSettings
    transfer: TransferSettings
    models: ModelSettings
    engines: object = None


class Router:
    """Called number -> :class:`Profile` (or ``None``: reject).

    Args:
        settings: :class:`bridge.config.Settings`.
        engines: the engines already loaded for ``settings`` (the default profile's),
            or ``None`` (echo agent: no models).
    """

    def __init__(self, settings, engines) -> None:
        self.settings = settings
        routes = settings.routes
        self.default = Profile("default", settings.agent, settings.transfer, settings.models, engines)
        self.profiles = {"default": self.default}
        for name in routes.profiles:
            self.profiles[name] = Profile(name, *profile_settings(settings, name))
        self.numbers = {number_key(number): name for number, name in routes.numbers.items()}
        self.loaded = not routes.profiles or engines is None

    def load(self, shared: dict | None = None) -> None:
        """Load the other profiles' engines, sharing model files with the default's
        (blocking: call from a thread, at start)."""
        if self.loaded:
            return
        from .warmup import load_warm_engines

        shared = _seed({} if shared is None else shared, self.default.engines, self.default)
        for profile in self.profiles.values():
            if profile is not self.default:
                profile.engines = load_warm_engines(_View(profile), shared)
                log.info(
                    "routing: profile %s ready (%s)",
                    profile.name,
                    ", ".join(n for n, p in self.numbers.items() if p == profile.name) or "no numbers",
                )
        self.loaded = True

    def route(self, number: str | None) -> Profile | None:
        """The profile for ``number``; the default profile, or ``None`` when
        ``routes.unrouted`` is ``reject``, for a number with no route."""
        name = self.numbers.get(number_key(number))
        if name is not None:
            return self.profiles[name]
        return self.default if self.settings.routes.unrouted == "default" else None


class _View:
    """What :func:`bridge.engines.load_engines` reads: ``models`` and ``agent``."""

    def __init__(self, profile: Profile) -> None:
        self.models, self.agent = profile.models, profile.agent


def _seed(shared: dict, engines, profile: Profile) -> dict:
    """Put the already-loaded default engines into ``shared`` (:func:`bridge.engines.model_keys`),
    so that profiles naming the same files do not load them again."""
    from .engines import model_keys

    keys = model_keys(profile.models, engines.device)
    for part in ("asr", "llm", "tts", "phrases"):
        shared.setdefault(keys[part], getattr(engines, part))
    return shared
