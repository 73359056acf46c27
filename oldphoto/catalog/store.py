"""`Catalog`: the SQL record of every item, run and result (SQLite by default, PostgreSQL for shared use).

Writes are batched upserts (`INSERT ... ON CONFLICT DO UPDATE` on both backends) in one transaction per batch,
taking row locks in a fixed order (items by source URI, then their results), so concurrent writers never
duplicate or lose rows and do not deadlock; a transaction that still fails with a deadlock / serialization /
"database is locked" error is retried. SQLite runs in WAL mode with a busy timeout, and write transactions
start with BEGIN IMMEDIATE so two writers never both hold a read lock and wait for each other.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from operator import itemgetter
import random
import socket
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from sqlalchemy import JSON, case, create_engine, delete, event, func, select, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from oldphoto import __version__
from oldphoto.catalog import models as m
from oldphoto.catalog.models import parse_time, utcnow
from oldphoto.catalog.premis import events_for
from oldphoto.provenance import ITEM_STATUSES, InputRecord, ItemProvenance

DEFAULT_URL = "sqlite:///./oldphoto-catalog.sqlite"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BATCH = 400          # items per write transaction
# a run's driver writes a heartbeat every HEARTBEAT_S; one silent for STALE_AFTER_S is taken for dead
HEARTBEAT_S = float(os.environ.get("OLDPHOTO_HEARTBEAT_S", "30"))
STALE_AFTER_S = 4 * HEARTBEAT_S
T = TypeVar("T")

items_t = m.Item.__table__
results_t = m.ItemResult.__table__
runs_t = m.Run.__table__
coll_t = m.Collection.__table__
stages_t = m.StageResult.__table__
ckpt_t = m.StageCheckpoint.__table__
arts_t = m.Artefact.__table__
masks_t = m.Mask.__table__
faces_t = m.Face.__table__
events_t = m.Event.__table__
CHILD_TABLES = (ckpt_t, stages_t, arts_t, masks_t, faces_t, events_t)   # delete order


class CatalogError(RuntimeError):
    """A catalog problem explained for the operator (bad URL, not initialised, unknown run or item)."""


def default_url() -> str:
    return os.environ.get("OLDPHOTO_CATALOG") or DEFAULT_URL


def normalise_url(url: str) -> str:
    """`postgresql://` and `postgres://` mean psycopg 3 (the driver we ship), not psycopg2."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def fingerprint(parameters: dict[str, Any] | None = None, checkpoints: Iterable[Any] = ()) -> str:
    """The sha256 of the restoration parameters and the weights used: two runs with the same fingerprint
    produce the same result for the same input bytes. `checkpoints`: CheckpointRef-like objects (.name,
    .sha256), (name, sha256) pairs, or sha256 strings."""
    ck = []
    for c in checkpoints:
        if isinstance(c, str):
            ck.append(["", c])
        elif isinstance(c, (tuple, list)):
            ck.append([str(c[0]), str(c[1])])
        else:
            ck.append([str(c.name), str(c.sha256)])
    blob = json.dumps({"parameters": parameters or {}, "checkpoints": sorted(ck)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class ItemInfo:
    id: int
    collection: str
    source_uri: str
    name: str
    sha256: str | None
    bytes: int | None
    width: int | None
    height: int | None
    mode: str | None
    format: str | None
    status: str
    attempts: int
    version: int
    last_error: str | None
    last_run_id: str | None
    created: datetime
    updated: datetime

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunInfo:
    id: str
    flow_run_id: str | None
    parameters: dict[str, Any]
    fingerprint: str
    oldphoto_version: str
    started: datetime
    finished: datetime | None
    n_items: int | None
    n_done: int | None
    n_failed: int | None
    n_skipped: int | None
    state: str | None = None          # running | finished | aborted
    reason: str | None = None
    host: str | None = None
    pid: int | None = None
    heartbeat: datetime | None = None


@dataclass
class Attempt:
    """What one run did to the item."""

    run_id: str
    flow_run_id: str | None
    status: str
    error: str | None
    input: dict[str, Any]
    fingerprint: str
    started: datetime | None
    finished: datetime | None
    seconds: float | None
    mask_coverage: float | None
    oldphoto_version: str | None
    recorded: datetime
    stages: list[dict[str, Any]] = field(default_factory=list)      # with "checkpoints": [...]
    artefacts: list[dict[str, Any]] = field(default_factory=list)
    faces: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    provenance: ItemProvenance | None = None                        # the record as recorded


@dataclass
class ItemHistory:
    item: ItemInfo
    attempts: list[Attempt]                                         # oldest first


def _chunks(seq: Sequence[T], n: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _dataclass_default(obj: Any) -> Any:
    """json.dumps hook: dataclasses (the provenance records) as their fields, encoded in one C pass - the
    same JSON as `ItemProvenance.to_json()` without `dataclasses.asdict`'s deep copies."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        d = getattr(obj, "__dict__", None)
        return d if d is not None else {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


_ENCODER = json.JSONEncoder(default=_dataclass_default)


def json_dumps(obj: Any) -> str:
    """The catalog's JSON serialiser (also given to SQLAlchemy for JSON columns)."""
    return _ENCODER.encode(obj)


def _retryable(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code in ("40P01", "40001", "55P03"):
        return True
    msg = str(orig or exc).lower()
    return "database is locked" in msg or "database table is locked" in msg or "deadlock" in msg


class Catalog:
    """The provenance catalog. `url`: any SQLAlchemy URL (default $OLDPHOTO_CATALOG or
    sqlite:///./oldphoto-catalog.sqlite); `collection`: the collection new items are recorded into.
    Call `.upgrade()` once to create or migrate the schema (idempotent)."""

    def __init__(self, url: str | None = None, collection: str = "default", echo: bool = False) -> None:
        self.url = normalise_url(url or default_url())
        self.collection = collection
        try:
            parsed = make_url(self.url)
        except Exception as e:  # noqa: BLE001
            raise CatalogError(f"not a database URL: {self.url!r} ({e})") from None
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise CatalogError(f"unsupported catalog database {self.dialect!r}: use sqlite:///PATH or "
                               "postgresql+psycopg://USER@HOST/DB")
        if self.dialect == "sqlite" and parsed.database not in (None, "", ":memory:"):
            parent = Path(parsed.database).expanduser().resolve().parent
            if not parent.is_dir():
                raise CatalogError(f"folder of the SQLite catalog does not exist: {parent}")
        self.engine = self._make_engine(echo)
        self._collection_id: int | None = None
        self._checked = False
        self._run_fp: dict[str, tuple[str, str]] = {}

    def __repr__(self) -> str:
        return f"Catalog({self.engine.url.render_as_string(hide_password=True)!r})"

    # ------------------------------------------------------------------------------------------ engine
    def _make_engine(self, echo: bool) -> Engine:
        if self.dialect == "postgresql":
            return create_engine(self.url, echo=echo, pool_pre_ping=True, future=True, json_serializer=json_dumps)
        engine = create_engine(self.url, echo=echo, future=True, connect_args={"timeout": 60},
                               json_serializer=json_dumps)
        memory = make_url(self.url).database in (None, "", ":memory:")

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None      # we emit BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("oldphoto_write")
                                 else "BEGIN")

        return engine

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _write(self, fn: Callable[[Connection], T], attempts: int = 8) -> T:
        """Run fn(conn) in one write transaction, retrying on deadlock / lock timeouts."""
        for attempt in range(attempts):
            try:
                with self.engine.connect() as conn:
                    conn.execution_options(oldphoto_write=True)
                    with conn.begin():
                        return fn(conn)
            except (OperationalError, DBAPIError) as e:
                if attempt + 1 < attempts and _retryable(e):
                    time.sleep(0.05 * (2 ** attempt) * (0.5 + random.random()))
                    continue
                raise
        raise AssertionError("unreachable")

    def _read(self, fn: Callable[[Connection], T]) -> T:
        self._check()
        with self.engine.connect() as conn:
            with conn.begin():
                return fn(conn)

    def _bulk_insert(self, conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
        """Plain multi-row insert through the driver's executemany, converting values ourselves (JSON, UTC
        timestamps) - the per-row cost of SQLAlchemy's parameter processing dominated the record path."""
        if not rows:
            return
        cols = [c for c in table.c if c.name in rows[0]]
        conv = []
        for c in cols:
            if isinstance(c.type, JSON):
                conv.append(_json)
            elif isinstance(c.type, m.UTCDateTime):
                conv.append(_sqlite_time if self.dialect == "sqlite" else _pg_time)
            else:
                conv.append(None)
        names = [c.name for c in cols]
        ph = ", ".join(["?" if self.dialect == "sqlite" else "%s"] * len(cols))
        prep = self.engine.dialect.identifier_preparer
        sql = (f"INSERT INTO {prep.format_table(table)} ({', '.join(prep.quote(n) for n in names)}) "
               f"VALUES ({ph})")
        getter = itemgetter(*names)
        todo = [(i, f) for i, f in enumerate(conv) if f is not None]
        if len(names) == 1:
            data = [(getter(r),) for r in rows]
        elif not todo:
            data = [getter(r) for r in rows]
        else:
            data = []
            for r in rows:
                v = list(getter(r))
                for i, f in todo:
                    v[i] = f(v[i])
                data.append(tuple(v))
        conn.exec_driver_sql(sql, data)

    def _insert(self, table: Any) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    # ------------------------------------------------------------------------------------------ schema
    def _alembic_config(self, connection: Connection | None = None) -> Any:
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        if connection is not None:
            cfg.attributes["connection"] = connection
        return cfg

    def head_revision(self) -> str:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def _missing_sqlite_file(self) -> bool:
        """A SQLite catalog whose file does not exist yet (reading it must not create an empty one)."""
        db = make_url(self.url).database if self.dialect == "sqlite" else None
        return bool(db) and db != ":memory:" and not db.startswith("file:") and not Path(db).expanduser().exists()

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        if self._missing_sqlite_file():
            return None

        try:
            with self.engine.connect() as conn:
                return MigrationContext.configure(conn).get_current_revision()
        except OperationalError as e:
            raise CatalogError(f"cannot open the catalog {self!r}: {e.orig}") from None

    def upgrade(self, revision: str = "head") -> str:
        """Create or migrate the schema (Alembic, migrations shipped in oldphoto/catalog/migrations);
        returns the revision now current. Safe to call on an up-to-date catalog."""
        self._migrate("upgrade", revision)
        self._checked = False
        self._check()
        self._ensure_collection()
        return self.current_revision() or ""

    def downgrade(self, revision: str = "base") -> str | None:
        """Undo migrations down to `revision` ("base" drops every catalog table)."""
        self._migrate("downgrade", revision)
        self._checked = False
        self._collection_id = None
        return self.current_revision()

    def _migrate(self, direction: str, revision: str) -> None:
        from alembic import command

        attempts = 8
        for attempt in range(attempts):
            try:
                with self.engine.connect() as conn:
                    conn.execution_options(oldphoto_write=True)
                    conn.begin()
                    # one migrator at a time: SQLite's BEGIN IMMEDIATE, PostgreSQL's transaction advisory lock;
                    # a second caller then finds the schema current and does nothing
                    if self.dialect == "postgresql":
                        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(4242170001)")
                    getattr(command, direction)(self._alembic_config(conn), revision)
                    conn.commit()
                return
            except OperationalError as e:
                # SQLite can refuse at once (e.g. while another connection switches a new file to WAL):
                # back off and try again, like every other write
                if attempt + 1 < attempts and _retryable(e):
                    time.sleep(0.05 * (2 ** attempt) * (0.5 + random.random()))
                    continue
                raise CatalogError(f"cannot {direction} the catalog {self!r}: {e.orig}") from None

    def _check(self) -> None:
        if self._checked:
            return
        current, head = self.current_revision(), self.head_revision()
        if current is None and self._missing_sqlite_file():
            raise CatalogError(f"no catalog at {make_url(self.url).database} (nothing was created): check "
                               "--catalog / $OLDPHOTO_CATALOG, or create one with `oldphoto catalog init`")
        if current != head:
            how = "oldphoto catalog init" if current is None else "oldphoto catalog upgrade"
            raise CatalogError(f"the catalog {self!r} is at schema revision {current or 'none'}, this oldphoto "
                               f"needs {head}: run `{how} --url ...` (or Catalog(url).upgrade())")
        self._checked = True

    def _ensure_collection(self) -> int:
        if self._collection_id is None:
            self._check()

            def go(conn: Connection) -> int:
                conn.execute(self._insert(coll_t).values(name=self.collection, created=utcnow())
                             .on_conflict_do_nothing(index_elements=["name"]))
                return conn.execute(select(coll_t.c.id).where(coll_t.c.name == self.collection)).scalar_one()

            self._collection_id = self._write(go)
        return self._collection_id

    # ------------------------------------------------------------------------------------------ runs
    def start_run(self, parameters: dict[str, Any] | None = None, flow_run_id: str | None = None,
                  fingerprint: str | None = None, run_id: str | None = None,
                  oldphoto_version: str | None = None) -> str:
        """Open a run; returns its id. `fingerprint` (hash of weights + parameters, see
        `oldphoto.catalog.fingerprint`) is what `is_done` matches; default: the hash of `parameters` alone."""
        import uuid

        self._ensure_collection()
        run_id = run_id or uuid.uuid4().hex
        params = json.loads(json.dumps(parameters or {}, default=str))
        fp = fingerprint or _fingerprint(params)
        version = oldphoto_version or __version__
        self.close_dead_runs()
        now = utcnow()
        self._write(lambda conn: conn.execute(self._insert(runs_t).values(
            id=run_id, flow_run_id=flow_run_id, parameters=params, fingerprint=fp, oldphoto_version=version,
            started=now, state="running", host=socket.gethostname()[:255], pid=os.getpid(), heartbeat=now)
            .on_conflict_do_nothing(index_elements=["id"])))
        self._run_fp[run_id] = (fp, version)
        return run_id

    def heartbeat(self, run_id: str) -> None:
        """A sign of life of the run's driver (see `close_dead_runs`)."""
        self._write(lambda conn: conn.execute(update(runs_t).where(runs_t.c.id == run_id)
                                              .values(heartbeat=utcnow())))

    def close_dead_runs(self, stale_after: float | None = None) -> list[str]:
        """Close as `aborted`, with the reason, every open run whose driver is gone: its process no longer
        exists on this host, or (another host) no heartbeat for `stale_after` seconds (default
        HEARTBEAT_S x 4). Their items left "running" become "failed" with the same reason. Returns their ids."""
        stale_after = STALE_AFTER_S if stale_after is None else stale_after
        host, now = socket.gethostname()[:255], utcnow()
        q = select(runs_t.c.id, runs_t.c.host, runs_t.c.pid, runs_t.c.heartbeat, runs_t.c.started).where(
            runs_t.c.finished.is_(None), (runs_t.c.state == "running") | runs_t.c.state.is_(None))
        dead: dict[str, str] = {}
        for rid, rhost, pid, beat, started in self._read(lambda c: c.execute(q).all()):
            last = parse_time(beat or started)
            if rhost == host and pid and not _pid_alive(pid) and pid != os.getpid():
                dead[rid] = (f"aborted: its process (pid {pid} on {rhost}) ended without closing the run "
                             f"(killed, crashed or out of memory); last heartbeat {last.isoformat(timespec='seconds')}")
            elif last is not None and (now - last).total_seconds() > stale_after:
                dead[rid] = (f"aborted: no heartbeat from {rhost or 'its driver'} since "
                             f"{last.isoformat(timespec='seconds')} (process or machine lost)")
        for rid, reason in dead.items():
            def go(conn: Connection, rid: str = rid, reason: str = reason) -> None:
                counts = dict(conn.execute(select(results_t.c.status, func.count())
                                           .where(results_t.c.run_id == rid).group_by(results_t.c.status)).all())
                conn.execute(update(runs_t).where(runs_t.c.id == rid, runs_t.c.finished.is_(None)).values(
                    state="aborted", reason=reason, finished=now, n_items=sum(counts.values()),
                    n_done=counts.get("done", 0), n_failed=counts.get("failed", 0),
                    n_skipped=counts.get("skipped", 0)))
                conn.execute(update(items_t).where(items_t.c.last_run_id == rid, items_t.c.status == "running")
                             .values(status="failed", last_error=reason, updated=now))
                conn.execute(update(results_t).where(results_t.c.run_id == rid, results_t.c.status == "running")
                             .values(status="failed", error=reason))
            self._write(go)
        return list(dead)

    def _run(self, run_id: str) -> tuple[str, str]:
        if run_id not in self._run_fp:
            row = self._read(lambda c: c.execute(select(runs_t.c.fingerprint, runs_t.c.oldphoto_version)
                                                 .where(runs_t.c.id == run_id)).first())
            if row is None:
                raise CatalogError(f"unknown run {run_id!r}: open it with start_run() first")
            self._run_fp[run_id] = (row[0], row[1])
        return self._run_fp[run_id]

    def finish_run(self, run_id: str, skipped: int = 0, reason: str | None = None,
                   skipped_inputs: Sequence[tuple[str, str]] = ()) -> RunInfo:
        """Close a run: set its end time and its counts of items by status. `skipped_inputs`: (uri, reason) of
        the files found that are not inputs (hidden, not images, links), each recorded as an item with status
        "skipped" and its reason; `skipped`: other items the run skipped without recording a result for them
        (already done, held by another run), added to n_skipped and n_items; `reason`: a note on how it ended
        (e.g. its failures)."""
        self._run(run_id)
        if skipped_inputs:
            self.record_many([ItemProvenance(input=InputRecord(uri=uri, name=uri.rstrip("/").rsplit("/", 1)[-1]),
                                             status="skipped", error=why, run_id=run_id)
                              for uri, why in skipped_inputs], run_id)

        def go(conn: Connection) -> None:
            counts = dict(conn.execute(select(results_t.c.status, func.count()).where(results_t.c.run_id == run_id)
                                       .group_by(results_t.c.status)).all())
            conn.execute(update(runs_t).where(runs_t.c.id == run_id).values(
                finished=utcnow(), n_items=sum(counts.values()) + skipped, n_done=counts.get("done", 0),
                n_failed=counts.get("failed", 0), n_skipped=counts.get("skipped", 0) + skipped,
                state="finished", reason=reason))
            # a lease this run still holds (its item never got recorded) ends here, with the reason
            conn.execute(update(items_t).where(items_t.c.last_run_id == run_id, items_t.c.status == "running")
                         .values(status="failed", last_error="its run ended before the item was recorded",
                                 updated=utcnow()))

        self._write(go)
        return self.run(run_id)

    def run(self, run_id: str) -> RunInfo:
        row = self._read(lambda c: c.execute(select(runs_t).where(runs_t.c.id == run_id)).mappings().first())
        if row is None:
            raise CatalogError(f"unknown run {run_id!r}")
        return RunInfo(**dict(row))

    def runs(self, limit: int | None = None) -> list[RunInfo]:
        q = select(runs_t).order_by(runs_t.c.started.desc())
        if limit:
            q = q.limit(limit)
        return [RunInfo(**dict(r)) for r in self._read(lambda c: c.execute(q).mappings().all())]

    # ------------------------------------------------------------------------------------------ writing
    def record(self, prov: ItemProvenance, run_id: str) -> None:
        """Store one item's provenance for a run. Idempotent: recording the same item and run again replaces
        that attempt (its stages, artefacts, mask, faces, events), never duplicates it."""
        self.record_many([prov], run_id)

    def record_many(self, provs: Iterable[ItemProvenance], run_id: str, batch: int = BATCH) -> int:
        """Store many records in batched transactions; returns how many items were written. When one batch
        holds the same source URI twice, the last record wins."""
        fp, version = self._run(run_id)
        cid = self._ensure_collection()
        by_uri: dict[str, ItemProvenance] = {}
        for p in provs:
            by_uri[p.input.uri] = p
        ordered = [by_uri[k] for k in sorted(by_uri)]
        for chunk in _chunks(ordered, batch):
            self._write(lambda conn, chunk=chunk: self._record_chunk(conn, cid, chunk, run_id, fp, version))
        return len(ordered)

    def mark_running(self, inputs: Iterable[ItemProvenance | InputRecord], run_id: str) -> int:
        """Mark items as being processed by `run_id` (status "running", one attempt opened)."""
        provs = []
        now = utcnow().isoformat()
        for x in inputs:
            inp = x.input if isinstance(x, ItemProvenance) else x
            provs.append(ItemProvenance(input=inp, status="running", run_id=run_id, started=now))
        return self.record_many(provs, run_id)

    def claim(self, items: Sequence[tuple[str, str]], run_id: str) -> set[str]:
        """Lease items to `run_id` (their status becomes "running", `last_run_id` this run) so that concurrent
        runs compute each item once; `items`: (source URI, name) pairs. An item is not claimed while another
        open run holds it, nor when another run with the same fingerprint finished it after this run started
        (the plan of this run could not see that). Returns the source URIs this run holds. A lease ends when the
        item is recorded, or when its run is closed as aborted (`close_dead_runs`)."""
        fp, _ = self._run(run_id)
        cid = self._ensure_collection()
        started = self._read(lambda c: c.execute(select(runs_t.c.started).where(runs_t.c.id == run_id)).scalar_one())
        mine: set[str] = set()
        ordered = sorted(dict(items).items())
        for chunk in _chunks(ordered, BATCH):
            def go(conn: Connection, chunk: Sequence[tuple[str, str]] = chunk) -> set[str]:
                if self.dialect == "postgresql":        # one claimer at a time: each sees the others' leases
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(4242170002)")
                now = utcnow()
                conn.execute(self._insert(items_t).on_conflict_do_nothing(
                    index_elements=["collection_id", "source_uri"]),
                    [dict(collection_id=cid, source_uri=u, name=n, status="pending", attempts=0, version=1,
                          created=now, updated=now) for u, n in chunk])
                uris = [u for u, _ in chunk]
                other_open = select(runs_t.c.id).where(runs_t.c.state == "running", runs_t.c.id != run_id)
                same_fp = select(runs_t.c.id).where(runs_t.c.fingerprint == fp, runs_t.c.id != run_id)
                conn.execute(update(items_t).where(
                    items_t.c.collection_id == cid, items_t.c.source_uri.in_(uris),
                    ~((items_t.c.status == "running") & items_t.c.last_run_id.in_(other_open)),
                    ~((items_t.c.status == "done") & items_t.c.last_run_id.in_(same_fp)
                      & (items_t.c.updated >= started)))
                    .values(status="running", last_run_id=run_id, updated=now))
                return set(conn.execute(select(items_t.c.source_uri).where(
                    items_t.c.collection_id == cid, items_t.c.source_uri.in_(uris), items_t.c.status == "running",
                    items_t.c.last_run_id == run_id)).scalars())
            mine |= self._write(go)
        return mine

    def add_items(self, inputs: Iterable[InputRecord | str]) -> int:
        """Register items as pending (what a night's run has to do); existing items are left as they are.
        Returns how many were new."""
        cid = self._ensure_collection()
        now = utcnow()
        rows = {}
        for x in inputs:
            inp = InputRecord(uri=x, name=x.rstrip("/").rsplit("/", 1)[-1]) if isinstance(x, str) else x
            rows[inp.uri] = dict(collection_id=cid, source_uri=inp.uri, name=inp.name, sha256=inp.sha256,
                                 bytes=inp.bytes, width=inp.width, height=inp.height, mode=inp.mode,
                                 format=inp.format, status="pending", attempts=0, version=1, created=now,
                                 updated=now)
        ordered = [rows[k] for k in sorted(rows)]
        new = 0
        for chunk in _chunks(ordered, BATCH):
            def go(conn: Connection, chunk: Sequence[dict[str, Any]] = chunk) -> int:
                before = conn.execute(select(func.count()).select_from(items_t)).scalar_one()
                conn.execute(self._insert(items_t).on_conflict_do_nothing(
                    index_elements=["collection_id", "source_uri"]), list(chunk))
                return conn.execute(select(func.count()).select_from(items_t)).scalar_one() - before
            new += self._write(go)
        return new

    def _record_chunk(self, conn: Connection, cid: int, provs: Sequence[ItemProvenance], run_id: str, fp: str,
                      version: str) -> None:
        now = utcnow()
        item_rows = []
        for p in provs:
            i = p.input
            if p.status not in ITEM_STATUSES:
                raise CatalogError(f"{i.uri}: status {p.status!r} is not one of {', '.join(ITEM_STATUSES)}")
            item_rows.append(dict(collection_id=cid, source_uri=i.uri, name=i.name or i.uri, sha256=i.sha256,
                                  bytes=i.bytes, width=i.width, height=i.height, mode=i.mode, format=i.format,
                                  status=p.status, attempts=0, version=1, last_error=p.error, last_run_id=run_id,
                                  created=now, updated=now))
        ins = self._insert(items_t)
        ex, cur = ins.excluded, items_t.c
        keep = {c: func.coalesce(getattr(ex, c), getattr(cur, c))
                for c in ("sha256", "bytes", "width", "height", "mode", "format")}
        changed = (cur.sha256.is_not(None) & ex.sha256.is_not(None) & (cur.sha256 != ex.sha256))
        conn.execute(ins.on_conflict_do_update(
            index_elements=["collection_id", "source_uri"],
            set_=dict(name=ex.name, status=ex.status, last_error=ex.last_error, last_run_id=ex.last_run_id,
                      updated=ex.updated, version=case((changed, cur.version + 1), else_=cur.version), **keep)),
            item_rows)
        uris = [p.input.uri for p in provs]
        item_ids = dict(conn.execute(select(items_t.c.source_uri, items_t.c.id).where(
            items_t.c.collection_id == cid, items_t.c.source_uri.in_(uris))).all())

        res_rows = []
        for p in provs:
            rec = p if p.run_id == run_id else dataclasses.replace(p, run_id=run_id)
            res_rows.append(dict(
                item_id=item_ids[p.input.uri], run_id=run_id, input_sha256=p.input.sha256, fingerprint=fp,
                status=p.status, error=p.error, started=parse_time(p.started), finished=parse_time(p.finished),
                seconds=float(sum(float(s.seconds or 0) for s in p.stages)), mask_coverage=_coverage(p),
                n_faces=len(p.faces), oldphoto_version=p.oldphoto_version or version, provenance=rec,
                recorded=now))
        ins = self._insert(results_t)
        ex = ins.excluded
        conn.execute(ins.on_conflict_do_update(
            index_elements=["item_id", "run_id"],
            set_={c: getattr(ex, c) for c in ("input_sha256", "fingerprint", "status", "error", "started", "finished",
                                              "seconds", "mask_coverage", "n_faces", "oldphoto_version",
                                              "provenance", "recorded")}), res_rows)
        ids = list(item_ids.values())
        result_ids = dict(conn.execute(select(results_t.c.item_id, results_t.c.id).where(
            results_t.c.run_id == run_id, results_t.c.item_id.in_(ids))).all())
        rids = list(result_ids.values())
        for t in CHILD_TABLES:
            conn.execute(delete(t).where(t.c.result_id.in_(rids)))

        stages, ckpts, arts, masks, faces, events = [], [], [], [], [], []
        for p in provs:
            rid = result_ids[item_ids[p.input.uri]]
            seen_stage: set[str] = set()
            for pos, s in enumerate(p.stages):
                name, k = s.name, 2
                while name in seen_stage:
                    name, k = f"{s.name}#{k}", k + 1
                seen_stage.add(name)
                stages.append(dict(result_id=rid, position=pos, stage=name, status=s.status,
                                   seconds=float(s.seconds or 0), device=s.device or "", error=s.error))
                seen_ck: set[str] = set()
                for c in s.checkpoints:
                    if c.name not in seen_ck:
                        seen_ck.add(c.name)
                        ckpts.append(dict(result_id=rid, stage=name, name=c.name, file=c.file or "",
                                          sha256=c.sha256 or ""))
            by_uri = {a.uri: a for a in p.outputs}
            for a in by_uri.values():
                arts.append(dict(result_id=rid, kind=a.kind, uri=a.uri, sha256=a.sha256 or "", bytes=int(a.bytes or 0),
                                 extra=dict(a.extra or {})))
            cov = _coverage(p)
            if cov is not None:
                mask = next((a for a in p.outputs if a.kind == "mask"), None)
                masks.append(dict(result_id=rid, uri=mask.uri if mask else None,
                                  sha256=mask.sha256 if mask else None, coverage=cov))
            by_index = {f.index: f for f in p.faces}
            for f in by_index.values():
                box = list(f.box) + [0] * (4 - len(f.box))
                faces.append(dict(result_id=rid, face_index=f.index, left=int(box[0]), top=int(box[1]),
                                  right=int(box[2]), bottom=int(box[3]), score=f.score,
                                  landmarks=[list(map(float, pt)) for pt in f.landmarks],
                                  detected_on=f.detected_on, applied=f.applied, reason=f.reason,
                                  agreement_db=f.agreement_db))
            for e in events_for(p, run_id, now):
                e["result_id"] = rid
                e["agent_version"] = e["agent_version"] or version
                events.append(e)
        for t, rows in ((stages_t, stages), (ckpt_t, ckpts), (arts_t, arts), (masks_t, masks), (faces_t, faces),
                        (events_t, events)):
            self._bulk_insert(conn, t, rows)
        n = select(func.count()).select_from(results_t).where(results_t.c.item_id == items_t.c.id).scalar_subquery()
        conn.execute(update(items_t).where(items_t.c.id.in_(ids)).values(attempts=n))

    # ------------------------------------------------------------------------------------------ queries
    def status_counts(self, run_id: str | None = None) -> dict[str, int]:
        """Items by status (every status present, 0 when none); with run_id: that run's results by status."""
        t = results_t if run_id else items_t
        q = select(t.c.status, func.count()).group_by(t.c.status)
        if run_id:
            q = q.where(t.c.run_id == run_id)
        got = dict(self._read(lambda c: c.execute(q).all()))
        return {s: int(got.get(s, 0)) for s in ITEM_STATUSES}

    def _item_query(self) -> Any:
        return select(*items_t.c, coll_t.c.name.label("collection")).join(coll_t, coll_t.c.id == items_t.c.collection_id)

    @staticmethod
    def _info(row: Any) -> ItemInfo:
        d = dict(row)
        d.pop("collection_id")
        return ItemInfo(**d)

    def items(self, status: str | None = None, since: datetime | str | None = None,
              collection: str | None = None, limit: int | None = None) -> list[ItemInfo]:
        """Items (all collections unless `collection`), optionally only those with `status` and/or last
        changed at or after `since` (datetime or ISO 8601 date/time, UTC), oldest change first."""
        if status is not None and status not in ITEM_STATUSES:
            raise CatalogError(f"unknown status {status!r}: one of {', '.join(ITEM_STATUSES)}")
        q = self._item_query()
        if status:
            q = q.where(items_t.c.status == status)
        if since is not None:
            q = q.where(items_t.c.updated >= parse_time(since))
        if collection:
            q = q.where(coll_t.c.name == collection)
        q = q.order_by(items_t.c.updated, items_t.c.id)
        if limit:
            q = q.limit(limit)
        return [self._info(r) for r in self._read(lambda c: c.execute(q).mappings().all())]

    def failed_items(self, collection: str | None = None) -> list[ItemInfo]:
        """Items whose latest attempt failed (to reprocess), with their last error."""
        return self.items(status="failed", collection=collection)

    def is_done(self, sha256: str, fingerprint: str) -> bool:
        """True when these input bytes were already restored successfully with these weights + parameters."""
        q = select(results_t.c.id).where(results_t.c.input_sha256 == sha256, results_t.c.fingerprint == fingerprint,
                                         results_t.c.status == "done").limit(1)
        return self._read(lambda c: c.execute(q).first()) is not None

    def done_inputs(self, uris: Iterable[str], fingerprint: str) -> dict[str, tuple[str | None, int | None]]:
        """source URI -> (sha256, size in bytes or None) of the input bytes last restored successfully with
        `fingerprint`, for those of `uris` that were (any collection). Used to plan a run on its driver."""
        want = sorted(set(uris))
        out: dict[str, tuple[str | None, int | None]] = {}
        for chunk in _chunks(want, 500):
            q = (select(items_t.c.source_uri, results_t.c.input_sha256, items_t.c.sha256, items_t.c.bytes)
                 .join(results_t, results_t.c.item_id == items_t.c.id)
                 .where(items_t.c.source_uri.in_(chunk), results_t.c.fingerprint == fingerprint,
                        results_t.c.status == "done")
                 .order_by(results_t.c.recorded, results_t.c.id))
            for uri, sha, item_sha, size in self._read(lambda c, q=q: c.execute(q).all()):
                out[uri] = (sha, size if item_sha == sha else None)
        return out

    def done_set(self, sha256s: Iterable[str], fingerprint: str) -> set[str]:
        """The subset of `sha256s` already done with `fingerprint` (batched `is_done` for planning a run)."""
        want = sorted(set(sha256s))
        out: set[str] = set()
        for chunk in _chunks(want, 500):
            q = select(results_t.c.input_sha256).distinct().where(
                results_t.c.input_sha256.in_(chunk), results_t.c.fingerprint == fingerprint,
                results_t.c.status == "done")
            out.update(self._read(lambda c, q=q: c.execute(q).scalars().all()))
        return out

    def item(self, item: int | str) -> ItemInfo:
        """Find an item by id (int, or digits), source URI (this catalog's collection first) or sha256 of its
        bytes (the most recently changed item with those bytes)."""
        q = self._item_query()
        if isinstance(item, int):
            cands = [q.where(items_t.c.id == item)]
        else:
            cands = [q.where(items_t.c.source_uri == item, coll_t.c.name == self.collection),
                     q.where(items_t.c.source_uri == item).order_by(items_t.c.updated.desc())]
            if len(item) == 64 and all(ch in "0123456789abcdef" for ch in item.lower()):
                cands.append(q.where(items_t.c.sha256 == item.lower()).order_by(items_t.c.updated.desc()))
                sub = select(results_t.c.item_id).where(results_t.c.input_sha256 == item.lower())
                cands.append(q.where(items_t.c.id.in_(sub)).order_by(items_t.c.updated.desc()))
            elif item.isdigit():
                cands.append(q.where(items_t.c.id == int(item)))
        for cq in cands:
            row = self._read(lambda c, cq=cq: c.execute(cq.limit(1)).mappings().first())
            if row is not None:
                return self._info(row)
        raise CatalogError(f"no item {item!r} in the catalog (give an item id, source URI or sha256)")

    def item_history(self, item: int | str | ItemInfo) -> ItemHistory:
        """Everything done to one item: every attempt (run, parameters fingerprint, input sha256, stages with
        devices, times and checkpoints, outputs, faces, PREMIS events), oldest first."""
        info = item if isinstance(item, ItemInfo) else self.item(item)

        def go(c: Connection) -> list[Attempt]:
            rows = c.execute(select(results_t, runs_t.c.flow_run_id).join(runs_t, runs_t.c.id == results_t.c.run_id)
                             .where(results_t.c.item_id == info.id)
                             .order_by(results_t.c.recorded, results_t.c.id)).mappings().all()
            rids = [r["id"] for r in rows]
            if not rids:
                return []

            def children(t: Any, order: Any) -> dict[int, list[dict[str, Any]]]:
                out: dict[int, list[dict[str, Any]]] = {r: [] for r in rids}
                for r in c.execute(select(t).where(t.c.result_id.in_(rids)).order_by(*order)).mappings():
                    d = dict(r)
                    out[d.pop("result_id")].append(d)
                return out

            stages = children(stages_t, [stages_t.c.position])
            ck = children(ckpt_t, [ckpt_t.c.id])
            arts = children(arts_t, [arts_t.c.id])
            fcs = children(faces_t, [faces_t.c.face_index])
            evs = children(events_t, [events_t.c.seq])
            out = []
            for r in rows:
                rid = r["id"]
                for s in stages[rid]:
                    s["checkpoints"] = [{k: x[k] for k in ("name", "file", "sha256")} for x in ck[rid]
                                        if x["stage"] == s["stage"]]
                    s.pop("id")
                for group in (arts[rid], fcs[rid], evs[rid]):
                    for d in group:
                        d.pop("id")
                prov = ItemProvenance.from_dict(r["provenance"]) if r["provenance"] else None
                inp = dict(prov.input.__dict__) if prov else {"uri": info.source_uri, "sha256": r["input_sha256"]}
                out.append(Attempt(run_id=r["run_id"], flow_run_id=r["flow_run_id"], status=r["status"],
                                   error=r["error"], input=inp, fingerprint=r["fingerprint"], started=r["started"],
                                   finished=r["finished"], seconds=r["seconds"], mask_coverage=r["mask_coverage"],
                                   oldphoto_version=r["oldphoto_version"], recorded=r["recorded"],
                                   stages=stages[rid], artefacts=arts[rid], faces=fcs[rid], events=evs[rid],
                                   provenance=prov))
            return out

        return ItemHistory(item=info, attempts=self._read(go))

    # ------------------------------------------------------------------------------------------ exports
    def export_parquet(self, path: str | os.PathLike[str], collection: str | None = None) -> int:
        """Write one row per item with its latest result to a Parquet file; returns the number of rows."""
        from oldphoto.catalog.export import write_parquet

        return write_parquet(self, path, collection=collection)

    def premis_xml(self, item: int | str | ItemInfo, mets: bool = False) -> str:
        """The PREMIS 3.0 XML (objects, events, agents) of one item's whole history; `mets=True` wraps it in a
        METS document."""
        from lxml import etree

        from oldphoto.catalog.premis import build_premis, to_mets

        hist = self.item_history(item)
        root = build_premis(hist.item, hist.attempts)
        if mets:
            root = to_mets(root, hist.item.name, hist.item.source_uri)
        return etree.tostring(root, pretty_print=True, xml_declaration=True, encoding="UTF-8").decode("utf-8")

    def table_counts(self) -> dict[str, int]:
        """Rows per catalog table (for checks and `oldphoto catalog status --verbose`)."""
        def go(c: Connection) -> dict[str, int]:
            return {t.name: c.execute(select(func.count()).select_from(t)).scalar_one() for t in m.TABLES_IN_ORDER}
        return self._read(go)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:                               # a zombie (killed, not yet reaped by its parent) is dead too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _json(v: Any) -> str | None:
    if v is None:
        return None
    if not v and type(v) in (list, dict):
        return "[]" if type(v) is list else "{}"
    return _ENCODER.encode(v)


def _sqlite_time(v: datetime | None) -> str | None:
    """The text SQLAlchemy's SQLite DateTime stores (naive UTC)."""
    if v is None:
        return None
    v = parse_time(v)
    return v.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _pg_time(v: datetime | None) -> datetime | None:
    return None if v is None else parse_time(v)


def _coverage(p: ItemProvenance) -> float | None:
    if p.mask_coverage is not None:
        return float(p.mask_coverage)
    for a in p.outputs:
        if a.kind == "mask" and a.extra and a.extra.get("coverage") is not None:
            return float(a.extra["coverage"])
    return None


_fingerprint = fingerprint

__all__ = ["Catalog", "CatalogError", "ItemInfo", "ItemHistory", "Attempt", "RunInfo", "fingerprint",
           "default_url", "DEFAULT_URL"]
