"""Exports of the catalog: Parquet with one row per item, its latest result and its newest curator decision
(for pandas, DuckDB, Spark)."""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import and_, select

from oldphoto.catalog.tables import arts_t, ckpt_t, coll_t, items_t, results_t, runs_t, stages_t
from oldphoto.catalog.review import latest_decisions

if TYPE_CHECKING:
    from oldphoto.catalog.store import Catalog

TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema([
    ("item_id", pa.int64()), ("collection", pa.string()), ("source_uri", pa.string()), ("name", pa.string()),
    ("sha256", pa.string()), ("bytes", pa.int64()), ("width", pa.int32()), ("height", pa.int32()),
    ("mode", pa.string()), ("format", pa.string()), ("status", pa.string()), ("attempts", pa.int32()),
    ("version", pa.int32()), ("last_error", pa.string()), ("created", TS), ("updated", TS),
    ("run_id", pa.string()), ("flow_run_id", pa.string()), ("fingerprint", pa.string()),
    ("input_sha256", pa.string()), ("result_status", pa.string()), ("started", TS), ("finished", TS),
    ("seconds", pa.float64()), ("mask_coverage", pa.float64()), ("n_faces", pa.int32()),
    ("oldphoto_version", pa.string()), ("failed_stage", pa.string()),
    ("restored_uri", pa.string()), ("restored_sha256", pa.string()), ("mask_uri", pa.string()),
    ("review_uri", pa.string()), ("provenance_uri", pa.string()), ("checkpoints", pa.list_(pa.string())),
    ("output_uris", pa.list_(pa.string())),      # every output of the result (face crops included), in order
    # the item's newest curator decision (oldphoto review): approved | rejected | reprocess, on which run's result
    ("review_decision", pa.string()), ("review_note", pa.string()), ("reviewer", pa.string()),
    ("reviewed", TS), ("review_run_id", pa.string()), ("review_options", pa.string()),
    ("reprocess_state", pa.string()),
])
CHUNK = 5000


def write_parquet(catalog: "Catalog", path: str | os.PathLike[str], collection: str | None = None) -> int:
    """One row per item (latest result = the result of the run that last recorded it); returns rows written."""
    it, r, ru, co = items_t, results_t, runs_t, coll_t
    arts, ck, st = arts_t, ckpt_t, stages_t
    base = (select(it.c.id.label("item_id"), co.c.name.label("collection"), it.c.source_uri, it.c.name, it.c.sha256,
                   it.c.bytes, it.c.width, it.c.height, it.c.mode, it.c.format, it.c.status, it.c.attempts,
                   it.c.version, it.c.last_error, it.c.created, it.c.updated, it.c.last_run_id.label("run_id"),
                   ru.c.flow_run_id, r.c.fingerprint, r.c.input_sha256, r.c.status.label("result_status"),
                   r.c.started, r.c.finished, r.c.seconds, r.c.mask_coverage, r.c.n_faces, r.c.oldphoto_version,
                   r.c.id.label("result_id"))
            .join(co, co.c.id == it.c.collection_id)
            .outerjoin(r, and_(r.c.item_id == it.c.id, r.c.run_id == it.c.last_run_id))
            .outerjoin(ru, ru.c.id == it.c.last_run_id)
            .order_by(it.c.id).limit(CHUNK))
    if collection:
        base = base.where(co.c.name == collection)
    total = 0
    last_id = 0
    with pq.ParquetWriter(os.fspath(path), SCHEMA) as writer:
        while True:
            q = base.where(it.c.id > last_id)

            def go(c: Any, q: Any = q) -> tuple[list[dict[str, Any]], dict[int, list[Any]], dict[int, list[Any]], dict[int, str]]:
                rows = [dict(x) for x in c.execute(q).mappings().all()]
                rids = [x["result_id"] for x in rows if x["result_id"] is not None]
                a: dict[int, list[Any]] = {}
                k: dict[int, list[Any]] = {}
                f: dict[int, str] = {}
                if rids:
                    for x in c.execute(select(arts.c.result_id, arts.c.kind, arts.c.uri, arts.c.sha256)
                                       .where(arts.c.result_id.in_(rids)).order_by(arts.c.id)):
                        a.setdefault(x[0], []).append(x)
                    for x in c.execute(select(ck.c.result_id, ck.c.name, ck.c.sha256)
                                       .where(ck.c.result_id.in_(rids)).order_by(ck.c.id)):
                        k.setdefault(x[0], []).append(x)
                    for x in c.execute(select(st.c.result_id, st.c.stage)
                                       .where(st.c.result_id.in_(rids), st.c.status == "failed")
                                       .order_by(st.c.position)):
                        f.setdefault(x[0], x[1])
                d = latest_decisions(c, [x["item_id"] for x in rows])
                for x in rows:
                    dec = d.get(x["item_id"])
                    x["review_decision"] = dec["decision"] if dec else None
                    x["review_note"] = dec["note"] if dec else None
                    x["reviewer"] = dec["reviewer"] if dec else None
                    x["reviewed"] = dec["decided"] if dec else None
                    x["review_run_id"] = dec["run_id"] if dec else None
                    x["review_options"] = json.dumps(dec["options"], sort_keys=True) if dec and dec["options"] else None
                    x["reprocess_state"] = dec["queue_state"] if dec else None
                return rows, a, k, f

            rows, a, k, f = catalog._read(go)
            if not rows:
                break
            for x in rows:
                rid = x.pop("result_id")
                first: dict[str, Any] = {}
                for _, kind, uri, sha in a.get(rid, []):
                    first.setdefault(kind, (uri, sha))
                x["restored_uri"], x["restored_sha256"] = first.get("restored", (None, None))
                x["mask_uri"] = first.get("mask", (None,))[0]
                x["review_uri"] = first.get("review", (None,))[0]
                x["provenance_uri"] = first.get("provenance", (None,))[0]
                x["checkpoints"] = list(dict.fromkeys(f"{name}@{sha}" for _, name, sha in k.get(rid, [])))
                x["output_uris"] = [uri for _, _, uri, _ in a.get(rid, [])]
                x["failed_stage"] = f.get(rid)
            writer.write_table(pa.Table.from_pylist(rows, schema=SCHEMA))
            total += len(rows)
            last_id = rows[-1]["item_id"]
            if len(rows) < CHUNK:
                break
        if total == 0:
            writer.write_table(SCHEMA.empty_table())
    return total
