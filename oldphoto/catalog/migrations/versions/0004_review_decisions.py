"""Curator review: decisions on results (approved / rejected with a note / reprocess with other options, the
latter queued for reprocessing), what the review app measured on a result (tone change), and the type of a
PREMIS event's agent (a reviewer is a person, the pipeline is software).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

DECISION_CHECK = "decision IN ('approved', 'rejected', 'reprocess')"


def upgrade() -> None:
    with op.batch_alter_table("events") as b:
        b.add_column(sa.Column("agent_type", sa.String(16), nullable=True))
    op.create_table(
        "review_decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("decided", sa.DateTime(timezone=True), nullable=False),
        sa.Column("queue_state", sa.String(16), nullable=True),
        sa.Column("queue_run_id", sa.String(64), nullable=True),
        sa.Column("event_identifier", sa.String(128), nullable=True),
        sa.CheckConstraint(DECISION_CHECK, name=op.f("ck_review_decisions_decision")),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name=op.f("fk_review_decisions_item_id_items")),
        sa.ForeignKeyConstraint(["result_id"], ["item_results.id"], ondelete="SET NULL",
                                name=op.f("fk_review_decisions_result_id_item_results")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_decisions")),
    )
    op.create_index(op.f("ix_review_decisions_item_id_decided"), "review_decisions", ["item_id", "decided"])
    op.create_index(op.f("ix_review_decisions_result_id"), "review_decisions", ["result_id"])
    op.create_index(op.f("ix_review_decisions_decision_queue_state"), "review_decisions",
                    ["decision", "queue_state"])
    op.create_table(
        "review_metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=False),
        sa.Column("tone_change", sa.Float(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("prepared", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["result_id"], ["item_results.id"], ondelete="CASCADE",
                                name=op.f("fk_review_metrics_result_id_item_results")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_metrics")),
        sa.UniqueConstraint("result_id", name=op.f("uq_review_metrics_result_id")),
    )


def downgrade() -> None:
    op.drop_table("review_metrics")
    op.drop_table("review_decisions")
    with op.batch_alter_table("events") as b:
        b.drop_column("agent_type")
