"""Settings of operations: call records, recordings, the console, privacy, logging and
metrics, and routing called numbers to agent profiles (``storage:``, ``records:``,
``recording:``, ``console:``, ``privacy:``, ``observability:``, ``routes:``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import BaseModel, _listen


class StorageSettings(BaseModel):
    """Where call records go (``bridge.records``): an SQLAlchemy URL, ``""`` for none."""

    url: str = "sqlite:///data/bridge.db"
    #: Events wait here (JSON lines) while the database is unreachable.
    spool_dir: str = "data/spool"
    #: This process in ``calls.node``; "" = ``hostname:sip-port``.
    node: str = ""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value:
            return value
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError(
                f"not a database URL (sqlite:///data/bridge.db, postgresql://user@host/db): {value[:60]!r}"
            ) from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError(f"database {url.get_backend_name()!r} is not supported: use sqlite or postgresql")
        return value


class RecordsSettings(BaseModel):
    """Call-record retention."""

    #: Call records (and their turns) older than this many days are deleted; 0 = keep.
    retention_days: float = Field(default=0, ge=0)
    #: How often ``serve`` applies records and recording retention, seconds.
    purge_interval_s: float = Field(default=3600, ge=1)


class RecordingSettings(BaseModel):
    """Call recordings (:mod:`bridge.records.recording`): stereo, caller left, agent right, 8 kHz."""

    enabled: bool = False
    #: Files go to DIR/YYYY/MM/DD/<call id>.<format> (relative to the working directory).
    dir: str = "data/recordings"
    format: Literal["wav", "flac"] = "wav"
    #: Recordings of calls older than this many days are deleted; 0 = keep.
    retention_days: float = Field(default=0, ge=0)


class ConsoleSettings(BaseModel):
    """The read-only operator console at ``/calls`` on the HTTP listener (:mod:`bridge.console`).
    Off unless a token or a basic-auth user and password are set."""

    token: str = ""
    username: str = ""
    password: str = ""
    #: "Talk to this agent" (browser calls over WebRTC): STUN/TURN URLs for ICE
    #: (``stun:host:3478``, ``turn:host:3478?transport=udp``). Empty: host candidates
    #: only, and no server anywhere is contacted.
    ice_servers: list[str] = Field(default_factory=list)
    ice_username: str = ""
    ice_credential: str = ""


class PrivacySettings(BaseModel):
    """Personal data masked in transcripts before they are stored, and in log lines (:mod:`bridge.privacy`)."""

    redact: list[Literal["card", "ssn", "email", "phone"]] = Field(default_factory=list)


class ObservabilitySettings(BaseModel):
    metrics_listen: str = "127.0.0.1:9090"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value):
        return value.upper() if isinstance(value, str) else value

    @field_validator("metrics_listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        return _listen(value, 9090)


class ProfileSettings(BaseModel):
    """An agent profile for routed numbers: settings laid over ``agent:``, ``transfer:``
    and ``models:`` (the persona, greeting, examples, tools, transfer target, voice and
    LLM); everything not given is inherited."""

    agent: dict[str, Any] = Field(default_factory=dict)
    transfer: dict[str, Any] = Field(default_factory=dict)
    models: dict[str, Any] = Field(default_factory=dict)


class RoutesSettings(BaseModel):
    """Which agent profile answers which called number (Twilio trunk routing).

    The number is the Request-URI user part (else ``To``) on SIP and the ``To``
    custom parameter on Media Streams, compared by its digits (``+14155550100`` and
    ``14155550100`` are one number).
    """

    #: called number -> profile name (a key of ``profiles``, or ``default`` for ``agent:``).
    numbers: dict[str, str] = Field(default_factory=dict)
    profiles: dict[str, ProfileSettings] = Field(default_factory=dict)
    #: A number with no route: ``default`` (the ``agent:`` profile) or ``reject``.
    unrouted: Literal["default", "reject"] = "default"
    #: SIP status for a rejected number: 404 (Not Found) or 603 (Decline).
    reject_status: Literal[404, 603] = 404

    @model_validator(mode="after")
    def _known_profiles(self) -> RoutesSettings:
        for number, name in self.numbers.items():
            if name != "default" and name not in self.profiles:
                raise ValueError(f"number {number} routes to profile {name!r}, which is not in routes.profiles")
        return self
