"""A Twilio Media Streams WebSocket as a call leg for the conversation.

Audio in: ``media`` messages (base64 mu-law 8 kHz, any chunk size) are cut
into 20 ms frames for :meth:`Conversation.feed_audio`. Audio out: one 20 ms
``media`` message per 20 ms, paced from the stream start like RTP, a ``mark``
after each agent sentence and every half second, and ``clear`` on barge-in.
What was played is counted from the ``mark`` echoes (a mark returned because
of a ``clear`` does not count), so history truncation is exact.

Call control goes through Twilio's REST API (:class:`TwilioCallControl`):
hang-up updates the call to ``completed``; transfer updates it with
``<Dial>`` TwiML.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..audio.wire import FRAME_SAMPLES, PTIME
from ..media.codecs import G711
from ..media.rtp import Pacer
from . import protocol as p

log = logging.getLogger("bridge.mediastreams")

MARK_EVERY_FRAMES = 25  # a mark each 500 ms besides sentence ends, for finer accounting


class TwilioCallControl:
    """Hang-up and transfer through Twilio's REST API (twilio-python).

    Args:
        account_sid, auth_token: the account's credentials.
        api_base_url: replaces ``https://api.twilio.com`` (a local stand-in in tests).
    """

    def __init__(self, account_sid: str, auth_token: str, api_base_url: str = "") -> None:
        from twilio.rest import Client

        self.client = Client(account_sid, auth_token)
        if api_base_url:
            self.client.api.base_url = api_base_url.rstrip("/")

    def hangup(self, call_sid: str) -> None:
        """``POST /2010-04-01/Accounts/{AC}/Calls/{CA}.json`` with ``Status=completed``.

        Raises:
            twilio.base.exceptions.TwilioRestException: the API refused.
        """
        self.client.calls(call_sid).update(status="completed")

    def transfer(self, call_sid: str, target: str) -> None:
        """Update the live call with ``<Response><Dial>target</Dial></Response>``.

        Raises:
            twilio.base.exceptions.TwilioRestException: the API refused.
        """
        from twilio.twiml.voice_response import VoiceResponse

        response = VoiceResponse()
        dial = response.dial()
        if target.startswith("sip:"):
            dial.sip(target)
        else:
            dial.number(target.removeprefix("tel:"))
        self.client.calls(call_sid).update(twiml=str(response))

    def create(self, to: str, from_: str, twiml: str) -> str:
        """Start an outbound call whose TwiML connects a stream; returns its Call SID."""
        return self.client.calls.create(to=to, from_=from_, twiml=twiml).sid


class MediaStreamLeg:
    """One Media Streams session driving an agent.

    Args:
        host: the server as a leg sees it (:class:`bridge.calls.host.CallHost`).
        admit: called with this leg when ``start`` arrives; returns its agent, or
            ``None`` when the call is refused (:meth:`bridge.calls.streams.StreamCalls.start`).
        send: ``await send(text)`` sends a text frame.
        close: ``await close(code, reason)`` closes the WebSocket.
        control: Twilio's REST API for hangup and transfer, or ``None``.
        max_message_bytes: larger frames are a protocol error.
    """

    kind = "mediastreams"

    def __init__(
        self, host, admit, send, close, control: TwilioCallControl | None, max_message_bytes: int = 65536
    ) -> None:
        self.host = host
        self._admit = admit
        self._send_text = send
        self._close = close
        self.control = control
        self.session = p.StreamSession(max_message_bytes)
        self.codec = G711("PCMU")
        self.call_id = ""
        self.conversation = None
        #: The call's recording (:class:`bridge.records.recording.CallRecording`), when on.
        self.recording = None
        #: The agent profile that answers (:class:`bridge.routing.Profile`), set at ``start``.
        self.profile = None
        self.ended = False
        self.meta: dict = {}
        self.started = time.monotonic()
        self._inbound = bytearray()
        self._marks: dict[str, tuple[object, int]] = {}
        self._mark_seq = 0
        self._sender: asyncio.Task | None = None
        self.clears = 0
        self.media_sent = 0
        #: ``(close code, reason)`` when the session was refused at ``start``.
        self.refused: tuple[int, str] | None = None

    @property
    def caller(self) -> str:
        """The caller's number (the ``From`` custom parameter our TwiML passes), for per-caller caps."""
        return str(self.meta.get("From", ""))

    def refuse(self, code: int, reason: str) -> None:
        """Admission said no: the session ends without ever being a call; the
        WebSocket is closed with ``code``."""
        self.refused = (code, reason)
        self.ended = True

    # -- CallLeg -------------------------------------------------------------

    def hangup(self, reason: str) -> None:
        """End the call: REST ``completed`` (when credentials are set), then close."""
        if self.ended:
            return
        log.info("call %s: hanging up (%s)", self.call_id, reason)
        if self.control is not None and self.session.call_sid:
            self._spawn(self._rest(self.control.hangup, self.session.call_sid))
        self._spawn(self._close(p.CLOSE_NORMAL, reason))
        self._end(reason)

    def clear_playout(self) -> None:
        """Barge-in: Twilio drops its queue; marks it returns now were not played."""
        if self.session.state != "started":
            return
        self.clears += 1
        self._marks.clear()
        if self.recording is not None:
            self.recording.clear_agent()  # what Twilio drops is never heard
        self._spawn(self._send(self.session.clear()))

    def transfer(self, target: str) -> None:
        """Transfer through the REST API (update the call with ``<Dial>``)."""
        if self.control is None or not self.session.call_sid:
            log.warning("call %s: transfer needs Twilio API credentials", self.call_id)
            if self.conversation is not None:
                self.conversation.transfer_failed()
            return
        log.info("call %s: transfer to %s via the REST API", self.call_id, target)

        async def run() -> None:
            ok = await self._rest(self.control.transfer, self.session.call_sid, target)
            # Twilio's <Dial> takes the call over: the stream stops next.
            self.host.records.transfer(self.call_id, target, "completed" if ok else "failed")
            if not ok and self.conversation is not None:
                self.conversation.transfer_failed()

        self._spawn(run())

    # -- plumbing -------------------------------------------------------------

    def _spawn(self, coro) -> None:
        self.host.spawn(coro)

    def mark_ended(self) -> None:
        """The call layer ended this call (it left the live set); its teardown follows."""
        self.ended = True

    def release_agent(self) -> None:
        """The teardown is done: let go of the agent (it keeps its leg for inspection), so
        no reference cycle holds the call's memory until the next cyclic GC pass."""
        self.conversation = None

    async def close_media(self) -> None:
        """Nothing to release: the WebSocket is closed by whoever ended the session."""

    async def _send(self, text: str) -> None:
        """Send a frame unless the session is over (a closed socket is not an error then)."""
        if self.ended:
            return
        try:
            await self._send_text(text)
        except Exception as exc:  # noqa: BLE001 - the socket went away: this call ends
            log.info("call %s: send failed (%s): ending", self.call_id, exc.__class__.__name__)
            self._end("send_error")

    async def _rest(self, fn, *args) -> bool:
        try:
            await asyncio.to_thread(fn, *args)
            return True
        except Exception as exc:  # noqa: BLE001 - the API's failure is reported, never fatal
            log.warning("call %s: Twilio API %s failed: %s", self.call_id, fn.__name__, exc)
            return False

    def disconnected(self) -> None:
        """The WebSocket is gone (closed by Twilio, or the session ended): end the call."""
        self._end("disconnected")

    def _end(self, reason: str) -> None:
        if self.ended:
            return
        self.ended = True
        if self._sender is not None:
            self._sender.cancel()
        self.host.end_call(self.call_id, reason)

    async def receive(self, text) -> bool:
        """Handle one frame; ``False`` once the session is over.

        Raises:
            StreamProtocolError: closes the session (the caller closes the socket).
        """
        event = self.session.receive(text)
        if isinstance(event, p.Media):
            self._on_media(event.payload)
        elif isinstance(event, p.MarkEcho):
            marked = self._marks.pop(event.name, None)
            if marked is not None and self.conversation is not None:
                self.conversation.mark_played(*marked)
        elif isinstance(event, p.Dtmf):
            if self.conversation is not None:
                self.conversation.feed_dtmf(event.digit)
        elif isinstance(event, p.Start):
            self.call_id = event.call_sid
            self.meta = {"streamSid": event.stream_sid, "accountSid": event.account_sid, **event.custom_parameters}
            self.conversation = self._admit(self)
            if self.conversation is None:
                return False  # refused: the caller closes with self.refused
            self._sender = asyncio.ensure_future(self._send_loop())
        elif isinstance(event, p.Stop):
            log.info("call %s: stream stopped by Twilio", self.call_id)
            self._end("stop")
            return False
        return True

    def _on_media(self, payload: bytes) -> None:
        self._inbound += payload
        while len(self._inbound) >= FRAME_SAMPLES:
            chunk = bytes(self._inbound[:FRAME_SAMPLES])
            del self._inbound[:FRAME_SAMPLES]
            pcm = self.codec.decode(chunk)
            if self.conversation is not None:
                self.conversation.feed_audio(pcm)
            if self.recording is not None:
                self.recording.caller(pcm)  # Twilio paces inbound media: each frame is a slot
                self.recording.tick()

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        pacer = Pacer(loop.time(), PTIME)
        since_mark = 0
        try:
            while not self.ended:
                delay = pacer.deadline() - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                for _slot in pacer.due_slots(loop.time()):
                    try:
                        item = self.conversation.pull_item() if self.conversation is not None else None
                    except Exception:  # noqa: BLE001 - the agent failed, not the network
                        log.exception("call %s: the agent's audio source failed", self.call_id)
                        self.hangup("agent_error")
                        return
                    if item is None:
                        since_mark = 0
                        continue
                    await self._send(self.session.media(self.codec.encode(item.pcm)))
                    self.media_sent += 1
                    if self.recording is not None:
                        self.recording.agent(item.pcm)
                    since_mark += 1
                    if item.sentence_end or since_mark >= MARK_EVERY_FRAMES:
                        since_mark = 0
                        self._mark_seq += 1
                        name = f"m{self._mark_seq}"
                        self._marks[name] = (item.owner, item.offset)
                        await self._send(self.session.mark(name))
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - a dead socket ends this call only
            log.exception("call %s: media sender failed", self.call_id)
            self._end("send_error")
