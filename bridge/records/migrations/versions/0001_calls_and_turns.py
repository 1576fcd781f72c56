"""calls and turns

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("call_id", sa.String(255), primary_key=True),
        sa.Column("leg", sa.String(16), nullable=False),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("call_sid", sa.String(64)),
        sa.Column("account_sid", sa.String(64)),
        sa.Column("caller", sa.String(255)),
        sa.Column("called", sa.String(255)),
        sa.Column("route", sa.String(255)),
        sa.Column("codec", sa.String(16)),
        sa.Column("transport", sa.String(16)),
        sa.Column("srtp", sa.Boolean, nullable=False),
        sa.Column("invited_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True)),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.Column("end_reason", sa.String(64)),
        sa.Column("transfer_target", sa.String(255)),
        sa.Column("transfer_outcome", sa.String(64)),
        sa.Column("dtmf", sa.String(255), nullable=False),
        sa.Column("recording_path", sa.Text),
    )
    op.create_index("ix_calls_call_sid", "calls", ["call_sid"])
    op.create_index("ix_calls_caller", "calls", ["caller"])
    op.create_index("ix_calls_called", "calls", ["called"])
    op.create_index("ix_calls_invited_at", "calls", ["invited_at"])
    op.create_table(
        "turns",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(255), sa.ForeignKey("calls.call_id", ondelete="CASCADE"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("caller_text", sa.Text),
        sa.Column("agent_text", sa.Text, nullable=False),
        sa.Column("barged_in", sa.Boolean, nullable=False),
        sa.Column("endpoint_rule", sa.String(32)),
        sa.Column("latencies", sa.JSON, nullable=False),
        sa.Column("dtmf", sa.String(255), nullable=False),
        sa.Column("tools", sa.JSON, nullable=False),
        sa.UniqueConstraint("call_id", "seq", name="uq_turns_call_seq"),
    )
    op.create_index("ix_turns_call_id", "turns", ["call_id"])


def downgrade() -> None:
    op.drop_table("turns")
    op.drop_table("calls")
