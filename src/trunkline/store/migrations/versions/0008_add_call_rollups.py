"""Add daily and hourly rollups of calls for the dashboard, filled from the stored calls.

Also indexes calls by session, for the dashboard's call list. The backfill
runs the writer's own rollup code, so the sums it stores are the ones the
writer would have added call by call.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from trunkline.store.rollups import rebuild_rollups

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# The histogram's bounds when this revision was written; a later change of
# bounds needs a revision of its own.
_LATENCY_BOUNDS_MS = (
    5,
    10,
    20,
    35,
    50,
    75,
    100,
    150,
    200,
    300,
    500,
    750,
    1000,
    1500,
    2000,
    3000,
    5000,
    7500,
    10000,
    15000,
    30000,
    60000,
    120000,
)


def _sums() -> list[sa.Column]:
    names = [f"latency_le_{bound}ms" for bound in _LATENCY_BOUNDS_MS]
    names.append(f"latency_gt_{_LATENCY_BOUNDS_MS[-1]}ms")
    return [
        sa.Column("calls", sa.BigInteger, nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("cache_read_tokens", sa.BigInteger, nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("unpriced_calls", sa.BigInteger, nullable=False),
        sa.Column("retries", sa.BigInteger, nullable=False),
        sa.Column("fallbacks", sa.BigInteger, nullable=False),
        sa.Column("latency_ms_sum", sa.Float, nullable=False),
        *(sa.Column(name, sa.BigInteger, nullable=False) for name in names),
    ]


def upgrade() -> None:
    op.create_index("ix_calls_session_started", "calls", ["session_id", "started_at"])
    op.create_table(
        "call_rollups_daily",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("route", sa.String(200), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("api_key_id", sa.String(32), primary_key=True),
        sa.Column("workflow", sa.String(200), primary_key=True),
        sa.Column("outcome", sa.String(16), primary_key=True),
        *_sums(),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "call_rollups_hourly",
        sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("outcome", sa.String(16), primary_key=True),
        *_sums(),
        sqlite_with_rowid=False,
    )
    rebuild_rollups(op.get_bind())


def downgrade() -> None:
    op.drop_table("call_rollups_hourly")
    op.drop_table("call_rollups_daily")
    op.drop_index("ix_calls_session_started", "calls")
