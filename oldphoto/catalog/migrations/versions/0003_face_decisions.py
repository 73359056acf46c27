"""Faces: where each face was found and whether its enhanced version was applied (do no harm), and why.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("faces") as b:
        b.add_column(sa.Column("detected_on", sa.String(16), nullable=True))
        b.add_column(sa.Column("applied", sa.Boolean(), nullable=True))
        b.add_column(sa.Column("reason", sa.Text(), nullable=True))
        b.add_column(sa.Column("agreement_db", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("faces") as b:
        for name in ("agreement_db", "reason", "applied", "detected_on"):
            b.drop_column(name)
