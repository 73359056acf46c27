"""Recording a batch of provenance records in one transaction: the item rows (upsert), their result for the run
(upsert), and the result's child rows (stages, checkpoints, artefacts, mask, faces, PREMIS events), replaced
as a whole so recording the same item and run again never duplicates anything."""
from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, Sequence

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.engine import Connection

from oldphoto.catalog.engine import bulk_insert, dialect_insert
from oldphoto.catalog.premis import events_for
from oldphoto.catalog.records import CatalogError
from oldphoto.catalog.tables import (CHILD_TABLES, arts_t, ckpt_t, events_t, faces_t, items_t, masks_t, parse_time,
                                     results_t, stages_t, utcnow)
from oldphoto.provenance import ITEM_STATUSES, ItemProvenance

_INPUT_FIELDS = ("sha256", "bytes", "width", "height", "mode", "format")
_RESULT_FIELDS = ("input_sha256", "fingerprint", "status", "error", "started", "finished", "seconds",
                  "mask_coverage", "n_faces", "oldphoto_version", "provenance", "recorded")


def record_chunk(conn: Connection, dialect: str, cid: int, provs: Sequence[ItemProvenance], run_id: str, fp: str,
                 version: str) -> None:
    """Write `provs` (distinct source URIs) as `run_id`'s results in collection `cid`, inside `conn`'s
    transaction."""
    now = utcnow()
    item_ids = _upsert_items(conn, dialect, cid, provs, run_id, now)
    result_ids = _upsert_results(conn, dialect, provs, item_ids, run_id, fp, version, now)
    rids = list(result_ids.values())
    for t in CHILD_TABLES:
        conn.execute(delete(t).where(t.c.result_id.in_(rids)))
    rows: dict[Any, list[dict[str, Any]]] = {t: [] for t in (stages_t, ckpt_t, arts_t, masks_t, faces_t, events_t)}
    for p in provs:
        _child_rows(rows, p, result_ids[item_ids[p.input.uri]], run_id, version, now)
    for t, table_rows in rows.items():
        bulk_insert(conn, dialect, t, table_rows)
    ids = list(item_ids.values())
    n = select(func.count()).select_from(results_t).where(results_t.c.item_id == items_t.c.id).scalar_subquery()
    conn.execute(update(items_t).where(items_t.c.id.in_(ids)).values(attempts=n))


def coverage(p: ItemProvenance) -> float | None:
    """The defect mask's coverage of the item (None: no mask)."""
    if p.mask_coverage is not None:
        return float(p.mask_coverage)
    for a in p.outputs:
        if a.kind == "mask" and a.extra and a.extra.get("coverage") is not None:
            return float(a.extra["coverage"])
    return None


def _upsert_items(conn: Connection, dialect: str, cid: int, provs: Sequence[ItemProvenance], run_id: str,
                  now: datetime) -> dict[str, int]:
    """Insert or update the items; returns source URI -> item id. An item's version goes up when its bytes
    changed (another sha256); input facts not known this time are kept."""
    item_rows = []
    for p in provs:
        i = p.input
        if p.status not in ITEM_STATUSES:
            raise CatalogError(f"{i.uri}: status {p.status!r} is not one of {', '.join(ITEM_STATUSES)}")
        item_rows.append(dict(collection_id=cid, source_uri=i.uri, name=i.name or i.uri, sha256=i.sha256,
                              bytes=i.bytes, width=i.width, height=i.height, mode=i.mode, format=i.format,
                              status=p.status, attempts=0, version=1, last_error=p.error, last_run_id=run_id,
                              created=now, updated=now))
    ins = dialect_insert(dialect, items_t)
    ex, cur = ins.excluded, items_t.c
    keep = {c: func.coalesce(getattr(ex, c), getattr(cur, c)) for c in _INPUT_FIELDS}
    changed = (cur.sha256.is_not(None) & ex.sha256.is_not(None) & (cur.sha256 != ex.sha256))
    conn.execute(ins.on_conflict_do_update(
        index_elements=["collection_id", "source_uri"],
        set_=dict(name=ex.name, status=ex.status, last_error=ex.last_error, last_run_id=ex.last_run_id,
                  updated=ex.updated, version=case((changed, cur.version + 1), else_=cur.version), **keep)),
        item_rows)
    uris = [p.input.uri for p in provs]
    return dict(conn.execute(select(items_t.c.source_uri, items_t.c.id).where(
        items_t.c.collection_id == cid, items_t.c.source_uri.in_(uris))).all())


def _upsert_results(conn: Connection, dialect: str, provs: Sequence[ItemProvenance], item_ids: dict[str, int],
                    run_id: str, fp: str, version: str, now: datetime) -> dict[int, int]:
    """Insert or replace each item's result for the run; returns item id -> result id."""
    res_rows = []
    for p in provs:
        rec = p if p.run_id == run_id else dataclasses.replace(p, run_id=run_id)
        res_rows.append(dict(
            item_id=item_ids[p.input.uri], run_id=run_id, input_sha256=p.input.sha256, fingerprint=fp,
            status=p.status, error=p.error, started=parse_time(p.started), finished=parse_time(p.finished),
            seconds=float(sum(float(s.seconds or 0) for s in p.stages)), mask_coverage=coverage(p),
            n_faces=len(p.faces), oldphoto_version=p.oldphoto_version or version, provenance=rec,
            recorded=now))
    ins = dialect_insert(dialect, results_t)
    ex = ins.excluded
    conn.execute(ins.on_conflict_do_update(index_elements=["item_id", "run_id"],
                                           set_={c: getattr(ex, c) for c in _RESULT_FIELDS}), res_rows)
    ids = list(item_ids.values())
    return dict(conn.execute(select(results_t.c.item_id, results_t.c.id).where(
        results_t.c.run_id == run_id, results_t.c.item_id.in_(ids))).all())


def _child_rows(rows: dict[Any, list[dict[str, Any]]], p: ItemProvenance, rid: int, run_id: str, version: str,
                now: datetime) -> None:
    """Append the child rows of one result (`rid`) to `rows` (table -> rows)."""
    _stage_rows(rows, p, rid)
    for a in {a.uri: a for a in p.outputs}.values():
        rows[arts_t].append(dict(result_id=rid, kind=a.kind, uri=a.uri, sha256=a.sha256 or "",
                                 bytes=int(a.bytes or 0), extra=dict(a.extra or {})))
    rows[masks_t] += _mask_rows(p, rid)
    rows[faces_t] += [_face_row(f, rid) for f in {f.index: f for f in p.faces}.values()]
    for e in events_for(p, run_id, now):
        e["result_id"] = rid
        e["agent_version"] = e["agent_version"] or version
        rows[events_t].append(e)


def _mask_rows(p: ItemProvenance, rid: int) -> list[dict[str, Any]]:
    cov = coverage(p)
    if cov is None:
        return []
    mask = next((a for a in p.outputs if a.kind == "mask"), None)
    return [dict(result_id=rid, uri=mask.uri if mask else None, sha256=mask.sha256 if mask else None, coverage=cov)]


def _face_row(f: Any, rid: int) -> dict[str, Any]:
    box = list(f.box) + [0] * (4 - len(f.box))
    return dict(result_id=rid, face_index=f.index, left=int(box[0]), top=int(box[1]), right=int(box[2]),
                bottom=int(box[3]), score=f.score, landmarks=[list(map(float, pt)) for pt in f.landmarks],
                detected_on=f.detected_on, applied=f.applied, reason=f.reason, agreement_db=f.agreement_db)


def _stage_rows(rows: dict[Any, list[dict[str, Any]]], p: ItemProvenance, rid: int) -> None:
    """Stage rows (a stage name seen twice in one record becomes NAME#2, ...) and their checkpoints (each name
    once per stage)."""
    seen_stage: set[str] = set()
    for pos, s in enumerate(p.stages):
        name, k = s.name, 2
        while name in seen_stage:
            name, k = f"{s.name}#{k}", k + 1
        seen_stage.add(name)
        rows[stages_t].append(dict(result_id=rid, position=pos, stage=name, status=s.status,
                                   seconds=float(s.seconds or 0), device=s.device or "", error=s.error))
        seen_ck: set[str] = set()
        for c in s.checkpoints:
            if c.name not in seen_ck:
                seen_ck.add(c.name)
                rows[ckpt_t].append(dict(result_id=rid, stage=name, name=c.name, file=c.file or "",
                                         sha256=c.sha256 or ""))
