"""Add run_rows.details: how a row's steps decided, such as which cascade stage answered.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run_rows") as batch:
        batch.add_column(sa.Column("details", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("run_rows") as batch:
        batch.drop_column("details")
