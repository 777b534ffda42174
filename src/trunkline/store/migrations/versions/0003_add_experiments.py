"""Add experiments and experiment_rows, read by score-based downgrades.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("experiment_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200)),
        sa.Column("task", sa.String(200), nullable=False),
        sa.Column("route", sa.String(200)),
        sa.Column("deployment", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200)),
        sa.Column("prompt_name", sa.String(200)),
        sa.Column("prompt_version", sa.String(64)),
        sa.Column("dataset_name", sa.String(200)),
        sa.Column("dataset_hash", sa.String(64), nullable=False),
        sa.Column("golden", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("row_count", sa.Integer, nullable=False),
        sa.Column("mean_score", sa.Float),
        sa.Column("ci_low", sa.Float),
        sa.Column("ci_high", sa.Float),
        sa.Column("cost_usd", sa.Float),
        sa.Column("latency_p50_ms", sa.Float),
        sa.Column("latency_p95_ms", sa.Float),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.Column("details", sa.JSON, nullable=False),
    )
    op.create_index("ix_experiments_task", "experiments", ["task", "deployment"])
    op.create_table(
        "experiment_rows",
        sa.Column("experiment_id", sa.String(64), primary_key=True),
        sa.Column("row_key", sa.String(200), primary_key=True),
        sa.Column("repeat", sa.Integer, primary_key=True),
        sa.Column("inputs", sa.JSON, nullable=False),
        sa.Column("expected", sa.JSON),
        sa.Column("output", sa.JSON),
        sa.Column("score", sa.Float),
        sa.Column("explanation", sa.Text),
        sa.Column("call_id", sa.String(32)),
        sa.Column("cost_usd", sa.Float),
        sa.Column("latency_ms", sa.Float),
        sa.Column("error", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("experiment_rows")
    op.drop_index("ix_experiments_task", table_name="experiments")
    op.drop_table("experiments")
