"""SDP offer/answer for G.711 audio (RFC 3264, RFC 4566), parsed with ``aiortc.sdp``.

Supported: one audio stream, ``RTP/AVP`` or ``RTP/SAVP``, PCMU (static PT 0)
and PCMA (static PT 8) at 8000 Hz, ``telephone-event/8000`` (RFC 4733) on
whatever dynamic payload type the offer names, ptime 20 ms.

Offers with several media lines (video, T.38 ``image``, a second audio
stream) are answered with exactly as many ``m=`` lines, in the offer's order:
the one audio stream we use, and every other one refused with port 0 (RFC
3264 section 6). Only the audio sections go through ``aiortc.sdp``; the others
are copied from their ``m=`` line (aiortc cannot parse every media kind).

Endpoints put much in an offer that a G.711 call does not use, and some of it in
shapes ``aiortc.sdp`` refuses although RFC 4566 allows them: an ``a=fmtp`` or
``a=rtcp-fb`` for a payload type with no ``a=rtpmap`` (a static type such as G.729's
18 needs none: RFC 3551; Linphone, desk phones and PBXes send ``a=fmtp:18
annexb=yes``), ``a=setup:holdconn``, ``a=extmap`` with extension attributes, a port
count (``m=audio 49170/2``). So aiortc is given only what the answer depends on: the
session's ``v= o= s= c= t=`` lines and, of each audio section, its ``m=`` line (one
port), ``c=``, ``a=rtpmap``, ``a=fmtp`` for mapped types, the direction, ``a=ptime``
and ``a=rtcp-mux`` (:func:`_essentials`). ICE, DTLS, SSRC, feedback and bandwidth
lines are for peers that do WebRTC; a SIP call's answer ignores them (RFC 3264 section
6: an answer need not use every attribute of the offer).

Errors (:class:`SdpError`): a body that is not SDP (no ``v=``, a broken ``m=`` or
``c=`` line, a payload type that is no number) gets 400 with the reason; a valid
offer we cannot take gets 488 Not Acceptable Here with a ``Warning`` (RFC 3261
section 20.43): 304 when it has no audio stream, 305 when no audio stream has a
codec and profile in common with us.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import time
from dataclasses import dataclass

from aiortc.rtcicetransport import RTCIceParameters
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.sdp import MediaDescription, SessionDescription, grouplines

from ..audio.wire import FRAME_MS as PTIME_MS
from .srtp import Crypto, new_crypto, parse_crypto

#: Static payload types (RFC 3551 table 4) for offers that omit ``a=rtpmap``.
STATIC_PAYLOAD_TYPES = {0: ("PCMU", 8000), 8: ("PCMA", 8000)}
#: Codecs we can speak, in our own preference order.
SUPPORTED_CODECS = ("PCMU", "PCMA")


class SdpError(Exception):
    """The offer/answer cannot be used.

    ``status`` is the SIP response to send: 400 (unparseable body) or
    488 Not Acceptable Here (no audio stream / no common codec, RFC 3261
    section 13.3.1.3); ``warning``, with 488, the ``Warning`` code (RFC 3261
    section 20.43): 301 "Incompatible network address formats" (a host name in ``c=``:
    resolving it would be a name lookup nobody configured), 304 "Media type not
    available" or 305 "Incompatible media format".
    """

    def __init__(self, message: str, status: int = 488, warning: int | None = None):
        super().__init__(message)
        self.status = status
        self.warning = warning if warning is not None or status != 488 else 305

    def warning_header(self, agent: str = "bridge") -> tuple[str, str] | None:
        """The ``Warning`` header for this refusal, or ``None`` (400)."""
        if self.warning is None:
            return None
        text = {
            301: "Incompatible network address formats",
            304: "Media type not available",
            305: "Incompatible media format",
        }[self.warning]
        return ("Warning", f'{self.warning} {agent} "{text}"')


@dataclass(frozen=True)
class MediaParams:
    """The negotiated media of a call.

    Attributes:
        codec: ``"PCMU"`` or ``"PCMA"``.
        payload_type: RTP payload type for ``codec`` (0 or 8).
        dtmf_payload_type: the peer's ``telephone-event/8000`` PT, or ``None``.
        remote_addr: ``(host, port)`` the peer wants RTP sent to.
        ptime_ms: packet duration in milliseconds (always 20 here).
        direction: our direction attribute in the answer (``sendrecv`` etc.).
        remote_crypto: the peer's SDES key (``RTP/SAVP``), or ``None`` for plain RTP.
        hold: the peer put us on hold (``sendonly``/``inactive`` or ``c=0.0.0.0``).
        index: which of the offer's ``m=`` lines is this stream (0-based).
        offered: every ``m=`` line of the offer as ``(media, proto, fmt)`` text,
            in order, so the answer can refuse the others with port 0.
    """

    codec: str
    payload_type: int
    dtmf_payload_type: int | None
    remote_addr: tuple[str, int]
    ptime_ms: int = PTIME_MS
    direction: str = "sendrecv"
    remote_crypto: Crypto | None = None
    hold: bool = False
    index: int = 0
    offered: tuple[tuple[str, str, str], ...] = ()

    @property
    def secure(self) -> bool:
        return self.remote_crypto is not None


def _m_line(line: str) -> tuple[str, str, str]:
    """``m=<media> <port>[/<n>] <proto> <fmt> ...`` -> ``(media, proto, fmt)`` (RFC 4566 5.14).

    Raises:
        SdpError: 400, fewer than four fields.
    """
    fields = line[2:].split()
    if len(fields) < 4:
        raise SdpError(f"bad media line {line[:60]!r}", 400)
    return fields[0], fields[2], " ".join(fields[3:])


#: Session-level lines the answer depends on (RFC 4566 section 5).
_SESSION_LINES = ("v=", "o=", "s=", "c=", "t=")
#: Attributes of an audio section the answer depends on.
_AUDIO_ATTRS = frozenset({"rtpmap", "fmtp", "sendrecv", "sendonly", "recvonly", "inactive", "ptime", "rtcp-mux"})
#: ``m=<media> <port>[/<count>] <proto> <fmt> ...``; runs of spaces are taken as one
#: (RFC 4566 asks for one; OpenSIPS has been seen sending two).
_M_LINE = re.compile(r"^m=(\S+)\s+(\d+)(?:/\d+)?\s+(\S+)\s+(\S.*?)\s*$")


_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


def _essentials(group: list[str], session_direction: str | None = None) -> list[str]:
    """The lines of one audio section that an answer depends on (see the module
    docstring), its ``m=`` line with one port; ``session_direction``, a direction the
    session level gave, when the section gives none (RFC 4566 section 6)."""
    m = _M_LINE.match(group[0])
    if m is None:
        raise SdpError(f"bad media line {group[0][:60]!r}", 400)
    mapped = {line[len("a=rtpmap:") :].split(" ", 1)[0].strip() for line in group if line.startswith("a=rtpmap:")}
    out = [f"m={m.group(1)} {m.group(2)} {m.group(3)} {' '.join(m.group(4).split())}"]
    for line in group[1:]:
        if line.startswith("c="):
            out.append(line)
        elif line.startswith("a="):
            attr, _, value = line[2:].partition(":")
            if attr not in _AUDIO_ATTRS:
                continue
            if attr == "fmtp" and value.split(" ", 1)[0].strip() not in mapped:
                continue  # parameters of a type we do not map (static G.729 18: "annexb=yes")
            out.append(line)
    if session_direction and not any(line[2:] in _DIRECTIONS for line in out):
        out.append(f"a={session_direction}")
    return out


def _parse(body: bytes) -> tuple[SessionDescription, list[tuple[str, str, str]], list[int]]:
    """The offer's audio sections parsed by aiortc (:func:`_essentials` of them), every
    ``m=`` line, and for each parsed section its index among the ``m=`` lines.

    Raises:
        SdpError: 400, the body is not SDP.
    """
    try:
        text = body.decode("utf-8")
        if not text.strip():
            raise SdpError("no SDP offer (an INVITE without one, a delayed offer, is not supported)", 488, 304)
        session_lines, groups = grouplines(text)
        if not session_lines or not session_lines[0].startswith("v="):
            raise SdpError("not SDP: it does not start with v= (RFC 4566 section 5)", 400)
        offered = [_m_line(group[0]) for group in groups]
        audio = [i for i, (kind, _, _) in enumerate(offered) if kind == "audio"]
        direction = next((line[2:] for line in session_lines if line[2:] in _DIRECTIONS), None)
        kept = [line for line in session_lines if line.startswith(_SESSION_LINES)] + [
            line for i in audio for line in _essentials(groups[i], direction)
        ]
        return SessionDescription.parse("\r\n".join(kept) + "\r\n"), offered, audio
    except SdpError:
        raise
    except (
        ValueError,
        AssertionError,
        KeyError,
        IndexError,
        StopIteration,
        UnicodeDecodeError,
        TypeError,
        AttributeError,
    ) as exc:
        raise SdpError(f"unparseable SDP: {exc!r}", 400) from exc


def _codecs(media: MediaDescription) -> list[tuple[int, str, int]]:
    """``(pt, name, clock_rate)`` in the offer's order, static PTs included."""
    by_pt = {c.payloadType: (c.name, c.clockRate) for c in media.rtp.codecs}
    out = []
    for pt in media.fmt:
        if pt in by_pt:
            name, rate = by_pt[pt]
        elif pt in STATIC_PAYLOAD_TYPES:
            name, rate = STATIC_PAYLOAD_TYPES[pt]
        else:
            continue
        out.append((pt, name, rate))
    return out


_ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


def _crypto_lines(media: MediaDescription, offer: bytes, index: int) -> list[str]:
    _, groups = grouplines(offer.decode("utf-8", "replace"))
    return [line[len("a=crypto:") :].strip() for line in groups[index] if line.startswith("a=crypto:")]


def negotiate(offer: bytes, srtp: str = "optional") -> MediaParams:
    """Pick the media for an incoming offer (RFC 3264 section 6).

    The answer uses the offer's most preferred codec among PCMU/PCMA, and
    keeps telephone-event/8000 if offered. ``RTP/SAVP`` streams are used with
    the first SDES crypto line we support (RFC 4568 section 7.1).

    Args:
        offer: the SDP body.
        srtp: ``off`` (only ``RTP/AVP``), ``optional`` (either), ``required``
            (only ``RTP/SAVP``: plain offers get 488, Twilio Secure Trunking).

    Raises:
        SdpError: 400 if the body does not parse, 488 if there is no usable
            audio stream, no common codec, or the wrong (S)RTP profile.
    """
    session, offered, positions = _parse(offer)
    if not positions:
        raise SdpError("no audio stream in the offer (" + ", ".join(kind for kind, _, _ in offered) + ")", 488, 304)
    profiles = {"off": ("RTP/AVP",), "optional": ("RTP/AVP", "RTP/SAVP"), "required": ("RTP/SAVP",)}[srtp]
    for media, index in zip(session.media, positions):
        if media.kind != "audio" or media.port == 0:
            continue
        if media.profile not in profiles:
            continue
        crypto = None
        if media.profile == "RTP/SAVP":
            try:
                crypto = next(
                    (c for c in (parse_crypto(v) for v in _crypto_lines(media, offer, index)) if c is not None), None
                )
            except (ValueError, TypeError) as exc:
                raise SdpError(f"bad a=crypto: {exc}", 400) from exc
            if crypto is None:
                continue
        host = media.host or session.host
        if not host:
            raise SdpError("no connection address (c=)", 400)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            # RFC 4566 allows a name here; resolving it would be a lookup nobody configured.
            raise SdpError(f"connection address {host!r} is a name, not an IP address", 488, 301) from None
        chosen = None
        dtmf = None
        for pt, name, rate in _codecs(media):
            upper = name.upper()
            if chosen is None and upper in SUPPORTED_CODECS and rate == 8000:
                chosen = (upper, pt)
            elif upper == "TELEPHONE-EVENT" and rate == 8000 and dtmf is None:
                dtmf = pt
        if chosen is None:
            continue
        their_direction = media.direction or "sendrecv"
        direction = _ANSWER_DIRECTION.get(their_direction, "sendrecv")
        hold = their_direction in ("sendonly", "inactive") or host in ("0.0.0.0", "::")
        return MediaParams(
            chosen[0], chosen[1], dtmf, (host, media.port), PTIME_MS, direction, crypto, hold, index, tuple(offered)
        )
    raise SdpError(
        f"no acceptable audio stream (we accept PCMU/PCMA at 8000 Hz over {' or '.join(profiles)})", 488, 305
    )


def _session(host: str, session_id: int, version: int | None = None) -> SessionDescription:
    session = SessionDescription()
    family = "IP6" if ":" in host else "IP4"
    session.origin = f"bridge {session_id} {session_id if version is None else version} IN {family} {host}"
    session.name = "bridge"
    session.host = host
    return session


def _audio(
    port: int, codecs: list[tuple[int, str]], dtmf_pt: int | None, direction: str, secure: bool = False
) -> MediaDescription:
    fmt = [pt for pt, _ in codecs] + ([dtmf_pt] if dtmf_pt is not None else [])
    media = MediaDescription(kind="audio", port=port, profile="RTP/SAVP" if secure else "RTP/AVP", fmt=fmt)
    media.direction = direction
    media.ice = RTCIceParameters()
    for pt, name in codecs:
        media.rtp.codecs.append(
            RTCRtpCodecParameters(mimeType=f"audio/{name}", clockRate=8000, channels=1, payloadType=pt)
        )
    if dtmf_pt is not None:
        media.rtp.codecs.append(
            RTCRtpCodecParameters(
                mimeType="audio/telephone-event",
                clockRate=8000,
                channels=1,
                payloadType=dtmf_pt,
                parameters={"0-16": None},
            )
        )
    return media


def _serialize(session: SessionDescription, crypto: Crypto | None = None, params: MediaParams | None = None) -> bytes:
    """Session + our one audio section (with ``a=ptime`` and ``a=crypto``, which aiortc
    lacks), placed among the offer's refused ``m=`` lines when ``params`` came from one."""
    (audio,) = session.media
    session.media = []
    head = str(session)
    ours = str(audio) + f"a=ptime:{PTIME_MS}\r\n" + (f"a=crypto:{crypto.attribute()}\r\n" if crypto is not None else "")
    if params is None or not params.offered:
        return (head + ours).encode()
    sections = []
    for i, (kind, proto, fmt) in enumerate(params.offered):
        sections.append(ours if i == params.index else f"m={kind} 0 {proto} {fmt}\r\n")
    return (head + "".join(sections)).encode()


def _check_host(host: str) -> None:
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"SDP address must be an IP literal, not {host!r}") from exc


def build_answer(
    params: MediaParams,
    local_host: str,
    local_port: int,
    session_id: int | None = None,
    local_crypto: Crypto | None = None,
    version: int | None = None,
) -> bytes:
    """Serialize our answer (RFC 3264 section 6.1) for ``params``.

    Args:
        params: the result of :func:`negotiate`.
        local_host: the address the peer must send RTP to (public address behind NAT).
        local_port: our RTP port.
        session_id: ``o=`` session id; defaults to NTP-ish seconds.
        local_crypto: our SDES key, required when ``params.secure``.
        version: ``o=`` version (RFC 3264 section 8: +1 on each new answer); defaults to the id.

    Raises:
        ValueError: ``local_host`` is not an IP literal, or SRTP without ``local_crypto``.
    """
    _check_host(local_host)
    if params.secure and local_crypto is None:
        raise ValueError("an RTP/SAVP answer needs our crypto key")
    session = _session(local_host, session_id or int(time.time()), version)
    session.media.append(
        _audio(
            local_port, [(params.payload_type, params.codec)], params.dtmf_payload_type, params.direction, params.secure
        )
    )
    return _serialize(session, local_crypto if params.secure else None, params)


def answer_crypto(params: MediaParams, current: Crypto | None = None) -> Crypto | None:
    """Our SDES key for an answer: the offer's tag and suite, a fresh key (RFC 4568
    section 7.1.2). In a re-answer (``current``: the key we use now) our key is kept
    when the chosen tag and suite are unchanged (RFC 4568 section 7.1.4 lets either
    side keep its key), so our stream goes on undisturbed."""
    if params.remote_crypto is None:
        return None
    if current is not None and (current.tag, current.suite) == (params.remote_crypto.tag, params.remote_crypto.suite):
        return current
    return new_crypto(params.remote_crypto.tag, params.remote_crypto.suite)


def build_offer(
    local_host: str, local_port: int, dtmf_pt: int = 101, session_id: int | None = None, crypto: Crypto | None = None
) -> bytes:
    """Serialize an offer (RFC 3264 section 5): PCMU, PCMA, telephone-event, ptime 20;
    ``RTP/SAVP`` with ``crypto`` when given.

    Raises:
        ValueError: ``local_host`` is not an IP literal.
    """
    _check_host(local_host)
    session = _session(local_host, session_id or secrets.randbelow(2**31))
    session.media.append(_audio(local_port, [(0, "PCMU"), (8, "PCMA")], dtmf_pt, "sendrecv", crypto is not None))
    return _serialize(session, crypto)


def parse_answer(answer: bytes, srtp: str = "optional") -> MediaParams:
    """Read the media chosen by the peer's answer to our offer.

    Raises:
        SdpError: unparseable, or no PCMU/PCMA in it.
    """
    return negotiate(answer, srtp)
