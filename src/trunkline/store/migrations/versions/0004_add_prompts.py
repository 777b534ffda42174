"""Add the prompt registry: prompt_versions, prompt_labels and prompt_label_moves.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prompt_versions",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("messages", sa.JSON, nullable=False),
        sa.Column("variables", sa.JSON, nullable=False),
        sa.Column("output_schema", sa.JSON),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("parent_version", sa.Integer),
        sa.Column("author", sa.String(200)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_prompt_versions_hash", "prompt_versions", ["name", "content_hash"])
    op.create_table(
        "prompt_labels",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("label", sa.String(100), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("moved_by", sa.String(200)),
        sa.Column("moved_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "prompt_label_moves",
        sa.Column("move_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("from_version", sa.Integer),
        sa.Column("to_version", sa.Integer, nullable=False),
        sa.Column("moved_by", sa.String(200)),
        sa.Column("moved_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_prompt_label_moves_name", "prompt_label_moves", ["name", "label"])


def downgrade() -> None:
    op.drop_index("ix_prompt_label_moves_name", table_name="prompt_label_moves")
    op.drop_table("prompt_label_moves")
    op.drop_table("prompt_labels")
    op.drop_index("ix_prompt_versions_hash", table_name="prompt_versions")
    op.drop_table("prompt_versions")
