"""Settings of outbound calls: the trunk's termination URI, answering-machine detection,
the voicemail message and campaigns (``outbound:`` in ``config/default.yaml``)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from .base import BaseModel


class AmdSettings(BaseModel):
    """Answering-machine detection on an answered outbound call (:mod:`bridge.outbound.amd`).

    Times are seconds of call audio after the answer. The speech/silence figures follow
    Asterisk's ``AMD()`` application (initial silence, greeting, after-greeting silence,
    total analysis time); the transcript's words and the voicemail beep decide before them.
    """

    #: Classify every ``bridge dial`` call (``bridge dial --amd`` asks for one call).
    enabled: bool = False
    #: No speech at all for this long: ``unknown`` (silence).
    initial_silence_s: float = Field(default=3.0, gt=0)
    #: Silence after speech that ends the callee's greeting, and the moment of the verdict.
    after_greeting_silence_s: float = Field(default=0.7, gt=0)
    #: The transcript of the greeting is taken after this much silence (so that it is
    #: ready when the greeting ends).
    transcribe_after_s: float = Field(default=0.2, ge=0)
    #: While the callee speaks without a pause, the words are read every this many seconds
    #: of speech (a voicemail greeting is recognized before it ends).
    interim_every_s: float = Field(default=1.5, gt=0)
    #: A greeting with no machine words, up to this much speech, is a person's.
    max_human_greeting_s: float = Field(default=2.5, gt=0)
    #: Speech without a pause this long is a machine's greeting.
    max_greeting_s: float = Field(default=8.0, gt=0)
    #: Seconds after the answer when the detector gives its best verdict regardless.
    total_analysis_s: float = Field(default=10.0, gt=0)
    #: A transcript whose average token log probability (Whisper's) is below this, and
    #: that holds no machine phrase, is noise heard as words (a hiss as "I'm going to get you.").
    min_logprob: float = -1.5
    #: A voiced frame must carry at least this RMS (PCM16) to count as speech.
    min_speech_rms: float = Field(default=150.0, ge=0)
    #: The voicemail beep: a single frequency in this band, this long (ms).
    beep_min_hz: float = 300.0
    beep_max_hz: float = 2500.0
    beep_min_ms: int = Field(default=100, ge=40)
    beep_max_ms: int = Field(default=1500, ge=60)
    #: Share of a frame's energy within +-40 Hz of its peak that makes it a tone (0..1).
    beep_purity: float = Field(default=0.7, gt=0, lt=1)
    #: Quiet after the beep's end before the message starts (a tone followed at once by
    #: more tones or speech is no voicemail beep).
    beep_quiet_s: float = Field(default=0.2, ge=0)
    #: After a ``machine`` verdict with no beep: silence after the greeting before the
    #: message is spoken anyway (``machine_no_beep``); 0 = never speak without a beep.
    no_beep_silence_s: float = Field(default=3.0, ge=0)
    #: After a ``machine`` verdict: give up waiting for the beep (hang up) after this long.
    beep_timeout_s: float = Field(default=30.0, gt=0)
    #: What the agent does on ``unknown``: greet as if a person answered, or hang up.
    on_unknown: str = "greet"
    #: Phrases of voicemail greetings, carrier messages and call screening (lower case,
    #: matched on word boundaries; empty = the built-in list of :mod:`bridge.outbound.amd`).
    machine_phrases: list[str] = Field(default_factory=list)

    @field_validator("on_unknown")
    @classmethod
    def _check_unknown(cls, value: str) -> str:
        if value not in ("greet", "hangup"):
            raise ValueError("must be greet or hangup")
        return value

    @model_validator(mode="after")
    def _check_beep(self) -> AmdSettings:
        if self.beep_min_hz >= self.beep_max_hz or self.beep_min_ms >= self.beep_max_ms:
            raise ValueError("beep_min_* must be below beep_max_*")
        return self


_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class CampaignSettings(BaseModel):
    """``bridge campaign run``: pacing, calling windows, retries, do-not-call
    (:mod:`bridge.outbound.campaign`)."""

    #: New calls per second on the trunk. Twilio's default is 1 CPS per trunk and region
    #: (up to 15 on request); beyond it Twilio answers ``503 Trunk CPS limit exceeded``.
    cps: float = Field(default=1.0, gt=0, le=100)
    #: Calls of the campaign in progress at once.
    max_concurrent: int = Field(default=4, ge=1)
    #: The calling window in the callee's local time (from the number's time zone), HH:MM.
    window_start: str = "10:00"
    window_end: str = "19:00"
    #: Days of the week calls may be placed (ISO: 1 = Monday ... 7 = Sunday).
    window_days: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6])
    #: Attempts per callee in all (the first included).
    max_attempts: int = Field(default=3, ge=1)
    #: Seconds before the first retry; each further retry waits ``retry_backoff`` times longer.
    retry_delay_s: float = Field(default=600.0, ge=0)
    retry_backoff: float = Field(default=2.0, ge=1.0)
    #: Detect answering machines on campaign calls.
    amd: bool = True
    #: A do-not-call file (one number a line, ``#`` comments); the ``dnc`` table of the
    #: records database is checked too.
    dnc_file: str = ""
    #: Seconds a dial may ring before it counts as ``no_answer`` (CANCEL).
    ring_timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("window_start", "window_end")
    @classmethod
    def _check_time(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError(f"{value!r} is not HH:MM")
        return value

    @field_validator("window_days")
    @classmethod
    def _check_days(cls, value: list[int]) -> list[int]:
        if not value or any(d < 1 or d > 7 for d in value):
            raise ValueError("days are 1 (Monday) to 7 (Sunday), at least one")
        return value


class OutboundSettings(BaseModel):
    """``bridge dial`` and campaigns: calls out through a SIP termination URI (e.g. Twilio's)."""

    #: ``sip:host[:port][;transport=udp|tcp|tls]``, e.g. ``sip:example.pstn.twilio.com``.
    termination_uri: str = ""
    username: str = ""
    password: str = ""
    #: Caller ID (E.164) for From.
    caller_id: str = "bridge"
    #: What the agent says first to a person on an outbound call; ``{name}``-style fields
    #: come from the callee's variables. Empty: ``agent.greeting``.
    greeting: str = ""
    #: The message left on a voicemail after its beep (same fields), then the agent hangs up.
    voicemail_message: str = (
        "Hello, this is a message from our office. Please call us back when it suits you. Thank you, goodbye."
    )
    amd: AmdSettings = Field(default_factory=AmdSettings)
    campaign: CampaignSettings = Field(default_factory=CampaignSettings)
