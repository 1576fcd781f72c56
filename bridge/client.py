"""``bridge call``: a SIP UAC on the same core, for tests, demos and benchmarks.

It dials, plays WAV files as the caller's voice (then silence), records the
agent (PCM16 mono 8000 Hz WAV), hangs up after ``duration`` seconds or when
the agent does, and measures latency from the caller's side: end of its own
speech (last voiced 20 ms frame of the WAV, by webrtcvad) -> first agent
audio received (first packet louder than ``-40 dBFS`` after that).

With several ``--play`` files it holds a multi-turn conversation: it waits for
the greeting to finish, plays a file, waits for the reply to finish, plays the
next one, and so on.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import socket
import statistics
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sipmessage import URI

from .audio.resample import resample_all
from .audio.wire import FRAME_SAMPLES
from .engines.vad import WebRtcVad
from .media import sdp
from .media.stream import RtpStream
from .runtime import run, setup_logging
from .sip import events as ev
from .sip.core import SipCore, Timers
from .sip.transport import SipUdpTransport

log = logging.getLogger("bridge.client")

#: A received frame with RMS above this (int16 units, about -40 dBFS) is agent speech.
SPEECH_RMS = 330.0


def read_wav_8k(path: str | Path) -> np.ndarray:
    """Read a PCM16 WAV (mono or stereo, any rate) as PCM16 mono 8000 Hz.

    Raises:
        ValueError: not 16-bit PCM.
    """
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        if w.getnchannels() > 1:
            pcm = pcm.reshape(-1, w.getnchannels())[:, 0].copy()
        return resample_all(pcm, w.getframerate(), 8000)


def write_wav_8k(path: str | Path, pcm: np.ndarray) -> None:
    """Write PCM16 mono 8000 Hz samples to a WAV file."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.asarray(pcm, dtype=np.int16).tobytes())


def last_voiced_frame(pcm: np.ndarray) -> int:
    """Index of the last 20 ms frame webrtcvad calls speech (-1 if none)."""
    vad = WebRtcVad(2)
    last = -1
    for i in range(len(pcm) // FRAME_SAMPLES):
        if vad.is_speech(pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]):
            last = i
    return last


def first_voiced_frame(pcm: np.ndarray) -> int:
    """Index of the first 20 ms frame webrtcvad calls speech (-1 if none)."""
    vad = WebRtcVad(2)
    for i in range(len(pcm) // FRAME_SAMPLES):
        if vad.is_speech(pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]):
            return i
    return -1


@dataclass
class CallReport:
    """What ``bridge call`` measured. Latencies in seconds, one per caller turn."""

    answered: bool = False
    end_reason: str = ""
    hung_up_by: str = ""
    latencies: list[float] = field(default_factory=list)
    recorded_seconds: float = 0.0
    #: Every agent frame as it arrived: (seconds since our first clip started, RMS level).
    heard: list[tuple[float, float]] = field(default_factory=list)

    @property
    def p50(self) -> float | None:
        return statistics.median(self.latencies) if self.latencies else None


class _Caller:
    """Frame source and sink of the calling side (runs on the loop)."""

    def __init__(
        self,
        clips: list[np.ndarray],
        wait_first: bool,
        settle: float,
        reply_timeout: float,
        echo_gain: float = 0.0,
        echo_delay_frames: int = 0,
    ) -> None:
        self.clips = clips
        self.echo_gain = echo_gain
        self.echo_delay_frames = echo_delay_frames
        self._echo: collections.deque[np.ndarray] = collections.deque()
        self.voiced_end = [last_voiced_frame(c) for c in clips]
        self.wait_first = wait_first
        self.settle = settle
        self.reply_timeout = reply_timeout
        self.state = "wait_agent" if wait_first else ("play" if clips else "finished")
        self.clip = 0
        self.pos = 0
        self.state_since: float | None = None
        self.agent_heard_at: float | None = None  # last loud agent frame
        self.agent_spoke = False
        self.speech_end: float | None = None
        self.latencies: list[float] = []
        self.recording: list[np.ndarray] = []
        self.rec_start: float | None = None
        self.rec_samples = 0
        self.done = asyncio.Event()
        self.arrivals: list[tuple[float, float]] = []  # (loop time, RMS) of each agent frame
        self.voice_t0: float | None = None  # when the first clip started playing

    # sink
    def on_audio(self, frame: np.ndarray, now: float) -> None:
        if self.rec_start is None:
            self.rec_start = now
        expected = int((now - self.rec_start) * 8000)
        gap = expected - self.rec_samples - FRAME_SAMPLES
        if gap > 3 * FRAME_SAMPLES:  # the far end suppressed silence: keep the timeline
            self.recording.append(np.zeros(gap, dtype=np.int16))
            self.rec_samples += gap
        self.recording.append(frame)
        self.rec_samples += len(frame)
        if self.echo_gain:
            self._echo.append(frame)
        rms = float(np.sqrt(np.mean(frame.astype(np.float64) ** 2)))
        self.arrivals.append((now, rms))
        if rms > SPEECH_RMS:
            self.agent_heard_at = now
            self.agent_spoke = True
            if self.state == "wait_reply" and self.speech_end is not None:
                self.latencies.append(now - self.speech_end)
                log.info("turn %d: end of our speech -> first agent audio: %.3f s", self.clip, now - self.speech_end)
                self.speech_end = None
                self.state = "reply"

    # source
    def pull_frame(self, now: float) -> np.ndarray | None:
        """Our voice for this slot, plus the far end's audio echoed back when simulating echo."""
        voice = self._voice(now)
        if not self.echo_gain:
            return voice
        echo = self._echo.popleft() if len(self._echo) > self.echo_delay_frames else None
        if echo is None:
            return voice
        mixed = echo.astype(np.float32) * self.echo_gain
        if voice is not None:
            mixed += voice
        return np.clip(mixed, -32768, 32767).astype(np.int16)

    def _voice(self, now: float) -> np.ndarray | None:
        if self.state_since is None:
            self.state_since = now
        if self.state == "wait_agent":
            quiet = self.agent_heard_at is None or now - self.agent_heard_at >= self.settle
            if (self.agent_spoke and quiet) or now - self.state_since > 15.0:
                self._next_clip(now)
            return None
        if self.state == "play":
            if self.voice_t0 is None:
                self.voice_t0 = now
            clip = self.clips[self.clip]
            frame = clip[self.pos : self.pos + FRAME_SAMPLES]
            index = self.pos // FRAME_SAMPLES
            self.pos += FRAME_SAMPLES
            if index == self.voiced_end[self.clip]:
                self.speech_end = now
            if self.pos >= len(clip):
                self.clip += 1
                self.pos = 0
                self.agent_spoke = False
                self._go("wait_reply", now)
            if len(frame) < FRAME_SAMPLES:
                frame = np.pad(frame, (0, FRAME_SAMPLES - len(frame)))
            return frame
        if self.state == "wait_reply" and now - self.state_since > self.reply_timeout:
            log.warning("turn %d: no reply within %.0f s", self.clip, self.reply_timeout)
            self.speech_end = None
            self._go("reply", now)
        if self.state == "reply":
            if self.agent_heard_at is None or now - self.agent_heard_at >= self.settle or now - self.state_since > 30:
                self._next_clip(now)
        return None

    def _next_clip(self, now: float) -> None:
        if self.clip < len(self.clips):
            self._go("play", now)
        else:
            self._go("finished", now)
            self.done.set()

    def _go(self, state: str, now: float) -> None:
        self.state = state
        self.state_since = now


async def place_call(
    uri: str,
    play: list[str | Path],
    record: str | Path | None,
    duration: float | None = None,
    *,
    local_host: str = "127.0.0.1",
    wait_greeting: bool = True,
    settle: float = 1.2,
    reply_timeout: float = 20.0,
    dtmf: str = "",
    dtmf_after: float = 0.0,
    echo_db: float | None = None,
    echo_delay_ms: int = 150,
) -> CallReport:
    """Dial ``uri`` (``sip:user@host:port``), hold the conversation, return a :class:`CallReport`.

    Args:
        uri: the SIP URI to call; the INVITE goes to its host and port (5060 default).
        play: WAV files, one per caller turn.
        record: where to write the agent's audio (PCM16 8 kHz WAV), or ``None``.
        duration: hang up after this many seconds from the answer; ``None``:
            hang up once the last reply has finished.
        local_host: the address to bind and advertise.
        wait_greeting: wait for the agent's greeting to finish before the first clip.
        settle: seconds of agent silence that mean the agent finished speaking.
        reply_timeout: seconds to wait for a reply before moving on.
        dtmf: digits to send as RFC 4733 events ``dtmf_after`` seconds after the answer.
        echo_db: simulate a line that echoes: send the agent's audio back at this
            level (dB, e.g. -10) after ``echo_delay_ms``, mixed with our voice.

    Raises:
        ValueError: ``uri`` is not a SIP URI.
    """
    target = URI.parse(uri)
    dest = (target.host, target.port or 5060)
    clips = [read_wav_8k(p) for p in play]
    gain = 10 ** (echo_db / 20) if echo_db is not None else 0.0
    caller = _Caller(clips, wait_greeting, settle, reply_timeout, gain, echo_delay_ms // 20)
    report = CallReport()
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()
    answered: asyncio.Future = loop.create_future()

    rtp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp_sock.bind((local_host, 0))
    rtp_sock.setblocking(False)
    rtp_port = rtp_sock.getsockname()[1]

    def on_event(event) -> None:
        if isinstance(event, ev.CallAnswered) and not answered.done():
            answered.set_result(event)
        elif isinstance(event, ev.CallEnded):
            report.end_reason = event.reason
            report.hung_up_by = "agent" if event.reason == "remote_bye" else "us"
            if not answered.done():
                answered.set_exception(ConnectionError(f"call failed: {event.reason} {event.status or ''}"))
            ended.set()

    core = SipCore((local_host, 0), timers=Timers(), user_agent="bridge-call/0.1")
    transport = SipUdpTransport(core, on_event)
    await transport.start()
    call_id = core.invite(uri, dest, sdp.build_offer(local_host, rtp_port), transport.now(), from_user="caller")
    transport.flush()
    stream = None
    try:
        answer = await asyncio.wait_for(answered, 40)
        report.answered = True
        params = sdp.parse_answer(answer.answer)
        stream = RtpStream(
            rtp_sock,
            params,
            caller,
            caller.on_audio,
            lambda e: None,
            lambda: None,
            rtp_timeout=3600,
            latch=True,
            send_silence=True,
        )
        await stream.start()
        if dtmf:
            loop.call_later(dtmf_after, stream.send_dtmf, dtmf)
        log.info("call %s answered: %s, rtp %d <-> %s:%d", call_id, params.codec, rtp_port, *params.remote_addr)
        waits = [asyncio.ensure_future(ended.wait())]
        if duration is not None:
            waits.append(asyncio.ensure_future(asyncio.sleep(duration)))
        else:
            waits.append(asyncio.ensure_future(caller.done.wait()))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        if not ended.is_set():
            core.hangup(call_id, transport.now())
            transport.flush()
            report.hung_up_by = "us"
            report.end_reason = "local_bye"
            await asyncio.sleep(0.3)  # let the BYE's 200 arrive
    finally:
        if stream is not None:
            await stream.close()
        else:
            rtp_sock.close()
        transport.close()
    pcm = np.concatenate(caller.recording) if caller.recording else np.zeros(0, dtype=np.int16)
    report.recorded_seconds = len(pcm) / 8000
    if record:
        write_wav_8k(record, pcm)
    report.latencies = caller.latencies
    t0 = caller.voice_t0 if caller.voice_t0 is not None else (caller.arrivals[0][0] if caller.arrivals else 0.0)
    report.heard = [(t - t0, rms) for t, rms in caller.arrivals]
    return report


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``call`` sub-command on the ``bridge`` parser."""
    call = sub.add_parser("call", help="dial a SIP URI, speak WAV files, record the agent")
    call.add_argument("uri", help="sip:user@host:port")
    call.add_argument("--play", action="append", metavar="WAV", help="caller audio; repeat for several turns")
    call.add_argument("--record", metavar="WAV", help="write the agent's audio here (PCM16 8 kHz)")
    call.add_argument(
        "--duration", type=float, metavar="S", help="hang up after S seconds (default: after the last reply)"
    )
    call.add_argument("--local-host", default="127.0.0.1", help="address to bind and advertise (default 127.0.0.1)")
    call.add_argument("--no-wait", action="store_true", help="play the first file at once, over the greeting")
    call.add_argument("--dtmf", metavar="DIGITS", help="send these digits (RFC 4733) right after the answer")
    call.add_argument(
        "--echo-db", type=float, metavar="DB", help="simulate line echo: send the agent back at this level (e.g. -10)"
    )
    call.add_argument("--echo-delay-ms", type=int, default=150, metavar="MS", help="echo delay (default 150)")
    call.add_argument("-v", "--verbose", action="store_true")
    call.set_defaults(func=_call)
    return call


def _call(args: argparse.Namespace) -> int:
    setup_logging("INFO" if args.verbose else "WARNING")
    report = run(
        place_call(
            args.uri,
            args.play or [],
            args.record,
            args.duration,
            local_host=args.local_host,
            wait_greeting=not args.no_wait,
            dtmf=args.dtmf or "",
            echo_db=args.echo_db,
            echo_delay_ms=args.echo_delay_ms,
        )
    )
    print(f"answered: {report.answered}")
    print(f"ended: {report.end_reason} (hung up by {report.hung_up_by})")
    print(f"recorded: {report.recorded_seconds:.2f} s of agent audio" + (f" -> {args.record}" if args.record else ""))
    for i, latency in enumerate(report.latencies, 1):
        print(f"turn {i}: end of caller speech -> first agent audio: {latency * 1000:.0f} ms")
    if report.latencies:
        print(f"latency p50: {report.p50 * 1000:.0f} ms over {len(report.latencies)} turns")
    return 0 if report.answered else 1
