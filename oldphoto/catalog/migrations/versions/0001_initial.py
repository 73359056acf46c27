"""Initial catalog schema: collections, runs, items, item results, stage results and their checkpoints,
artefacts, masks, faces, PREMIS events.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUS_CHECK = "status IN ('pending', 'running', 'done', 'failed', 'skipped')"


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _result_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["result_id"], ["item_results.id"], ondelete="CASCADE",
                                   name=op.f(f"fk_{table}_result_id_item_results"))


def upgrade() -> None:
    op.create_table(
        "collections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        _ts("created"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collections")),
        sa.UniqueConstraint("name", name=op.f("uq_collections_name")),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("oldphoto_version", sa.String(64), nullable=False),
        _ts("started"),
        _ts("finished", nullable=True),
        sa.Column("n_items", sa.Integer(), nullable=True),
        sa.Column("n_done", sa.Integer(), nullable=True),
        sa.Column("n_failed", sa.Integer(), nullable=True),
        sa.Column("n_skipped", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index(op.f("ix_runs_flow_run_id"), "runs", ["flow_run_id"])
    op.create_table(
        "items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("source_uri", sa.String(2048), nullable=False),
        sa.Column("name", sa.String(1024), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("mode", sa.String(16), nullable=True),
        sa.Column("format", sa.String(32), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_run_id", sa.String(64), nullable=True),
        _ts("created"),
        _ts("updated"),
        sa.CheckConstraint(STATUS_CHECK, name=op.f("ck_items_status")),
        sa.ForeignKeyConstraint(["collection_id"], ["collections.id"], name=op.f("fk_items_collection_id_collections")),
        sa.ForeignKeyConstraint(["last_run_id"], ["runs.id"], name=op.f("fk_items_last_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_items")),
        sa.UniqueConstraint("collection_id", "source_uri", name=op.f("uq_items_collection_id_source_uri")),
    )
    op.create_index(op.f("ix_items_sha256"), "items", ["sha256"])
    op.create_index(op.f("ix_items_status_updated"), "items", ["status", "updated"])
    op.create_table(
        "item_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("input_sha256", sa.String(64), nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _ts("started", nullable=True),
        _ts("finished", nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("mask_coverage", sa.Float(), nullable=True),
        sa.Column("n_faces", sa.Integer(), nullable=False),
        sa.Column("oldphoto_version", sa.String(64), nullable=True),
        sa.Column("provenance", sa.JSON(), nullable=True),
        _ts("recorded"),
        sa.CheckConstraint(STATUS_CHECK, name=op.f("ck_item_results_status")),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name=op.f("fk_item_results_item_id_items")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_item_results_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_item_results")),
        sa.UniqueConstraint("item_id", "run_id", name=op.f("uq_item_results_item_id_run_id")),
    )
    op.create_index(op.f("ix_item_results_input_sha256_fingerprint_status"), "item_results",
                    ["input_sha256", "fingerprint", "status"])
    op.create_index(op.f("ix_item_results_run_id_status"), "item_results", ["run_id", "status"])
    op.create_table(
        "stage_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _result_fk("stage_results"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stage_results")),
        sa.UniqueConstraint("result_id", "stage", name=op.f("uq_stage_results_result_id_stage")),
    )
    op.create_table(
        "stage_checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("file", sa.String(1024), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["result_id", "stage"], ["stage_results.result_id", "stage_results.stage"],
                                ondelete="CASCADE", name=op.f("fk_stage_checkpoints_result_id_stage_results")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stage_checkpoints")),
        sa.UniqueConstraint("result_id", "stage", "name", name=op.f("uq_stage_checkpoints_result_id_stage_name")),
    )
    op.create_index(op.f("ix_stage_checkpoints_sha256"), "stage_checkpoints", ["sha256"])
    op.create_table(
        "artefacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("uri", sa.String(2048), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=False),
        _result_fk("artefacts"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artefacts")),
        sa.UniqueConstraint("result_id", "uri", name=op.f("uq_artefacts_result_id_uri")),
    )
    op.create_index(op.f("ix_artefacts_sha256"), "artefacts", ["sha256"])
    op.create_table(
        "masks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=False),
        sa.Column("uri", sa.String(2048), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("coverage", sa.Float(), nullable=False),
        _result_fk("masks"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_masks")),
        sa.UniqueConstraint("result_id", name=op.f("uq_masks_result_id")),
    )
    op.create_table(
        "faces",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=False),
        sa.Column("face_index", sa.Integer(), nullable=False),
        sa.Column("left", sa.Integer(), nullable=False),
        sa.Column("top", sa.Integer(), nullable=False),
        sa.Column("right", sa.Integer(), nullable=False),
        sa.Column("bottom", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("landmarks", sa.JSON(), nullable=False),
        _result_fk("faces"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_faces")),
        sa.UniqueConstraint("result_id", "face_index", name=op.f("uq_faces_result_id_face_index")),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("identifier", sa.String(128), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        _ts("date_time", nullable=True),
        sa.Column("agent_name", sa.String(128), nullable=False),
        sa.Column("agent_version", sa.String(64), nullable=False),
        sa.Column("checkpoints", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("outcome_detail", sa.Text(), nullable=True),
        sa.Column("source_objects", sa.JSON(), nullable=False),
        sa.Column("outcome_objects", sa.JSON(), nullable=False),
        _result_fk("events"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("result_id", "seq", name=op.f("uq_events_result_id_seq")),
    )
    op.create_index(op.f("ix_events_event_type_date_time"), "events", ["event_type", "date_time"])


def downgrade() -> None:
    for table in ("events", "faces", "masks", "artefacts", "stage_checkpoints", "stage_results", "item_results",
                  "items", "runs", "collections"):
        op.drop_table(table)
