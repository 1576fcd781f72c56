"""outbound: answering-machine verdicts and outcomes on calls; campaigns; do-not-call

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("amd_verdict", sa.String(16)))
        batch.add_column(sa.Column("amd_reason", sa.String(64)))
        batch.add_column(sa.Column("amd_seconds", sa.Float))
        batch.add_column(sa.Column("outcome", sa.String(32)))
        batch.add_column(sa.Column("campaign", sa.String(255)))
    op.create_index("ix_calls_outcome", "calls", ["outcome"])
    op.create_index("ix_calls_campaign", "calls", ["campaign"])
    op.create_table(
        "campaigns",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "campaign_callees",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("campaign", sa.String(255), sa.ForeignKey("campaigns.name", ondelete="CASCADE"), nullable=False),
        sa.Column("row", sa.Integer, nullable=False),
        sa.Column("number", sa.String(32), nullable=False),
        sa.Column("variables", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True)),
        sa.Column("outcome", sa.String(32)),
        sa.Column("last_result", sa.String(64)),
        sa.Column("last_call_id", sa.String(255)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("campaign", "number", name="uq_campaign_callee_number"),
    )
    op.create_index("ix_campaign_callees_campaign", "campaign_callees", ["campaign"])
    op.create_index("ix_campaign_callees_status", "campaign_callees", ["status"])
    op.create_table(
        "dnc",
        sa.Column("number", sa.String(32), primary_key=True),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dnc")
    op.drop_table("campaign_callees")
    op.drop_table("campaigns")
    op.drop_index("ix_calls_campaign", "calls")
    op.drop_index("ix_calls_outcome", "calls")
    with op.batch_alter_table("calls") as batch:
        for column in ("campaign", "outcome", "amd_seconds", "amd_reason", "amd_verdict"):
            batch.drop_column(column)
