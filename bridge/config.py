"""Typed settings (pydantic), loaded from YAML under ``config/``.

Order of precedence: command-line options > environment (``BRIDGE_*``, nested
with ``__``, e.g. ``BRIDGE_SIP__PUBLIC_HOST``) > the YAML file > defaults.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel as _PydanticModel
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "default.yaml"


class ConfigError(ValueError):
    """A setting is wrong: ``setting`` is its dotted path (``agent.greeting``),
    ``str(error)`` one line that names it and says what is wrong."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}" if setting else problem)
        self.setting = setting


class BaseModel(_PydanticModel):
    """Every settings section refuses keys it does not know (``agent.greting``)."""

    model_config = ConfigDict(extra="forbid")


def _listen(value: str, default_port: int, *, empty_ok: bool = True) -> str:
    """Validate a ``HOST:PORT`` listen address (host an IP literal; port 0..65535)."""
    if not value and empty_ok:
        return value
    try:
        host, _ = parse_hostport(value, default_port)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not HOST:PORT ({exc})") from None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r}: the host must be an IP address (0.0.0.0 for all), not {host!r}") from None
    return value


def parse_port_range(value: str) -> tuple[int, int]:
    """``"LOW-HIGH"`` -> ``(low, high)``: 1024 <= low <= high <= 65535, holding at least
    one even port (RTP uses even ports, RFC 3550 section 11).

    Raises:
        ValueError: any other shape.
    """
    low_s, sep, high_s = value.partition("-")
    if not sep or not low_s.strip().isdigit() or not high_s.strip().isdigit():
        raise ValueError(f"{value!r} is not LOW-HIGH (e.g. 10000-20000)")
    low, high = int(low_s), int(high_s)
    if not 1024 <= low <= high <= 65535:
        raise ValueError(f"{value!r}: need 1024 <= LOW <= HIGH <= 65535")
    if low % 2 and low == high:
        raise ValueError(f"{value!r} holds no even port (RTP ports are even)")
    return low, high


def parse_hostport(value: str, default_port: int) -> tuple[str, int]:
    """``"host:port"``, ``"host"`` or ``"[v6]:port"`` -> ``(host, port)``.

    Raises:
        ValueError: the port is not an integer 1..65535.
    """
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default_port
    elif value.count(":") == 1:
        host, port_s = value.split(":")
        port = int(port_s)
    else:
        host, port = value, default_port
    if not 0 <= port < 65536:  # 0: let the OS pick
        raise ValueError(f"port out of range in {value!r}")
    return host, port


class SipSettings(BaseModel):
    """SIP signalling (RFC 3261)."""

    listen: str = "0.0.0.0:5060"
    #: Address written in Via, Contact and SDP ``c=`` (the public IP behind NAT).
    #: Empty: the listen address, or 127.0.0.1 when listening on 0.0.0.0.
    public_host: str = ""
    user_agent: str = "bridge/0.1"
    #: RFC 3261 T1 in seconds (Timers A, E, G, H... derive from it).
    t1: float = 0.5
    max_message_size: int = 16384
    #: Send 180 Ringing before answering.
    send_ringing: bool = True
    #: Seconds to ring before answering (0 = answer at once).
    answer_delay: float = 0.0
    #: SIP over TCP (RFC 3261 section 18); empty = off.
    tcp_listen: str = ""
    #: SIP over TLS; empty = off. Twilio's default TLS port is 5061.
    tls_listen: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    #: CA bundle to verify TLS peers we connect to (empty: system CAs).
    tls_ca: str = ""
    #: Session-Expires we ask for when the peer supports RFC 4028 timers, seconds.
    session_expires: int = 1800
    #: Smallest Session-Expires we accept (RFC 4028 Min-SE), seconds.
    min_se: int = 90
    #: On SIGTERM: seconds calls in progress may continue before they get BYE.
    drain_timeout: float = 30.0

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        return _listen(value, 5060, empty_ok=False)

    @field_validator("tcp_listen", "tls_listen")
    @classmethod
    def _check_stream_listen(cls, value: str) -> str:
        return _listen(value, 5060)

    @field_validator("public_host")
    @classmethod
    def _check_public_host(cls, value: str) -> str:
        if value:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"{value!r} must be an IP address (it goes into SDP c=)") from None
        return value

    @model_validator(mode="after")
    def _check_tls(self) -> "SipSettings":
        if self.tls_listen:
            for name in ("tls_cert", "tls_key"):
                path = getattr(self, name)
                if not path:
                    raise ConfigError(f"sip.{name}", "required when sip.tls_listen is set")
                if not Path(path).is_file():
                    raise ConfigError(f"sip.{name}", f"no such file: {path}")
        return self


class DigestSettings(BaseModel):
    """Digest authentication of INVITEs (RFC 3261 section 22.4, RFC 8760)."""

    #: ``user: password``; empty = no digest authentication.
    users: dict[str, str] = Field(default_factory=dict)
    realm: str = "bridge"
    #: Sources that need no digest (e.g. Twilio's signaling ranges); CIDRs or ``@file.yaml``.
    exempt: list[str] = Field(default_factory=list)
    #: Challenge algorithms, preferred first (RFC 8760 section 2.4).
    algorithms: list[str] = Field(default_factory=lambda: ["SHA-256", "MD5"])


class AccessSettings(BaseModel):
    """Who may place calls to the bridge, and how many."""

    #: Source CIDRs allowed to send INVITEs, or ``@path.yaml`` files of CIDRs
    #: (``@config/twilio-signaling.yaml`` is the Twilio preset). Empty = anyone.
    allowlist: list[str] = Field(default_factory=list)
    #: Accepted ``X-Twilio-AccountSid`` values; empty = not checked.
    twilio_accounts: list[str] = Field(default_factory=list)
    digest: DigestSettings = Field(default_factory=DigestSettings)
    #: New INVITEs per second from one source address (token bucket), and burst.
    invite_rate: float = 10.0
    invite_burst: int = 20
    #: Concurrent calls in all, and from one caller (From/P-Asserted-Identity user).
    max_calls: int = 100
    max_calls_per_caller: int = 5
    #: Retry-After seconds sent with 503.
    retry_after: int = 10


class TransferSettings(BaseModel):
    """Blind transfer with SIP REFER (RFC 3515)."""

    #: ``sip:`` or ``tel:`` URI for Refer-To; empty = transfer disabled.
    target: str = ""
    #: DTMF digit that asks for the transfer (IVR "press 0 for an operator"); empty = none.
    dtmf: str = "0"
    #: What the agent says before transferring, and when the transfer fails.
    announce: str = "Please hold while I transfer your call."
    failed: str = "Sorry, I could not transfer your call. How else can I help?"


class OutboundSettings(BaseModel):
    """``bridge dial``: calls out through a SIP termination URI (e.g. Twilio's)."""

    #: ``sip:host[:port][;transport=udp|tcp|tls]``, e.g. ``sip:example.pstn.twilio.com``.
    termination_uri: str = ""
    username: str = ""
    password: str = ""
    #: Caller ID (E.164) for From.
    caller_id: str = "bridge"


class MediaStreamsSettings(BaseModel):
    """Twilio Media Streams mode (``<Connect><Stream>``): the webhook and the WebSocket."""

    #: ``HOST:PORT`` for HTTP (``POST /twiml``, ``WS /media-stream``); empty = off.
    http_listen: str = ""
    #: The base URL Twilio is configured with (``https://bridge.example.com``), used for the
    #: Stream URL and signature checks; empty = rebuilt from X-Forwarded-Proto/Host.
    public_url: str = ""
    #: Twilio auth token (or ``TWILIO_AUTH_TOKEN``) for X-Twilio-Signature and the REST API.
    auth_token: str = ""
    #: Twilio account SID (or ``TWILIO_ACCOUNT_SID``) for the REST API (transfer, hang-up, calls).
    account_sid: str = ""
    #: Refuse requests when no auth token is configured (cannot check signatures).
    require_signature: bool = True
    #: Replace https://api.twilio.com (a local stand-in for tests).
    api_base_url: str = ""
    #: Caller ID for ``bridge twilio call``.
    from_number: str = ""
    max_message_bytes: int = 65536

    @field_validator("http_listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        return _listen(value, 8080)

    #: Close a WebSocket that sends no ``start`` message within this many seconds.
    start_timeout: float = 5.0


class MediaSettings(BaseModel):
    """RTP media (RFC 3550)."""

    rtp_ports: str = "10000-20000"
    #: Seconds without inbound RTP before the bridge hangs up with BYE.
    rtp_timeout: float = 30.0
    #: Send to where the peer's RTP comes from (NAT), once it arrives.
    latch: bool = True
    #: Send silence packets when the agent is quiet (continuous stream).
    send_silence: bool = True
    #: SRTP (RFC 4568 SDES): ``off`` (plain RTP only), ``optional`` (answer
    #: RTP/SAVP with SRTP, RTP/AVP with RTP), ``required`` (plain offers get 488).
    srtp: Literal["off", "optional", "required"] = "optional"

    @field_validator("rtp_ports")
    @classmethod
    def _check_ports(cls, value: str) -> str:
        parse_port_range(value)
        return value


class ModelSettings(BaseModel):
    """Which models to load; ``embedded`` means the PyPI model packages."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    asr: str = "embedded-base"
    asr_compute_type: str = "int8"
    asr_beam_size: int = 1
    #: Whisper's initial prompt: ``auto`` builds it from the agent's vocabulary (the
    #: names and terms in its persona and facts, bridge/engines/asr_hints.py), ``""``
    #: is none, anything else is used as it is.
    asr_prompt: str = "auto"
    #: Batch the ASR passes of calls whose turns end together (one model, no lock
    #: between calls): ``auto`` = batches of up to 8 on CUDA, 4 on the CPU; 0 = never;
    #: N = batches of up to N (bridge/engines/asr_batch.py).
    asr_batch: Literal["auto"] | int = "auto"
    #: Encoder windows a pass is padded to, seconds (the smallest that holds the audio
    #: ``asr_window_headroom`` times over; bridge/engines/asr_batch.py). [30] is
    #: faster-whisper's fixed window.
    asr_windows: list[int] = Field(default_factory=lambda: [10, 20, 30])
    asr_window_headroom: float = Field(default=2.0, ge=1.0)
    llm: str = "embedded"
    #: ``llama_cpp`` (in process, ``llm`` names the GGUF) or ``openai`` (an
    #: OpenAI-compatible server: llama.cpp's server, vLLM, ...).
    llm_backend: Literal["llama_cpp", "openai"] = "llama_cpp"
    openai_base_url: str = "http://127.0.0.1:8080/v1"
    openai_model: str = "default"
    openai_api_key: str = ""
    #: Seconds to wait for the server's connection and between streamed chunks.
    openai_timeout: float = 10.0
    llm_threads: int = 2
    #: Context length in tokens, per sequence (a call's prompt and reply).
    llm_context: int = 2048
    #: In-process llama.cpp: calls' turns decoded together as sequences of one batch
    #: (bridge/engines/llm.py): ``auto`` = 8 on CUDA, 4 on the CPU; 1 = one at a time.
    llm_parallel: Literal["auto"] | int = "auto"
    llm_gpu_layers: int = -1
    tts: str = "embedded"
    #: Where the embedded GGUF is assembled (from its 4 chunk packages).
    cache_dir: str = "models"

    @field_validator("asr_windows")
    @classmethod
    def _check_windows(cls, value: list[int]) -> list[int]:
        if not value or any(not 1 <= w <= 30 for w in value) or 30 not in value:
            raise ValueError(f"{value}: windows are 1..30 seconds and must include 30 (Whisper's full window)")
        return sorted(set(value))

    @model_validator(mode="after")
    def _check_paths(self) -> "ModelSettings":
        for name in ("asr", "tts") + (("llm",) if self.llm_backend == "llama_cpp" else ()):
            value = getattr(self, name)
            if value not in ("embedded", "embedded-base") and not Path(value).exists():
                raise ConfigError(f"models.{name}", f"no such file or directory: {value} (or 'embedded')")
            if value == "embedded-base" and name != "asr":
                raise ConfigError(f"models.{name}", "'embedded-base' is an ASR model (faster-whisper base)")
        return self


class AgentSettings(BaseModel):
    """The agent: persona, prompt, turn-taking."""

    #: ``llm``: the conversation on the models; ``echo``: play the caller's audio
    #: back (a PBX-style echo test, to measure signalling and media without models).
    kind: Literal["llm", "echo"] = "llm"
    name: str = "Sam"
    llm_mode: Literal["completion", "chat"] = "completion"
    persona: str = ""
    #: Facts the agent answers from, one or two sentences each, written into the
    #: prompt as a block (bridge/conversation/prompt.py). Keep them short: a 270M
    #: model copies what it reads. A list, so a config file replaces it whole.
    facts: list[str] = Field(default_factory=list)
    examples: list[tuple[str, str]] = Field(default_factory=list)
    #: Completion mode: write the fact most relevant to each caller line right
    #: above it (bridge/conversation/facts.py), for the examples and the live turn.
    fact_lookup: bool = True
    #: History entries (caller and agent lines) kept in the prompt: a bounded
    #: window, so one bad turn does not poison the rest of the call.
    history_turns: int = Field(default=4, ge=0, le=40)
    #: Sentences per reply; generation stops after them (bridge/conversation/guards.py).
    max_sentences: int = Field(default=2, ge=1, le=10)
    #: Said instead of a reply the guards rejected entirely (a loop, a leaked line, nothing).
    fallback: str = "Sorry, could you say that again?"
    #: llama.cpp sampling penalties against loops (1.0 / 0.0 = off).
    repeat_penalty: float = Field(default=1.1, ge=1.0, le=2.0)
    presence_penalty: float = Field(default=0.0, ge=0.0, le=2.0)
    greeting: str = "Hello, thanks for calling. How can I help you?"
    goodbye: str = "Thanks for calling. Goodbye!"
    max_tokens: int = 48
    temperature: float = 0.3
    #: ``webrtc`` (webrtcvad) or ``silero`` (Silero VAD v6 ONNX from faster-whisper).
    vad: Literal["webrtc", "silero"] = "webrtc"
    #: webrtcvad aggressiveness 0..3.
    vad_aggressiveness: int = 2
    #: Silero speech probability threshold.
    silero_threshold: float = 0.5
    #: End of turn (bridge/conversation/turntaking.py). Silence that ends a turn while
    #: the end-of-turn signals are not in yet, milliseconds.
    endpoint_silence_ms: int = 700
    #: ... when every signal says the turn is finished.
    endpoint_fast_ms: int = 200
    #: ... when one says it is not (words such as "and", "for", "um"; the language model;
    #: the end-of-turn model): the longest pause the caller gets to go on.
    endpoint_slow_ms: int = 1800
    #: Silence after which the speculative pass starts: the transcript, the end-of-turn
    #: scores, and a reply prepared unheard (released at the end of the turn).
    speculate_after_ms: int = 100
    #: Below this probability that the caller's line ends where the transcript stops
    #: (the language model's next token, bridge/engines/llm.py), the turn is unfinished;
    #: 0 = not asked. Completion mode on in-process llama.cpp only.
    turn_text_threshold: float = Field(default=0.03, ge=0.0, le=1.0)
    #: At or above this end-of-line probability the language model is sure the line is
    #: over (``endpoint_fast_ms``); between the two, the silence needed shrinks log-linearly.
    turn_text_sure: float = Field(default=0.3, gt=0.0, le=1.0)
    #: Below this end-of-turn probability from the audio (Smart Turn v3,
    #: bridge/engines/turn.py; pip extra ``turn``), the turn is unfinished; 0 = the model
    #: is not loaded (the default: on the evaluation set's synthetic voices it read 101
    #: of 176 moments right, against 155 for the language model; docs/turn-taking.md).
    turn_audio_threshold: float = Field(default=0.0, ge=0.0, le=1.0)
    #: Speak a reply's first clause (up to a ",", ";" or ":") once it has this many
    #: words, before its sentence is complete; 0 = whole sentences only.
    first_clause_words: int = Field(default=4, ge=0)
    #: Interim transcripts while the caller speaks over the agent (their words confirm
    #: a barge-in): one pass per this much new speech (at most one in flight), over at
    #: most ``interim_window_s``; 0 = off.
    interim_interval_ms: int = 1000
    interim_window_s: float = 10.0
    #: Interim passes also while the caller speaks to a quiet agent (logs, inspection):
    #: off by default, since a pass in flight when the caller stops holds the
    #: speculative pass back.
    interim_always: bool = False
    #: Speech shorter than this is ignored (clicks, coughs), milliseconds.
    min_utterance_ms: int = 200
    #: Caller speech during agent speech that pauses it (playout stops at the next
    #: packet), milliseconds (bridge/conversation/backchannel.py).
    barge_in_min_speech_ms: int = 200
    #: A paused agent is interrupted for good (queue dropped, LLM/TTS cancelled,
    #: history cut) once the caller has spoken this long, or said words that are not
    #: a backchannel; after a backchannel ("mm-hmm", "okay") or no words (a cough) it
    #: resumes where it stopped. Milliseconds; 0 = every barge-in is final at once.
    barge_in_confirm_ms: int = Field(default=700, ge=0)
    #: Words heard over the agent that Whisper was this unsure of (average token log
    #: probability below it) do not interrupt it: a hum or a cough it guessed words for
    #: (config/bargein tuning part: interruptions -0.54 at worst, hums and coughs -0.70
    #: and below). -10 = trust every transcript.
    barge_in_min_logprob: float = -0.65
    #: ...but only when they are this few words: a hum or a cough comes out as a word or
    #: two ("Amanda.", "Pup."), while a sentence heard through echo or line noise can be
    #: just as unsure ("I'll see you open on Saturday.") and is still a caller speaking.
    barge_in_unsure_max_words: int = Field(default=3, ge=0)
    #: Words a backchannel is made of (lowercase); empty: the built-in list
    #: (bridge.conversation.backchannel.BACKCHANNEL_WORDS).
    backchannel_words: list[str] = Field(default_factory=list)
    #: Do not count the agent's own voice coming back (echo) as caller speech.
    echo_guard: bool = True
    #: Normalized correlation with recently sent audio above which a frame is echo.
    echo_threshold: float = 0.55
    #: The longest echo path considered, milliseconds.
    echo_max_delay_ms: int = 600
    #: Audio kept before the first voiced frame, milliseconds.
    preroll_ms: int = 300
    #: Hang up (after saying ``goodbye``) once the call is this long, seconds; 0 = never.
    max_call_seconds: float = 0
    #: Regex: when the agent's reply matches it, the agent hangs up after saying it.
    end_call_pattern: str = r"\b(goodbye|good bye|bye now)\b"
    #: Tools the model may use: end_call, transfer, collect_digits (see bridge/engines/tools.py).
    tools: list[str] = Field(default_factory=lambda: ["end_call", "transfer", "collect_digits"])
    #: Completion-mode examples that teach the tool convention (caller line, agent line with [command]).
    tool_examples: list[tuple[str, str]] = Field(default_factory=list)
    #: Seconds of silence on both sides before the agent asks if the caller is there; 0 = never.
    reprompt_after_s: float = 8.0
    reprompt: str = "Are you still there?"
    #: Unanswered reprompts before the agent says goodbye and hangs up.
    max_reprompts: int = 2
    #: Seconds to wait for the digits after a collect_digits request.
    digits_timeout_s: float = 15.0
    #: What the agent says when ASR, the LLM or TTS fails during a turn...
    error_apology: str = "Sorry, I am having trouble right now."
    #: ...and then: ``continue`` (listen), ``transfer`` (to transfer.target) or ``end_call``.
    on_engine_error: Literal["continue", "transfer", "end_call"] = "continue"

    @model_validator(mode="after")
    def _check_turn_model(self) -> "AgentSettings":
        if self.turn_audio_threshold > 0:
            import importlib.util

            if importlib.util.find_spec("pipecat") is None:
                raise ConfigError("agent.turn_audio_threshold", "the Smart Turn model comes with pipecat-ai: pip install 'bridge[turn]'")
        return self


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
            raise ValueError(f"not a database URL (sqlite:///data/bridge.db, postgresql://user@host/db): {value[:60]!r}") from None
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
    def _known_profiles(self) -> "RoutesSettings":
        for number, name in self.numbers.items():
            if name != "default" and name not in self.profiles:
                raise ValueError(f"number {number} routes to profile {name!r}, which is not in routes.profiles")
        return self


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


def profile_settings(settings: "Settings", name: str) -> tuple[AgentSettings, TransferSettings, ModelSettings]:
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
    found = {k[len(prefix):].lower(): v for k, v in os.environ.items() if k.startswith(prefix)}
    return {"models": found} if found else {}


def load_settings(path: str | Path | None = None, overrides: dict[str, Any] | None = None, preset: str | None = None) -> Settings:
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
        from .models.presets import read_preset

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
        from .models.presets import missing_models

        missing = missing_models(block, preset_data, _merge(data, _env_models()))
        if missing:
            raise ConfigError(f"preset {preset}", "models not here: " + ", ".join(missing) + "; run "
                              + " and ".join(f"`bridge models pull {name}`" for name in missing))
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
