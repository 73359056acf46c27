"""The catalog schema: SQLAlchemy Core tables on one `metadata`. The Alembic migrations in
`oldphoto/catalog/migrations` create exactly these tables; `tests/test_catalog.py` checks that they never drift
apart. The catalog reads and writes them with Core statements only (no ORM); what it hands back are the plain
dataclasses of `catalog.records`.

Identity: an *item* is one source file of one collection, identified by its source URI within the collection
(`items.collection_id, items.source_uri` is unique). The sha256 of the bytes last seen is recorded on the item;
a re-scan with changed bytes keeps the item and bumps `items.version`. Every processing of an item in a run is
one *result* (`item_results`, unique per item and run; re-recording the same item/run replaces it), carrying
the input sha256 actually processed, the run's fingerprint (weights + parameters), and below it the stage
results, artefacts, mask, faces and PREMIS events of that attempt.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (JSON, BigInteger, Boolean, CheckConstraint, Column, DateTime, Float, ForeignKey,
                        ForeignKeyConstraint, Index, Integer, MetaData, String, Table, Text, UniqueConstraint)
from sqlalchemy.types import TypeDecorator

from oldphoto.provenance import ITEM_STATUSES

STATUS_CHECK = "status IN (" + ", ".join(f"'{s}'" for s in ITEM_STATUSES) + ")"
DECISIONS = ("approved", "rejected", "reprocess")
DECISION_CHECK = "decision IN (" + ", ".join(f"'{d}'" for d in DECISIONS) + ")"
QUEUE_STATES = ("queued", "taken", "done")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC timestamp on every backend (SQLite stores it naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            value = parse_time(value)
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def parse_time(value: str | datetime | None) -> datetime | None:
    """ISO 8601 text or datetime -> aware UTC datetime (naive input is taken as UTC)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _id() -> Column:
    return Column("id", Integer, primary_key=True)


def _result_id(ondelete: str = "CASCADE") -> Column:
    return Column("result_id", ForeignKey("item_results.id", ondelete=ondelete), nullable=False)


# A named set of items (an archive, a box, a scanning campaign).
coll_t = Table(
    "collections", metadata,
    _id(),
    Column("name", String(255), nullable=False, unique=True),
    Column("description", Text),
    Column("created", UTCDateTime, nullable=False),
)

# One processing run (a night's batch, a CLI invocation, a Prefect flow run).
runs_t = Table(
    "runs", metadata,
    Column("id", String(64), primary_key=True),
    Column("flow_run_id", String(64), index=True),
    Column("parameters", JSON, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("oldphoto_version", String(64), nullable=False),
    Column("started", UTCDateTime, nullable=False),
    Column("finished", UTCDateTime),
    Column("n_items", Integer),
    Column("n_done", Integer),
    Column("n_failed", Integer),
    Column("n_skipped", Integer),
    Column("state", String(16)),             # running | finished | aborted
    Column("reason", Text),                  # why it was aborted; failures of a finished run
    Column("host", String(255)),             # where its driver runs
    Column("pid", Integer),
    Column("heartbeat", UTCDateTime),        # last sign of life of the driver
)

# One source photograph of a collection (identity: source URI within the collection).
items_t = Table(
    "items", metadata,
    _id(),
    Column("collection_id", ForeignKey("collections.id"), nullable=False),
    Column("source_uri", String(2048), nullable=False),
    Column("name", String(1024), nullable=False),
    Column("sha256", String(64)),
    Column("bytes", BigInteger),
    Column("width", Integer),
    Column("height", Integer),
    Column("mode", String(16)),
    Column("format", String(32)),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_error", Text),
    Column("last_run_id", ForeignKey("runs.id")),
    Column("created", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
    UniqueConstraint("collection_id", "source_uri"),
    CheckConstraint(STATUS_CHECK, name="status"),
    Index(None, "status", "updated"),
    Index(None, "sha256"),
)

# One attempt: what one run did to one item (the provenance record, verbatim and in summary).
results_t = Table(
    "item_results", metadata,
    _id(),
    Column("item_id", ForeignKey("items.id"), nullable=False),
    Column("run_id", ForeignKey("runs.id"), nullable=False),
    Column("input_sha256", String(64)),
    Column("fingerprint", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("error", Text),
    Column("started", UTCDateTime),
    Column("finished", UTCDateTime),
    Column("seconds", Float),
    Column("mask_coverage", Float),
    Column("n_faces", Integer, nullable=False),
    Column("oldphoto_version", String(64)),
    Column("provenance", JSON),
    Column("recorded", UTCDateTime, nullable=False),
    UniqueConstraint("item_id", "run_id"),
    CheckConstraint(STATUS_CHECK, name="status"),
    Index(None, "input_sha256", "fingerprint", "status"),
    Index(None, "run_id", "status"),
)

stages_t = Table(
    "stage_results", metadata,
    _id(),
    _result_id(),
    Column("position", Integer, nullable=False),
    Column("stage", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("seconds", Float, nullable=False),
    Column("device", String(64), nullable=False),
    Column("error", Text),
    UniqueConstraint("result_id", "stage"),
)

# A model checkpoint a stage used (logical name, file and its sha256).
ckpt_t = Table(
    "stage_checkpoints", metadata,
    _id(),
    Column("result_id", Integer, nullable=False),
    Column("stage", String(64), nullable=False),
    Column("name", String(128), nullable=False),
    Column("file", String(1024), nullable=False),
    Column("sha256", String(64), nullable=False),
    UniqueConstraint("result_id", "stage", "name"),
    ForeignKeyConstraint(["result_id", "stage"], ["stage_results.result_id", "stage_results.stage"],
                         ondelete="CASCADE"),
    Index(None, "sha256"),
)

# An output file: restored image, mask, face crops, review sheet, provenance.json.
arts_t = Table(
    "artefacts", metadata,
    _id(),
    _result_id(),
    Column("kind", String(32), nullable=False),
    Column("uri", String(2048), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("extra", JSON, nullable=False),
    UniqueConstraint("result_id", "uri"),
    Index(None, "sha256"),
)

# The scratch mask of an attempt and the fraction of pixels it marks as defect.
masks_t = Table(
    "masks", metadata,
    _id(),
    _result_id(),
    Column("uri", String(2048)),
    Column("sha256", String(64)),
    Column("coverage", Float, nullable=False),
    UniqueConstraint("result_id"),
)

# A detected face: box [left, top, right, bottom] in input pixels, score, 5 landmarks; where it was found
# ("restored" stage-1 output or "input" scan) and whether the enhanced face was applied, why, and its
# low-frequency agreement with the scan (dB).
faces_t = Table(
    "faces", metadata,
    _id(),
    _result_id(),
    Column("face_index", Integer, nullable=False),
    Column("left", Integer, nullable=False),
    Column("top", Integer, nullable=False),
    Column("right", Integer, nullable=False),
    Column("bottom", Integer, nullable=False),
    Column("score", Float),
    Column("landmarks", JSON, nullable=False),
    Column("detected_on", String(16)),
    Column("applied", Boolean),
    Column("reason", Text),
    Column("agreement_db", Float),
    UniqueConstraint("result_id", "face_index"),
)

# A PREMIS event: type, date-time, agent (software + version + checkpoints), outcome, linked objects.
events_t = Table(
    "events", metadata,
    _id(),
    _result_id(),
    Column("seq", Integer, nullable=False),
    Column("identifier", String(128), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    Column("date_time", UTCDateTime),
    Column("agent_name", String(128), nullable=False),
    Column("agent_version", String(64), nullable=False),
    Column("checkpoints", JSON, nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("outcome_detail", Text),
    Column("source_objects", JSON, nullable=False),
    Column("outcome_objects", JSON, nullable=False),
    Column("agent_type", String(16)),        # None: software; "person": a reviewer
    UniqueConstraint("result_id", "seq"),
    Index(None, "event_type", "date_time"),
)

# A curator's decision on one result (the attempt they looked at): approved, rejected (with a note), or
# reprocess with other options (`options`, RestoreOptions fields), which queues the item (`queue_state`
# queued -> taken -> done, `queue_run_id` the run that did it). The newest decision of an item is its review
# state; every decision is also a PREMIS event (`event_identifier`) with the reviewer as agent.
decisions_t = Table(
    "review_decisions", metadata,
    _id(),
    Column("item_id", ForeignKey("items.id"), nullable=False),
    Column("result_id", ForeignKey("item_results.id", ondelete="SET NULL")),
    Column("run_id", String(64)),
    Column("decision", String(16), nullable=False),
    Column("note", Text),
    Column("options", JSON, nullable=False),
    Column("reviewer", String(128), nullable=False),
    Column("decided", UTCDateTime, nullable=False),
    Column("queue_state", String(16)),
    Column("queue_run_id", String(64)),
    Column("event_identifier", String(128)),
    CheckConstraint(DECISION_CHECK, name="decision"),
    Index(None, "item_id", "decided"),
    Index(None, "result_id"),
    Index(None, "decision", "queue_state"),
)

# What the review app measured on a result when it made its review images (once per result): the mean absolute
# grey-level change between scan and restored image (0..1), and the review images' size.
metrics_t = Table(
    "review_metrics", metadata,
    _id(),
    _result_id(),
    Column("tone_change", Float),
    Column("width", Integer),
    Column("height", Integer),
    Column("prepared", UTCDateTime, nullable=False),
    UniqueConstraint("result_id"),
)

TABLES_IN_ORDER = [coll_t, runs_t, items_t, results_t, stages_t, ckpt_t, arts_t, masks_t, faces_t, events_t,
                   decisions_t, metrics_t]
CHILD_TABLES = (ckpt_t, stages_t, arts_t, masks_t, faces_t, events_t)   # delete order
