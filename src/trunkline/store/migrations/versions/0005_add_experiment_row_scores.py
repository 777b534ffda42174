"""Add experiment_rows.scores, every scorer's value and explanation for a row.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("experiment_rows") as batch:
        batch.add_column(sa.Column("scores", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("experiment_rows") as batch:
        batch.drop_column("scores")
