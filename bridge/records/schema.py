"""The call-record schema (SQLAlchemy 2 declarative): one ``calls`` row per call,
one ``turns`` row per caller turn or agent utterance.

Times are UTC, timezone-aware; latencies are seconds from the end of the caller's
speech (the figures ``/metrics`` observes; docs/operations.md). Alembic
(:mod:`bridge.records.migrations`) creates and upgrades these tables; change them
only together with a new revision there.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
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
    leg: Mapped[str] = mapped_column(String(16))  # "sip" | "mediastreams"
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
    turns: Mapped[list["Turn"]] = relationship(back_populates="call", order_by="Turn.seq", cascade="all, delete-orphan", passive_deletes=True)


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
