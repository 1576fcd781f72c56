"""Settings of the call side: SIP, who may call, transfer, RTP media and Media Streams
(``sip:``, ``access:``, ``transfer:``, ``media:``, ``mediastreams:`` in
``config/default.yaml``). Outbound calls have their own room, :mod:`.outbound`."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import BaseModel, ConfigError, _listen, parse_port_range


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
    def _check_tls(self) -> SipSettings:
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
