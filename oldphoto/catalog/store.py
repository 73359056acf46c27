"""`Catalog`: the SQL record of every item, run and result (SQLite by default, PostgreSQL for shared use).

Writes are batched upserts (`INSERT ... ON CONFLICT DO UPDATE` on both backends) in one transaction per batch,
taking row locks in a fixed order (items by source URI, then their results), so concurrent writers never
duplicate or lose rows and do not deadlock; a transaction that still fails with a deadlock / serialization /
"database is locked" error is retried. SQLite runs in WAL mode with a busy timeout, and write transactions
start with BEGIN IMMEDIATE so two writers never both hold a read lock and wait for each other.

`Catalog` (runs, leases, recording, queries, exports) is the one interface; it is built from:
`catalog.engine` (URLs, the engine, the retry helper, the fast insert), `catalog.schema` (Alembic revisions),
`catalog.recording` (one batch of records in one transaction), `catalog.records` (the dataclasses it returns,
`CatalogError`, `fingerprint`) and `catalog.tables` (the schema: SQLAlchemy Core tables, no ORM). Their public names are importable from
here too.
"""
from __future__ import annotations

import json
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import OperationalError

from oldphoto import __version__
from oldphoto.catalog import schema
from oldphoto.catalog.engine import (DEFAULT_URL, default_url, dialect_insert, make_engine,
                                     normalise_url, with_db_retry)
from oldphoto.catalog.records import (Attempt, CatalogError, ItemHistory, ItemInfo, RunInfo, fingerprint,
                                      json_dumps)
from oldphoto.catalog.recording import record_chunk
from oldphoto.catalog.schema import MIGRATIONS
from oldphoto.catalog.tables import (CHILD_TABLES, TABLES_IN_ORDER, arts_t, ckpt_t, coll_t, events_t, faces_t,
                                     items_t, masks_t, parse_time, results_t, runs_t, stages_t, utcnow)
from oldphoto.provenance import ITEM_STATUSES, InputRecord, ItemProvenance

BATCH = 400          # items per write transaction
# a run's driver writes a heartbeat every HEARTBEAT_S; one silent for STALE_AFTER_S is taken for dead
HEARTBEAT_S = float(os.environ.get("OLDPHOTO_HEARTBEAT_S", "30"))
STALE_AFTER_S = 4 * HEARTBEAT_S
T = TypeVar("T")


def _chunks(seq: Sequence[T], n: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


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
        self.engine = make_engine(self.url, self.dialect, echo)
        self._collection_id: int | None = None
        self._checked = False
        self._run_fp: dict[str, tuple[str, str]] = {}

    def __repr__(self) -> str:
        return f"Catalog({self.engine.url.render_as_string(hide_password=True)!r})"

    # ------------------------------------------------------------------------------------------ engine
    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _write(self, fn: Callable[[Connection], T]) -> T:
        """Run fn(conn) in one write transaction, retrying on deadlock / lock timeouts."""
        def once() -> T:
            with self.engine.connect() as conn:
                conn.execution_options(oldphoto_write=True)
                with conn.begin():
                    return fn(conn)
        return with_db_retry(once)

    def _read(self, fn: Callable[[Connection], T]) -> T:
        self._check()
        with self.engine.connect() as conn:
            with conn.begin():
                return fn(conn)

    def _insert(self, table: Any) -> Any:
        return dialect_insert(self.dialect, table)

    # ------------------------------------------------------------------------------------------ schema
    def _alembic_config(self, connection: Connection | None = None) -> Any:
        return schema.alembic_config(self.url, connection)

    def head_revision(self) -> str:
        return schema.head_revision(self.url)

    def _missing_sqlite_file(self) -> bool:
        return schema.missing_sqlite_file(self.url, self.dialect)

    def current_revision(self) -> str | None:
        if self._missing_sqlite_file():
            return None
        try:
            return schema.current_revision(self.engine)
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
        try:
            schema.migrate(self.engine, self.url, self.dialect, direction, revision)
        except OperationalError as e:
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

    def _record_chunk(self, conn: Connection, cid: int, provs: Sequence[ItemProvenance], run_id: str, fp: str,
                      version: str) -> None:
        record_chunk(conn, self.dialect, cid, provs, run_id, fp, version)

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
            return {t.name: c.execute(select(func.count()).select_from(t)).scalar_one() for t in TABLES_IN_ORDER}
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


_fingerprint = fingerprint

__all__ = ["Catalog", "CatalogError", "ItemInfo", "ItemHistory", "Attempt", "RunInfo", "fingerprint",
           "default_url", "DEFAULT_URL", "normalise_url", "json_dumps", "with_db_retry", "BATCH", "HEARTBEAT_S",
           "STALE_AFTER_S", "MIGRATIONS", "items_t", "results_t", "runs_t", "coll_t", "stages_t", "ckpt_t", "arts_t",
           "masks_t", "faces_t", "events_t", "CHILD_TABLES"]
