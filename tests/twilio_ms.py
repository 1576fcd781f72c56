"""A Media Streams peer that plays a call as Twilio does, for tests.

It connects to the bridge's ``/media-stream`` with an ``X-Twilio-Signature``,
sends ``connected``, ``start``, 20 ms ``media`` frames in real time (speech
clips, silence between), ``dtmf`` and ``stop``.

The agent's side behaves like Twilio's media buffer (Media Streams docs,
"Send a mark message" and "Send a clear message"): outbound ``media`` is queued
and played out in real time, one 20 ms frame per 20 ms; a ``mark`` is queued
behind the audio sent before it and echoed only once that audio has played;
``clear`` empties the queue and echoes every pending mark at once. What was
played is :attr:`received` (what the caller heard, in order); each frame's
play time is kept, so a test can tell when the agent's audio stopped.
"""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import websockets
from twilio.request_validator import RequestValidator

from bridge.audio.wire import FRAME_SAMPLES
from bridge.media.codecs import G711

SPEECH_RMS = 330.0


#: The Call SID a stream carries unless told otherwise.
CALL_SID = "CA" + "1" * 32


class TwilioStream:
    def __init__(
        self,
        ws_url: str,
        token: str,
        signed_url: str | None = None,
        call_sid: str = CALL_SID,
        headers: dict | None = None,
        latency: float = 0.2,
    ) -> None:
        #: Seconds between a media frame's arrival and its playout (network and Twilio's jitter buffer).
        self.latency = latency
        self.ws_url = ws_url
        self.signed_url = signed_url or ws_url
        self.token = token
        self.call_sid = call_sid
        self.stream_sid = "MZ" + "2" * 32
        self.headers = headers or {}
        self.codec = G711("PCMU")
        self.received: list[np.ndarray] = []
        self.events: list[dict] = []
        self.clears = 0
        self.marks_echoed = 0
        self.close_code: int | None = None
        self._seq = 0
        #: Loop time at which each frame of :attr:`received` was played.
        self.played_at: list[float] = []
        #: Loop times of each ``clear`` received.
        self.clear_times: list[float] = []
        #: Frames dropped from the buffer by ``clear`` (sent but never heard).
        self.cleared_frames = 0
        self._buffer: list = []  # ("media", pcm) | ("mark", name), in arrival order
        self._ws = None

    def signature(self, url: str | None = None) -> str:
        return RequestValidator(self.token).compute_signature(url or self.signed_url, {})

    def _message(self, event: str, **fields) -> str:
        self._seq += 1
        return json.dumps({"event": event, "sequenceNumber": str(self._seq), "streamSid": self.stream_sid, **fields})

    async def run(
        self,
        clips: list[tuple[float, np.ndarray]],
        duration: float,
        dtmf: list[tuple[float, str]] = (),
        custom: dict | None = None,
        media_format: dict | None = None,
        sign: bool = True,
        echo_db: float | None = None,
        echo_delay_ms: int = 150,
        account_sid: str = "AC" + "3" * 32,
    ) -> None:
        """Stream for ``duration`` s; ``clips`` are (start second, PCM16 8 kHz) of caller speech.
        ``echo_db``: also send the agent's audio back at this level after ``echo_delay_ms``."""
        headers = dict(self.headers)
        if sign:
            headers["X-Twilio-Signature"] = self.signature()
        async with websockets.connect(self.ws_url, additional_headers=headers) as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            start = {
                "accountSid": account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": custom or {"From": "+14155550123"},
                "mediaFormat": media_format or {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            }
            await ws.send(self._message("start", start=start))
            reader = asyncio.ensure_future(self._read(ws))
            loop = asyncio.get_running_loop()
            t0 = self.t0 = loop.time()
            pending_dtmf = sorted(dtmf)
            frames = int(duration / 0.02)
            try:
                for n in range(frames):
                    now = n * 0.02
                    frame = np.zeros(FRAME_SAMPLES, np.int16)
                    for at, pcm in clips:
                        i = int(round((now - at) / 0.02))
                        if 0 <= i * FRAME_SAMPLES < len(pcm):
                            chunk = pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]
                            frame[: len(chunk)] = chunk
                    if echo_db is not None:
                        k = len(self.received) - 1 - echo_delay_ms // 20
                        if k >= 0:
                            mixed = frame.astype(np.float32) + self.received[k].astype(np.float32) * 10 ** (
                                echo_db / 20
                            )
                            frame = np.clip(mixed, -32768, 32767).astype(np.int16)
                    payload = base64.b64encode(self.codec.encode(frame)).decode()
                    if reader.done():
                        break  # the bridge closed the stream (the agent hung up)
                    try:
                        await ws.send(
                            self._message(
                                "media",
                                media={
                                    "track": "inbound",
                                    "chunk": str(n + 1),
                                    "timestamp": str(n * 20),
                                    "payload": payload,
                                },
                            )
                        )
                        while pending_dtmf and pending_dtmf[0][0] <= now:
                            await ws.send(
                                self._message("dtmf", dtmf={"track": "inbound_track", "digit": pending_dtmf.pop(0)[1]})
                            )
                    except websockets.ConnectionClosed:
                        break
                    delay = t0 + (n + 1) * 0.02 - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                if not reader.done():
                    try:
                        await ws.send(
                            self._message("stop", stop={"accountSid": "AC" + "3" * 32, "callSid": self.call_sid})
                        )
                    except websockets.ConnectionClosed:
                        pass
                    await asyncio.wait_for(reader, 5)
            finally:
                reader.cancel()
            self.close_code = ws.close_code

    async def _read(self, ws) -> None:
        self._ws = ws
        player = asyncio.ensure_future(self._play(ws))
        try:
            async for text in ws:
                message = json.loads(text)
                self.events.append(message)
                kind = message.get("event")
                if kind == "media":
                    arrived = asyncio.get_running_loop().time()
                    self._buffer.append(
                        ("media", (self.codec.decode(base64.b64decode(message["media"]["payload"])), arrived))
                    )
                elif kind == "mark":
                    self._buffer.append(("mark", message["mark"]["name"]))
                elif kind == "clear":
                    self.clears += 1
                    self.clear_times.append(asyncio.get_running_loop().time())
                    pending, self._buffer = self._buffer, []
                    self.cleared_frames += sum(1 for k, _ in pending if k == "media")
                    for name in [v for k, v in pending if k == "mark"]:
                        await self._echo_mark(ws, name)  # returned at once, unplayed
        except websockets.ConnectionClosed:
            pass
        finally:
            player.cancel()

    async def _echo_mark(self, ws, name: str) -> None:
        self.marks_echoed += 1
        try:
            await ws.send(self._message("mark", mark={"name": name}))
        except websockets.ConnectionClosed:
            pass

    async def _play(self, ws) -> None:
        """Play the buffer in real time: one frame per 20 ms; marks when reached."""
        loop = asyncio.get_running_loop()
        tick = loop.time()
        while True:
            while self._buffer and self._buffer[0][0] == "mark":
                await self._echo_mark(ws, self._buffer.pop(0)[1])
            if self._buffer and self._buffer[0][1][1] + self.latency <= loop.time():
                self.received.append(self._buffer.pop(0)[1][0])
                self.played_at.append(loop.time())
                while self._buffer and self._buffer[0][0] == "mark":
                    await self._echo_mark(ws, self._buffer.pop(0)[1])
            tick += 0.02
            delay = tick - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                tick = loop.time()

    def audio(self) -> np.ndarray:
        return np.concatenate(self.received) if self.received else np.zeros(0, np.int16)
