"""Add conversation memory: the messages of each session, and the summary of the ones trimmed.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversation_messages",
        sa.Column("session_id", sa.String(64), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("tool_call_id", sa.String(200)),
        sa.Column("tool_calls", sa.JSON),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "conversation_summaries",
        sa.Column("session_id", sa.String(64), primary_key=True),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("through_position", sa.Integer, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("conversation_summaries")
    op.drop_table("conversation_messages")
