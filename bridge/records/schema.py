"""The call-record schema (SQLAlchemy 2 declarative): one ``calls`` row per call,
one ``turns`` row per caller turn or agent utterance; the campaigns of
``bridge campaign`` (``campaigns``, ``campaign_callees``) and the do-not-call list
(``dnc``).

Times are UTC, timezone-aware; latencies are seconds from the end of the caller's
speech (the figures ``/metrics`` observes; docs/operations.md). Alembic
(:mod:`bridge.records.migrations`) creates and upgrades these tables; change them
only together with a new revision there.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    """Declarative base of the records schema."""


class Call(Base):
    """One call on either leg (SIP or Media Streams).

    ``end_reason``: ``caller_hangup``, ``agent_hangup``, ``transfer``, ``timeout``,
    ``drained``, ``error``, ``crashed`` (closed at the next start after a crash), or
    the leg's own reason string. ``node`` is the ``bridge serve`` that took the call
    (``storage.node``), so that a restart closes only its own open calls.
    """

    __tablename__ = "calls"

    call_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    leg: Mapped[str] = mapped_column(String(16))  # "sip" | "mediastreams" | "webrtc"
    node: Mapped[str] = mapped_column(String(255), default="")
    call_sid: Mapped[str | None] = mapped_column(String(64), index=True)
    account_sid: Mapped[str | None] = mapped_column(String(64))
    caller: Mapped[str | None] = mapped_column(String(255), index=True)
    called: Mapped[str | None] = mapped_column(String(255), index=True)
    route: Mapped[str | None] = mapped_column(String(255))
    codec: Mapped[str | None] = mapped_column(String(16))
    transport: Mapped[str | None] = mapped_column(String(16))
    srtp: Mapped[bool] = mapped_column(Boolean, default=False)
    invited_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_reason: Mapped[str | None] = mapped_column(String(64))
    transfer_target: Mapped[str | None] = mapped_column(String(255))
    transfer_outcome: Mapped[str | None] = mapped_column(String(64))
    dtmf: Mapped[str] = mapped_column(String(255), default="")
    recording_path: Mapped[str | None] = mapped_column(Text)
    #: Outbound calls: who answered (``human``, ``machine``, ``unknown``), why, and how many
    #: seconds after the answer the detector said so (:mod:`bridge.outbound.amd`).
    amd_verdict: Mapped[str | None] = mapped_column(String(16))
    amd_reason: Mapped[str | None] = mapped_column(String(64))
    amd_seconds: Mapped[float | None] = mapped_column(Float)
    #: Outbound calls: ``human``, ``voicemail_left``, ``machine_no_beep``, ``no_answer``,
    #: ``busy`` or ``failed`` (:mod:`bridge.calls.gate`, :mod:`bridge.outbound.campaign`).
    outcome: Mapped[str | None] = mapped_column(String(32), index=True)
    #: The campaign that placed the call, if any.
    campaign: Mapped[str | None] = mapped_column(String(255), index=True)
    turns: Mapped[list[Turn]] = relationship(
        back_populates="call", order_by="Turn.seq", cascade="all, delete-orphan", passive_deletes=True
    )


class Turn(Base):
    """One turn: the caller's final transcript (``None`` for the greeting and other
    agent-only utterances) and the agent's reply as played.

    ``agent_text`` is what reached the caller, cut where a barge-in stopped it
    (:meth:`bridge.conversation.turns.AgentUtterance.played_text`); ``barged_in``
    says it was cut. ``latencies``: ``{"endpoint": s, "asr_final": s,
    "llm_first_token": s, "first_sentence": s, "tts_first_audio": s,
    "first_packet": s}``, seconds after the end of the caller's speech.
    """

    __tablename__ = "turns"
    __table_args__ = (UniqueConstraint("call_id", "seq", name="uq_turns_call_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.call_id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    caller_text: Mapped[str | None] = mapped_column(Text)
    agent_text: Mapped[str] = mapped_column(Text, default="")
    barged_in: Mapped[bool] = mapped_column(Boolean, default=False)
    endpoint_rule: Mapped[str | None] = mapped_column(String(32))
    latencies: Mapped[dict] = mapped_column(JSON, default=dict)
    dtmf: Mapped[str] = mapped_column(String(255), default="")
    tools: Mapped[list] = mapped_column(JSON, default=list)
    call: Mapped[Call] = relationship(back_populates="turns")


Index("ix_turns_call_id", Turn.call_id)


class Campaign(Base):
    """One outbound campaign (``bridge campaign run FILE --name NAME``).

    ``state``: ``running`` (a process is working on it, or was killed while it did),
    ``stopped`` (SIGTERM: calls in progress finished, the rest wait), ``done``.
    """

    __tablename__ = "campaigns"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    source: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16), default="running")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CampaignCallee(Base):
    """One callee of a campaign: row ``row`` of its file.

    ``status``: ``pending`` (to be dialed at ``next_at`` or as soon as the window
    opens), ``dialing`` (an INVITE may be out: set and committed before it is sent, so a
    process killed mid-call never dials that callee again), ``done`` (``outcome`` set:
    ``human``, ``voicemail_left``, ``machine_no_beep``, ``no_answer``, ``busy``,
    ``failed``, ``dnc``, ``invalid``).
    """

    __tablename__ = "campaign_callees"
    __table_args__ = (UniqueConstraint("campaign", "number", name="uq_campaign_callee_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign: Mapped[str] = mapped_column(ForeignKey("campaigns.name", ondelete="CASCADE"), index=True)
    row: Mapped[int] = mapped_column(Integer)
    number: Mapped[str] = mapped_column(String(32))
    variables: Mapped[dict] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str | None] = mapped_column(String(32))
    last_result: Mapped[str | None] = mapped_column(String(64))
    last_call_id: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DoNotCall(Base):
    """A number that must never be dialed (checked before every campaign dial)."""

    __tablename__ = "dnc"

    number: Mapped[str] = mapped_column(String(32), primary_key=True)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    note: Mapped[str] = mapped_column(Text, default="")
