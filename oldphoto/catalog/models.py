"""The catalog schema (SQLAlchemy 2 ORM). The Alembic migrations in `oldphoto/catalog/migrations` create
exactly these tables; `tests/test_catalog.py` checks that they never drift apart.

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

from sqlalchemy import (JSON, BigInteger, Boolean, CheckConstraint, DateTime, Float, ForeignKey, ForeignKeyConstraint, Index, Integer,
                        MetaData, String, Text, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from oldphoto.provenance import ITEM_STATUSES

STATUS_CHECK = "status IN (" + ", ".join(f"'{s}'" for s in ITEM_STATUSES) + ")"

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


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


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Collection(Base):
    """A named set of items (an archive, a box, a scanning campaign)."""

    __tablename__ = "collections"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(UTCDateTime)


class Run(Base):
    """One processing run (a night's batch, a CLI invocation, a Prefect flow run)."""

    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    fingerprint: Mapped[str] = mapped_column(String(64))
    oldphoto_version: Mapped[str] = mapped_column(String(64))
    started: Mapped[datetime] = mapped_column(UTCDateTime)
    finished: Mapped[datetime | None] = mapped_column(UTCDateTime)
    n_items: Mapped[int | None] = mapped_column(Integer)
    n_done: Mapped[int | None] = mapped_column(Integer)
    n_failed: Mapped[int | None] = mapped_column(Integer)
    n_skipped: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str | None] = mapped_column(String(16))        # running | finished | aborted
    reason: Mapped[str | None] = mapped_column(Text)             # why it was aborted; failures of a finished run
    host: Mapped[str | None] = mapped_column(String(255))        # where its driver runs
    pid: Mapped[int | None] = mapped_column(Integer)
    heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime)   # last sign of life of the driver


class Item(Base):
    """One source photograph of a collection (identity: source URI within the collection)."""

    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("collection_id", "source_uri"),
                      CheckConstraint(STATUS_CHECK, name="status"),
                      Index(None, "status", "updated"),
                      Index(None, "sha256"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id"))
    source_uri: Mapped[str] = mapped_column(String(2048))
    name: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str | None] = mapped_column(String(64))
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    mode: Mapped[str | None] = mapped_column(String(16))
    format: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    updated: Mapped[datetime] = mapped_column(UTCDateTime)


class ItemResult(Base):
    """One attempt: what one run did to one item (the provenance record, verbatim and in summary)."""

    __tablename__ = "item_results"
    __table_args__ = (UniqueConstraint("item_id", "run_id"),
                      CheckConstraint(STATUS_CHECK, name="status"),
                      Index(None, "input_sha256", "fingerprint", "status"),
                      Index(None, "run_id", "status"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    input_sha256: Mapped[str | None] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    started: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished: Mapped[datetime | None] = mapped_column(UTCDateTime)
    seconds: Mapped[float | None] = mapped_column(Float)
    mask_coverage: Mapped[float | None] = mapped_column(Float)
    n_faces: Mapped[int] = mapped_column(Integer)
    oldphoto_version: Mapped[str | None] = mapped_column(String(64))
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    recorded: Mapped[datetime] = mapped_column(UTCDateTime)


class StageResult(Base):
    __tablename__ = "stage_results"
    __table_args__ = (UniqueConstraint("result_id", "stage"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("item_results.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    stage: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    seconds: Mapped[float] = mapped_column(Float)
    device: Mapped[str] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)


class StageCheckpoint(Base):
    """A model checkpoint a stage used (logical name, file and its sha256)."""

    __tablename__ = "stage_checkpoints"
    __table_args__ = (UniqueConstraint("result_id", "stage", "name"),
                      ForeignKeyConstraint(["result_id", "stage"], ["stage_results.result_id", "stage_results.stage"],
                                           ondelete="CASCADE"),
                      Index(None, "sha256"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(Integer)
    stage: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    file: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64))


class Artefact(Base):
    """An output file: restored image, mask, face crops, review sheet, provenance.json."""

    __tablename__ = "artefacts"
    __table_args__ = (UniqueConstraint("result_id", "uri"), Index(None, "sha256"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("item_results.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    uri: Mapped[str] = mapped_column(String(2048))
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON)


class Mask(Base):
    """The scratch mask of an attempt and the fraction of pixels it marks as defect."""

    __tablename__ = "masks"
    __table_args__ = (UniqueConstraint("result_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("item_results.id", ondelete="CASCADE"))
    uri: Mapped[str | None] = mapped_column(String(2048))
    sha256: Mapped[str | None] = mapped_column(String(64))
    coverage: Mapped[float] = mapped_column(Float)


class Face(Base):
    """A detected face: box [left, top, right, bottom] in input pixels, score, 5 landmarks; where it was found
    ("restored" stage-1 output or "input" scan) and whether the enhanced face was applied, why, and its
    low-frequency agreement with the scan (dB)."""

    __tablename__ = "faces"
    __table_args__ = (UniqueConstraint("result_id", "face_index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("item_results.id", ondelete="CASCADE"))
    face_index: Mapped[int] = mapped_column(Integer)
    left: Mapped[int] = mapped_column(Integer)
    top: Mapped[int] = mapped_column(Integer)
    right: Mapped[int] = mapped_column(Integer)
    bottom: Mapped[int] = mapped_column(Integer)
    score: Mapped[float | None] = mapped_column(Float)
    landmarks: Mapped[list[list[float]]] = mapped_column(JSON)
    detected_on: Mapped[str | None] = mapped_column(String(16))
    applied: Mapped[bool | None] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)
    agreement_db: Mapped[float | None] = mapped_column(Float)


class Event(Base):
    """A PREMIS event: type, date-time, agent (software + version + checkpoints), outcome, linked objects."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("result_id", "seq"), Index(None, "event_type", "date_time"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("item_results.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    identifier: Mapped[str] = mapped_column(String(128))
    event_type: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)
    date_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    agent_name: Mapped[str] = mapped_column(String(128))
    agent_version: Mapped[str] = mapped_column(String(64))
    checkpoints: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    outcome: Mapped[str] = mapped_column(String(32))
    outcome_detail: Mapped[str | None] = mapped_column(Text)
    source_objects: Mapped[list[str]] = mapped_column(JSON)
    outcome_objects: Mapped[list[str]] = mapped_column(JSON)
    agent_type: Mapped[str | None] = mapped_column(String(16))     # None: software; "person": a reviewer


DECISIONS = ("approved", "rejected", "reprocess")
DECISION_CHECK = "decision IN (" + ", ".join(f"'{d}'" for d in DECISIONS) + ")"
QUEUE_STATES = ("queued", "taken", "done")


class ReviewDecision(Base):
    """A curator's decision on one result (the attempt they looked at): approved, rejected (with a note), or
    reprocess with other options (`options`, RestoreOptions fields), which queues the item (`queue_state`
    queued -> taken -> done, `queue_run_id` the run that did it). The newest decision of an item is its
    review state; every decision is also a PREMIS event (`event_identifier`) with the reviewer as agent."""

    __tablename__ = "review_decisions"
    __table_args__ = (CheckConstraint(DECISION_CHECK, name="decision"),
                      Index(None, "item_id", "decided"),
                      Index(None, "result_id"),
                      Index(None, "decision", "queue_state"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    result_id: Mapped[int | None] = mapped_column(ForeignKey("item_results.id", ondelete="SET NULL"))
    run_id: Mapped[str | None] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    reviewer: Mapped[str] = mapped_column(String(128))
    decided: Mapped[datetime] = mapped_column(UTCDateTime)
    queue_state: Mapped[str | None] = mapped_column(String(16))
    queue_run_id: Mapped[str | None] = mapped_column(String(64))
    event_identifier: Mapped[str | None] = mapped_column(String(128))


class ReviewMetrics(Base):
    """What the review app measured on a result when it made its review images (once per result): the mean
    absolute grey-level change between scan and restored image (0..1), and the review images' size."""

    __tablename__ = "review_metrics"
    __table_args__ = (UniqueConstraint("result_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("item_results.id", ondelete="CASCADE"))
    tone_change: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    prepared: Mapped[datetime] = mapped_column(UTCDateTime)


TABLES_IN_ORDER = [Collection.__table__, Run.__table__, Item.__table__, ItemResult.__table__, StageResult.__table__,
                   StageCheckpoint.__table__, Artefact.__table__, Mask.__table__, Face.__table__, Event.__table__,
                   ReviewDecision.__table__, ReviewMetrics.__table__]
