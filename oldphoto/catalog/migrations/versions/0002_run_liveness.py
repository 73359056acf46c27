"""Run liveness: a run's state (running / finished / aborted), why it ended that way, the host and process
that run it and its last heartbeat, so a run whose process died is closed as `aborted` by the next run.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("state", sa.String(16), nullable=True))
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("host", sa.String(255), nullable=True))
        batch.add_column(sa.Column("pid", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("heartbeat", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE runs SET state = CASE WHEN finished IS NULL THEN 'running' ELSE 'finished' END")


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for col in ("heartbeat", "pid", "host", "reason", "state"):
            batch.drop_column(col)
