"""Add provider_batches, the Batch API jobs of runs, and calls.batch_id.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_batches",
        sa.Column("batch_id", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("step", sa.String(200), nullable=False),
        sa.Column("deployment", sa.String(200), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("input_file_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("collected", sa.Boolean, nullable=False),
        sa.Column("row_count", sa.Integer, nullable=False),
        sa.Column("rows", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.Column("output_file_id", sa.String(64)),
        sa.Column("error_file_id", sa.String(64)),
        sa.Column("request_counts", sa.JSON),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_provider_batches_run_step", "provider_batches", ["run_id", "step"])
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("batch_id", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("batch_id")
    op.drop_index("ix_provider_batches_run_step", table_name="provider_batches")
    op.drop_table("provider_batches")
