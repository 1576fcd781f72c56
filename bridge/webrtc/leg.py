"""One browser call as a call leg (:class:`WebRtcCallLeg`, kind ``webrtc``).

Media (aiortc, DTLS-SRTP, RFC 8827):

- **in**: the browser's microphone arrives as Opus, decoded by aiortc to 48 kHz PCM
  frames; FFmpeg's resampler (PyAV) makes them PCM16 mono 8000 Hz, cut into 20 ms frames
  (:class:`~bridge.audio.wire.Framer`) for :meth:`Conversation.feed_audio`;
- **out**: :class:`AgentTrack` hands aiortc one 20 ms frame of the agent (PCM16 mono
  8000 Hz, silence when it is quiet) every 20 ms, paced on the monotonic clock; aiortc
  resamples and encodes it as Opus.

The ``events`` data channel, opened by the page, carries JSON both ways:

- to the page: ``{"type": "transcript", "lines": [[role, text], ...], "latencies":
  [{stage: s, ...}, ...]}`` whenever the transcript as heard changes, and
  ``{"type": "ended", "reason", "call_url"}`` when the call ends;
- from the page: ``{"type": "dtmf", "digit": "5"}`` (as RFC 4733 digits on SIP) and
  ``{"type": "hangup"}``. Anything else is dropped, counted and logged once.

There is no transfer on this leg: the agent says so (:attr:`WebRtcCallLeg.transfer_unavailable`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from fractions import Fraction
from urllib.parse import quote

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..audio.wire import FRAME_SAMPLES, PTIME, SAMPLE_RATE, Framer

log = logging.getLogger("bridge.webrtc")

DTMF_DIGITS = set("0123456789*#ABCD")
#: How often the page's transcript is brought up to date, seconds.
TRANSCRIPT_EVERY_S = 0.25


class AgentTrack(MediaStreamTrack):
    """The agent's audio towards the browser: 20 ms frames (PCM16 mono 8000 Hz) from the
    leg, one per 20 ms of the monotonic clock."""

    kind = "audio"

    def __init__(self, leg: WebRtcCallLeg) -> None:
        super().__init__()
        self.leg = leg
        self._start: float | None = None
        self._count = 0

    async def recv(self) -> av.AudioFrame:
        """The next frame, when its time has come.

        Raises:
            MediaStreamError: the track was stopped.
        """
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            wait = self._start + self._count * PTIME - now
            if wait > 0:
                await asyncio.sleep(wait)
        pcm = self.leg.pull_frame()
        if pcm is None:
            pcm = np.zeros(FRAME_SAMPLES, np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = Fraction(1, SAMPLE_RATE)
        frame.pts = self._count * FRAME_SAMPLES
        self._count += 1
        return frame


class WebRtcCallLeg:
    """A browser call as the conversation and the registry see it.

    Args:
        host: the server (:class:`bridge.calls.host.CallHost`).
        call_id: ``webrtc-`` and 16 hex digits.
        caller: the console user (per-caller caps count them).
        pc: the call's ``aiortc.RTCPeerConnection``.

    Attributes:
        conversation: the agent on the call.
        recording: the call's recording, when on.
        profile: the route's agent profile.
    """

    kind = "webrtc"
    #: What the agent says when the caller asks for a transfer (there is none on this leg).
    transfer_unavailable = "Transfers are not available on a browser call. How else can I help?"

    def __init__(self, host, call_id: str, caller: str, pc) -> None:
        self.host = host
        self.call_id = call_id
        self.caller = caller
        self.pc = pc
        self.meta: dict = {}
        self.conversation = None
        self.recording = None
        self.profile = None
        self.started = time.monotonic()
        self.ended = False
        self.connected = asyncio.Event()
        self.channel = None
        self.track = AgentTrack(self)
        self.frames_in = 0
        self.dropped: dict[str, int] = {}
        self._framer = Framer()
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self._tasks: set[asyncio.Task] = set()
        self._sent: tuple = ()

    # ------------------------------------------------------------ conversation -> leg

    def hangup(self, reason: str) -> None:
        """End the call: tell the page (with the link to its call record), then tear down."""
        if self.ended:
            return
        log.info("call %s: hanging up (%s)", self.call_id, reason)
        self.send_transcript()
        self.send({"type": "ended", "reason": reason, "call_url": f"/calls/{quote(self.call_id)}"})
        self.host.end_call(self.call_id, reason)

    def clear_playout(self) -> None:
        """Nothing is queued below the conversation: the track pulls one frame at a time."""

    def transfer(self, target: str) -> None:
        """There is no transfer on this leg: the agent says so (:attr:`transfer_unavailable`)."""
        log.info("call %s: transfer to %s is not available on a browser call", self.call_id, target)
        if self.conversation is not None:
            self.conversation.say_then(self.transfer_unavailable, lambda: None)

    def mark_ended(self) -> None:
        """The call layer ended this call (it left the live set); its teardown follows."""
        self.ended = True

    def release_agent(self) -> None:
        """The teardown is done: let go of the agent (it keeps its leg for inspection), so
        no reference cycle holds the call's memory until the next cyclic GC pass."""
        self.conversation = None

    async def close_media(self) -> None:
        """Stop the tasks and close the peer connection (ICE, DTLS, SCTP)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.track.stop()
        try:
            await self.pc.close()
        except Exception as exc:  # noqa: BLE001 - the call is over either way
            log.info("call %s: closing the peer connection: %s", self.call_id, exc)
        log.info("call %s: webrtc closed: %d frames received", self.call_id, self.frames_in)

    # ------------------------------------------------------------ media

    def spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def pump(self, track) -> None:
        """The browser's audio track -> 20 ms PCM16 8 kHz frames for the conversation."""
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            for out in self._resampler.resample(frame):
                for pcm in self._framer.frames(out.to_ndarray().reshape(-1).astype(np.int16)):
                    self.frames_in += 1
                    if self.conversation is not None and self.connected.is_set():
                        self.conversation.feed_audio(pcm)
                    if self.recording is not None:
                        self.recording.caller(pcm)

    def pull_frame(self) -> np.ndarray | None:
        """The agent's frame for this 20 ms slot (``None``: silence), and one recording slot."""
        if not self.connected.is_set() or self.conversation is None or self.ended:
            return None
        frame = self.conversation.pull_frame()
        if self.recording is not None:
            self.recording.send_slot(frame)
        return frame

    # ------------------------------------------------------------ events

    def attach_channel(self, channel) -> None:
        """The page's ``events`` data channel."""
        self.channel = channel
        channel.on("message", self.on_message)

    def send(self, event: dict) -> None:
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            channel.send(json.dumps(event))

    def on_message(self, message) -> None:
        """One message from the page: a DTMF digit or a hang-up; anything else is dropped."""
        try:
            event = json.loads(message)
            kind = event.get("type") if isinstance(event, dict) else None
        except (TypeError, ValueError):
            kind = None
        if kind == "dtmf" and str(event.get("digit", "")) in DTMF_DIGITS:
            if self.conversation is not None:
                self.conversation.feed_dtmf(str(event["digit"]))
        elif kind == "hangup":
            self.hangup("bye")
        else:
            reason = "bad_event"
            self.dropped[reason] = self.dropped.get(reason, 0) + 1
            if self.dropped[reason] == 1:
                log.warning(
                    "call %s: dropped a data-channel message that is not a dtmf or hangup event (logged once per call)",
                    self.call_id,
                )

    def send_transcript(self) -> None:
        """Send the transcript as heard, and the latencies, if they changed."""
        conversation = self.conversation
        if conversation is None:
            return
        lines = [[role, text] for role, text in conversation.transcript() if text]
        latencies = list(getattr(conversation, "latencies", []))
        state = (tuple(map(tuple, lines)), len(latencies))
        if state != self._sent:
            self._sent = state
            self.send({"type": "transcript", "lines": lines, "latencies": latencies})

    async def watch_transcript(self) -> None:
        while not self.ended:
            self.send_transcript()
            await asyncio.sleep(TRANSCRIPT_EVERY_S)
