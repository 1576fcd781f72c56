"""The server's side of call records: one record per call on either leg, its turns
from the conversation, its end.

:class:`CallRecords` turns what the legs know (numbers, Twilio identifiers, codec,
transport, SRTP, answer and end times, transfers) into events for the
:class:`bridge.records.store.RecordStore`; every method returns at once (a queue
put). With no store (``storage.url: ""``) every method does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sipmessage import URI

from ..conversation.turn_records import TurnRecorder
from .recording import CallRecording, recording_path
from .store import RecordStore, utcnow

log = logging.getLogger("bridge.records")

#: End reasons as stored (``calls.end_reason``), from the legs' own reason strings.
END_REASONS = {
    "remote_bye": "caller_hangup",  # SIP BYE from the caller
    "cancelled": "caller_hangup",  # CANCEL before the answer
    "stop": "caller_hangup",  # Media Streams ``stop``: Twilio's call ended
    "agent": "agent_hangup",  # end_call, or the reprompts ran out
    "local_bye": "agent_hangup",
    "transferred": "transfer",  # the REFER target answered
    "rtp_timeout": "timeout",
    "session_expired": "timeout",  # RFC 4028 session timer
    "timeout": "timeout",  # SIP transaction timeout (408)
    "drained": "drained",  # SIGTERM's drain deadline
    "shutdown": "shutdown",  # SIGINT: stopped at once
    "media_error": "error",
    "agent_error": "agent_error",  # the agent failed (its audio source raised), not the network
    "send_error": "error",
    "disconnected": "disconnected",  # the WebSocket closed without ``stop``
    "voicemail_left": "agent_hangup",  # the voicemail message was played (outbound)
    "amd_no_beep": "agent_hangup",  # a machine answered and no beep came
    "amd_unknown": "agent_hangup",  # nobody answered for sure, and amd.on_unknown is hangup
}


def end_reason(reason: str) -> str:
    """The stored end reason for a leg's ``reason`` (``bye`` -> ``caller_hangup``...);
    an unknown reason is stored as given."""
    return END_REASONS.get(reason, reason)


def number_of(uri: str | None) -> str | None:
    """The user part of a SIP URI (``sip:+14155550100@host`` -> ``+14155550100``), the
    text itself when it is not a URI, ``None`` for nothing."""
    if not uri:
        return None
    text = uri.strip()
    if "<" in text:
        text = text[text.index("<") + 1 : text.rindex(">") if ">" in text else None]
    try:
        parsed = URI.parse(text)
    except ValueError:
        return text[:255]
    return parsed.user or parsed.host


def header(headers: dict, name: str) -> str | None:
    """A header's value by case-insensitive name, or ``None``."""
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


class CallRecords:
    """Call records for one ``bridge serve``.

    Args:
        store: where records go, or ``None`` (records off).
        node: this process's ``calls.node``.
        redact: text -> text for transcripts (``privacy.redact``), or ``None``.
    """

    def __init__(
        self, store: RecordStore | None, node: str, redact: Callable[[str], str] | None = None, recording=None
    ) -> None:
        self.store = store
        self.node = node
        self.redact = redact
        #: ``recording`` settings (:class:`bridge.config.RecordingSettings`), or ``None``.
        self.recording = recording

    def start_recording(self, call_id: str, leg) -> None:
        """Start recording the answered call on ``leg`` (which then feeds it), when
        ``recording.enabled``; the file's path goes into the record at once."""
        settings = self.recording
        if settings is None or not settings.enabled or getattr(leg, "recording", None) is not None:
            return
        path = recording_path(settings.dir, call_id, settings.format)
        leg.recording = CallRecording(path, settings.format)
        self.update(call_id, recording_path=str(path.resolve()))

    async def stop_recording(self, leg) -> None:
        """Write the rest of ``leg``'s recording and close the file (none: nothing)."""
        recording, leg.recording = getattr(leg, "recording", None), None
        if recording is not None:
            await recording.close()

    def started(self, call_id: str, kind: str, **fields) -> None:
        """A call arrived (INVITE, or a Media Streams ``start``): its record opens.

        ``kind``: the leg's kind, ``sip`` or ``mediastreams`` (stored in the ``leg`` column).

        ``fields``: any :class:`bridge.records.schema.Call` column (``caller``,
        ``called``, ``call_sid``, ``account_sid``, ``codec``, ``transport``, ``srtp``,
        ``route``...).
        """
        if self.store is not None:
            self.store.submit(
                "call",
                call_id,
                leg=kind,
                node=self.node,
                invited_at=fields.pop("invited_at", None) or utcnow(),
                **fields,
            )

    def update(self, call_id: str, **fields) -> None:
        """Set fields of an open record (``answered_at``, ``transfer_target``...)."""
        if self.store is not None:
            self.store.submit("call", call_id, **fields)

    def answered(self, call_id: str) -> None:
        """The call was answered (200 OK sent, or the stream started)."""
        self.update(call_id, answered_at=utcnow())

    def attach(self, call_id: str, agent) -> None:
        """Give a conversation agent a turn recorder that writes its turns into this
        call's record (agents without turns, such as the echo agent, are left alone)."""
        if self.store is None or not hasattr(agent, "attach_records"):
            return
        store = self.store
        agent.attach_records(TurnRecorder(lambda record: store.submit("turn", call_id, **record), self.redact))

    def transfer(self, call_id: str, target: str, outcome: str) -> None:
        """A transfer to ``target`` was tried: ``outcome`` ``requested``, ``completed``
        or ``failed <status>``."""
        self.update(call_id, transfer_target=target[:255], transfer_outcome=outcome[:64])

    def ended(self, call_id: str, reason: str, agent=None) -> None:
        """The call ended: its open turn is written (as far as it played), then the end."""
        if self.store is None:
            return
        dtmf = ""
        if agent is not None:
            recorder = getattr(agent, "records", None)
            if recorder is not None:
                recorder.end()
            dtmf = "".join(getattr(agent, "dtmf_digits", []))[:255]
        self.store.submit("call", call_id, ended_at=utcnow(), end_reason=end_reason(reason), dtmf=dtmf)
