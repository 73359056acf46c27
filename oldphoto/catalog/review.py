"""Catalog queries of curator review (`oldphoto review serve`): the runs overview, a filtered, sorted, paginated
grid of results, one item's review record, decisions (each a `review_decisions` row and a PREMIS event with the
reviewer as agent), the reprocess queue and the measurements the review app makes.

"Needs a look" score of a result (higher = look first; 0 = nothing the pipeline noticed), from what the
pipeline records plus the tone change measured when the review images are made:

    failed                                                     100
    scratch mask coverage    40 x min(coverage / 2 %, 1)        0..40
    faces kept (the enhanced face disagreed with the scan)    15 per face, at most 30
    tone change              30 x min(mean |grey change| / 0.10, 1)   0..30   (known once the review
                                                                             images of the result exist)

Every query is bounded by the run's results (index item_results(run_id, status)) or by the latest result of each
item (items -> item_results unique (item_id, run_id)); per-result facts are correlated look-ups on indexed
columns (faces (result_id, face_index), stage_checkpoints (result_id, stage, name), review_decisions(result_id),
review_metrics(result_id)), and pages are LIMIT/OFFSET on the server.
"""
from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, case, exists, false, func, select, true, update
from sqlalchemy.engine import Connection

from oldphoto import __version__
from oldphoto.catalog.tables import (DECISIONS, QUEUE_STATES, arts_t, ckpt_t, decisions_t, events_t, faces_t,
                                     items_t, metrics_t, results_t, runs_t, utcnow)

if TYPE_CHECKING:
    from oldphoto.catalog.store import Catalog, ItemHistory


COVERAGE_FULL = 0.02       # mask coverage that scores the full 40
TONE_FULL = 0.10           # mean absolute grey change (0..1) that scores the full 30
SCRATCH_CHECKPOINT = "vae_b_scratch"    # the decoder only the scratch path uses
SORTS = ("score", "name", "coverage", "recent")
FACE_FILTERS = ("any", "none", "replaced", "kept")
REVIEWED_FILTERS = ("yes", "no") + DECISIONS
REPROCESS_OPTIONS = {"scratch": ("auto", "on", "off"), "faces": (True, False), "tone_match": (True, False),
                     "colour_correct": (True, False), "structure_return": (True, False), "refine": (True, False)}


class ReviewError(ValueError):
    """A request the review cannot honour (unknown result, bad decision or option)."""


@dataclass
class GridFilter:
    run_id: str | None = None              # None: the latest result of every item
    status: str | None = None
    scratch: str | None = None             # "yes": the scratch path was taken; "no": the quality path
    coverage_min: float | None = None      # mask coverage, fraction 0..1
    coverage_max: float | None = None
    faces: str | None = None               # any | none | replaced | kept
    reviewed: str | None = None            # yes | no | approved | rejected | reprocess
    sort: str = "score"
    page: int = 1
    per_page: int = 60

    def check(self) -> "GridFilter":
        if self.sort not in SORTS:
            raise ReviewError(f"sort must be one of {', '.join(SORTS)}")
        if self.faces not in (None, *FACE_FILTERS):
            raise ReviewError(f"faces must be one of {', '.join(FACE_FILTERS)}")
        if self.reviewed not in (None, *REVIEWED_FILTERS):
            raise ReviewError(f"reviewed must be one of {', '.join(REVIEWED_FILTERS)}")
        if self.scratch not in (None, "yes", "no"):
            raise ReviewError("scratch must be yes or no")
        self.page = max(1, int(self.page))
        self.per_page = min(max(1, int(self.per_page)), 500)
        return self


@dataclass
class GridRow:
    result_id: int
    item_id: int
    name: str
    source_uri: str
    run_id: str
    status: str
    error: str | None
    mask_coverage: float | None
    n_faces: int
    faces_kept: int
    faces_replaced: int
    scratch_path: bool
    tone_change: float | None
    score: float
    decision: str | None
    reviewer: str | None


@dataclass
class GridPage:
    rows: list[GridRow]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))


@dataclass
class RunRow:
    id: str
    started: datetime
    finished: datetime | None
    state: str | None
    n_items: int | None
    n_done: int | None
    n_failed: int | None
    n_skipped: int | None
    parameters: dict[str, Any]
    weights: list[str]
    reviewed: int


@dataclass
class Decision:
    id: int
    item_id: int
    result_id: int | None
    run_id: str | None
    decision: str
    note: str | None
    options: dict[str, Any]
    reviewer: str
    decided: datetime
    queue_state: str | None
    queue_run_id: str | None
    event_identifier: str | None


@dataclass
class ItemReview:
    history: "ItemHistory"
    result_id: int
    run_id: str
    decisions: list[Decision] = field(default_factory=list)
    tone_change: float | None = None
    score: float = 0.0


# ------------------------------------------------------------------------------------------------ score
def _clip01(x: Any) -> Any:
    return case((x > 1.0, 1.0), (x < 0.0, 0.0), else_=x)


def _facts(r: Any) -> dict[str, Any]:
    """Per-result correlated look-ups (all on indexed columns)."""
    kept = (select(func.count()).select_from(faces_t)
            .where(faces_t.c.result_id == r.c.id, faces_t.c.applied == false()).scalar_subquery())
    replaced = (select(func.count()).select_from(faces_t)
                .where(faces_t.c.result_id == r.c.id, faces_t.c.applied == true()).scalar_subquery())
    scratch = exists().where(ckpt_t.c.result_id == r.c.id, ckpt_t.c.stage == "global_restoration",
                             ckpt_t.c.name == SCRATCH_CHECKPOINT)
    tone = select(metrics_t.c.tone_change).where(metrics_t.c.result_id == r.c.id).scalar_subquery()
    def newest(col: Any) -> Any:
        return (select(col).where(decisions_t.c.result_id == r.c.id)
                .order_by(decisions_t.c.decided.desc(), decisions_t.c.id.desc()).limit(1).scalar_subquery())

    decision, reviewer = newest(decisions_t.c.decision), newest(decisions_t.c.reviewer)
    return dict(kept=kept, replaced=replaced, scratch=scratch, tone=tone, decision=decision, reviewer=reviewer)


def score_expr(status: Any, coverage: Any, kept: Any, tone: Any) -> Any:
    """The "needs a look" score as a SQL expression (see the module docstring)."""
    return (case((status == "failed", 100.0), else_=0.0)
            + 40.0 * _clip01(func.coalesce(coverage, 0.0) / COVERAGE_FULL)
            + case((kept >= 2, 30.0), else_=15.0 * kept)
            + 30.0 * _clip01(func.coalesce(tone, 0.0) / TONE_FULL))


def score_of(status: str, coverage: float | None, kept: int, tone: float | None) -> float:
    """The same score computed in Python (for one item's page)."""
    clip = lambda x: min(max(x, 0.0), 1.0)  # noqa: E731
    return ((100.0 if status == "failed" else 0.0) + 40.0 * clip((coverage or 0.0) / COVERAGE_FULL)
            + min(15.0 * kept, 30.0) + 30.0 * clip((tone or 0.0) / TONE_FULL))


# ------------------------------------------------------------------------------------------------ queries
def _grid_base(flt: GridFilter) -> tuple[Any, dict[str, Any]]:
    r, i = results_t, items_t
    f = _facts(r)
    score = score_expr(r.c.status, r.c.mask_coverage, f["kept"], f["tone"])
    cols = [r.c.id.label("result_id"), i.c.id.label("item_id"), i.c.name, i.c.source_uri, r.c.run_id, r.c.status,
            r.c.error, r.c.mask_coverage, r.c.n_faces, f["kept"].label("faces_kept"),
            f["replaced"].label("faces_replaced"), f["scratch"].label("scratch_path"), f["tone"].label("tone_change"),
            score.label("score"), f["decision"].label("decision"), f["reviewer"].label("reviewer")]
    if flt.run_id:
        q = select(*cols).select_from(r.join(i, i.c.id == r.c.item_id)).where(r.c.run_id == flt.run_id)
    else:           # the latest result of every item
        q = select(*cols).select_from(i.join(r, and_(r.c.item_id == i.c.id, r.c.run_id == i.c.last_run_id)))
    conds: list[Any] = []
    if flt.status:
        conds.append(r.c.status == flt.status)
    if flt.scratch == "yes":
        conds.append(f["scratch"])
    elif flt.scratch == "no":
        conds.append(~f["scratch"])
    if flt.coverage_min is not None:
        conds.append(r.c.mask_coverage >= flt.coverage_min)
    if flt.coverage_max is not None:
        conds.append(r.c.mask_coverage <= flt.coverage_max)
    if flt.faces == "any":
        conds.append(r.c.n_faces > 0)
    elif flt.faces == "none":
        conds.append(r.c.n_faces == 0)
    elif flt.faces == "replaced":
        conds.append(f["replaced"] > 0)
    elif flt.faces == "kept":
        conds.append(f["kept"] > 0)
    if flt.reviewed == "yes":
        conds.append(f["decision"].is_not(None))
    elif flt.reviewed == "no":
        conds.append(f["decision"].is_(None))
    elif flt.reviewed:
        conds.append(f["decision"] == flt.reviewed)
    if conds:
        q = q.where(*conds)
    return q, {"score": score, "item_name": i.c.name, "coverage": r.c.mask_coverage, "recorded": r.c.recorded,
               "id": r.c.id}


def grid(cat: "Catalog", flt: GridFilter) -> GridPage:
    """One page of results matching `flt`, sorted (score: highest first; name; coverage: highest first;
    recent: newest first), with the total count."""
    flt.check()
    q, col = _grid_base(flt)
    order = {"score": [col["score"].desc(), col["id"]], "name": [col["item_name"], col["id"]],
             "coverage": [func.coalesce(col["coverage"], -1.0).desc(), col["id"]],
             "recent": [col["recorded"].desc(), col["id"].desc()]}[flt.sort]
    count_q = select(func.count()).select_from(q.with_only_columns(col["id"]).subquery())
    page_q = q.order_by(*order).limit(flt.per_page).offset((flt.page - 1) * flt.per_page)

    def go(c: Connection) -> GridPage:
        total = int(c.execute(count_q).scalar_one())
        rows = [GridRow(**{**dict(x), "scratch_path": bool(x["scratch_path"]), "score": float(x["score"] or 0.0)})
                for x in c.execute(page_q).mappings()]
        return GridPage(rows, total, flt.page, flt.per_page)

    return cat._read(go)


def runs_overview(cat: "Catalog", limit: int = 200) -> list[RunRow]:
    """The latest runs, newest first, with their counts, parameters, weights and how many results were reviewed."""
    reviewed = (select(func.count(func.distinct(decisions_t.c.result_id))).where(decisions_t.c.run_id == runs_t.c.id)
                .scalar_subquery())
    q = select(runs_t, reviewed.label("reviewed")).order_by(runs_t.c.started.desc()).limit(limit)

    def go(c: Connection) -> list[RunRow]:
        out = []
        for x in c.execute(q).mappings().all():
            params = dict(x["parameters"] or {})
            out.append(RunRow(id=x["id"], started=x["started"], finished=x["finished"], state=x["state"],
                              n_items=x["n_items"], n_done=x["n_done"], n_failed=x["n_failed"],
                              n_skipped=x["n_skipped"], parameters=params,
                              weights=_run_checkpoints(c, x["id"]) or _weights(params),
                              reviewed=int(x["reviewed"] or 0)))
        return out

    return cat._read(go)


def run_ids(cat: "Catalog", limit: int = 50) -> list[str]:
    """The ids of the latest runs, newest first (the grid's run filter)."""
    q = select(runs_t.c.id).order_by(runs_t.c.started.desc()).limit(limit)
    return list(cat._read(lambda c: c.execute(q).scalars().all()))


def _run_checkpoints(c: Connection, run_id: str) -> list[str]:
    """The checkpoints (name and sha256 prefix) of the run's first done result: the weights it ran with."""
    first = (select(func.min(results_t.c.id)).where(results_t.c.run_id == run_id, results_t.c.status == "done")
             .scalar_subquery())
    q = select(ckpt_t.c.name, ckpt_t.c.sha256).where(ckpt_t.c.result_id == first).order_by(ckpt_t.c.id)
    return list(dict.fromkeys(f"{n} {s[:10]}" for n, s in c.execute(q)))


def _weights(params: dict[str, Any]) -> list[str]:
    w = params.get("weights") or params.get("checkpoints") or []
    if isinstance(w, dict):
        return [f"{k}@{str(v)[:12]}" for k, v in sorted(w.items())]
    if isinstance(w, (list, tuple)):
        return [str(x) for x in w]
    return [str(w)]


def result_for(cat: "Catalog", item_id: int, result_id: int | None = None) -> tuple[int, str]:
    """(result id, run id) of `result_id`, which must belong to `item_id`; default: the item's latest result."""
    r = results_t
    if result_id is not None:
        q = select(r.c.id, r.c.run_id).where(r.c.id == result_id, r.c.item_id == item_id)
    else:
        q = (select(r.c.id, r.c.run_id).join(items_t, items_t.c.id == r.c.item_id)
             .where(r.c.item_id == item_id, r.c.run_id == items_t.c.last_run_id))
    row = cat._read(lambda c: c.execute(q).first())
    if row is None:
        raise ReviewError(f"no result {result_id or '(latest)'} for item {item_id}")
    return int(row[0]), str(row[1])


def decisions(cat: "Catalog", item_id: int) -> list[Decision]:
    """Every decision on the item, newest first."""
    q = (select(decisions_t).where(decisions_t.c.item_id == item_id)
         .order_by(decisions_t.c.decided.desc(), decisions_t.c.id.desc()))
    return [Decision(**dict(x)) for x in cat._read(lambda c: c.execute(q).mappings().all())]


def item_review(cat: "Catalog", item_id: int, result_id: int | None = None) -> ItemReview:
    """What the item page shows: the item's history, the result under review, its decisions and score."""
    rid, run_id = result_for(cat, item_id, result_id)
    hist = cat.item_history(item_id)
    att = next(a for a in hist.attempts if a.run_id == run_id)
    tone = metrics(cat, rid)
    kept = sum(1 for f in att.faces if f.get("applied") is False)
    score = score_of(att.status, att.mask_coverage, kept, tone[0] if tone else None)
    return ItemReview(history=hist, result_id=rid, run_id=run_id, decisions=decisions(cat, item_id),
                      tone_change=tone[0] if tone else None, score=score)


def artefacts(cat: "Catalog", result_id: int) -> list[dict[str, Any]]:
    q = select(arts_t.c.id, arts_t.c.kind, arts_t.c.uri, arts_t.c.extra).where(arts_t.c.result_id == result_id)
    return [dict(x) for x in cat._read(lambda c: c.execute(q.order_by(arts_t.c.id)).mappings().all())]


def artefact(cat: "Catalog", artefact_id: int) -> dict[str, Any]:
    q = select(arts_t.c.id, arts_t.c.result_id, arts_t.c.kind, arts_t.c.uri).where(arts_t.c.id == artefact_id)
    row = cat._read(lambda c: c.execute(q).mappings().first())
    if row is None:
        raise ReviewError(f"no artefact {artefact_id}")
    return dict(row)


def source_of(cat: "Catalog", result_id: int) -> dict[str, Any]:
    """The source URI of a result's item, its run's destination and the result's outputs by kind."""
    q = (select(items_t.c.source_uri, runs_t.c.parameters, results_t.c.status).select_from(
        results_t.join(items_t, items_t.c.id == results_t.c.item_id).join(runs_t, runs_t.c.id == results_t.c.run_id))
        .where(results_t.c.id == result_id))
    row = cat._read(lambda c: c.execute(q).first())
    if row is None:
        raise ReviewError(f"no result {result_id}")
    by_kind: dict[str, str] = {}
    for a in artefacts(cat, result_id):
        by_kind.setdefault(a["kind"], a["uri"])
    return {"source_uri": row[0], "destination": (row[1] or {}).get("destination"), "status": row[2],
            "outputs": by_kind}


# ------------------------------------------------------------------------------------------------ metrics
def metrics(cat: "Catalog", result_id: int) -> tuple[float | None, int | None, int | None] | None:
    q = select(metrics_t.c.tone_change, metrics_t.c.width, metrics_t.c.height).where(metrics_t.c.result_id == result_id)
    row = cat._read(lambda c: c.execute(q).first())
    return None if row is None else (row[0], row[1], row[2])


def save_metrics(cat: "Catalog", result_id: int, tone_change: float | None, width: int | None,
                 height: int | None) -> None:
    def go(c: Connection) -> None:
        c.execute(cat._insert(metrics_t).values(result_id=result_id, tone_change=tone_change, width=width,
                                                height=height, prepared=utcnow())
                  .on_conflict_do_nothing(index_elements=["result_id"]))
    cat._write(go)


# ------------------------------------------------------------------------------------------------ decisions
def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Reprocess options a reviewer may set (RestoreOptions fields): scratch auto/on/off, faces, tone_match,
    colour_correct, structure_return, refine."""
    out: dict[str, Any] = {}
    for k, v in options.items():
        if k not in REPROCESS_OPTIONS or v not in REPROCESS_OPTIONS[k]:
            raise ReviewError(f"reprocess option {k}={v!r} not allowed (one of: "
                              + "; ".join(f"{n} in {vals}" for n, vals in REPROCESS_OPTIONS.items()) + ")")
        out[k] = v
    return out


def record_decision(cat: "Catalog", item_id: int, result_id: int, decision: str, reviewer: str,
                    note: str | None = None, options: dict[str, Any] | None = None) -> Decision:
    """Record a curator's decision on a result: a `review_decisions` row (a reprocess request is queued) and,
    in the same transaction, a PREMIS "appraisal" event on the result with the reviewer as agent."""
    if decision not in DECISIONS:
        raise ReviewError(f"decision must be one of {', '.join(DECISIONS)}")
    if decision == "rejected" and not (note or "").strip():
        raise ReviewError("a rejection needs a note saying why")
    if not reviewer:
        raise ReviewError("a decision needs a reviewer")
    opts = check_options(options or {}) if decision == "reprocess" else {}
    rid, run_id = result_for(cat, item_id, result_id)
    now = utcnow()
    ident = str(uuid.uuid4())
    note = (note or "").strip() or None

    def go(c: Connection) -> int:
        # the result's row lock orders concurrent decisions on it (PostgreSQL; SQLite writes one at a time),
        # so each gets the next event sequence number
        c.execute(select(results_t.c.id).where(results_t.c.id == rid).with_for_update())
        src = c.execute(select(results_t.c.input_sha256, items_t.c.source_uri)
                        .join(items_t, items_t.c.id == results_t.c.item_id).where(results_t.c.id == rid)).one()
        outs = [{"uri": u, "sha256": s} for u, s in c.execute(
            select(arts_t.c.uri, arts_t.c.sha256).where(arts_t.c.result_id == rid, arts_t.c.kind == "restored"))]
        seq = int(c.execute(select(func.coalesce(func.max(events_t.c.seq), -1))
                            .where(events_t.c.result_id == rid)).scalar_one()) + 1
        detail = {"approved": "curator review: restoration approved for publication",
                  "rejected": "curator review: restoration rejected",
                  "reprocess": "curator review: reprocessing requested"}[decision]
        outcome_detail = note or ""
        if opts:
            outcome_detail = (outcome_detail + "; " if outcome_detail else "") + "options " + json.dumps(opts, sort_keys=True)
        c.execute(events_t.insert().values(
            result_id=rid, seq=seq, identifier=ident, event_type="appraisal", detail=f"{detail} [run {run_id}]",
            date_time=now, agent_name=reviewer, agent_version=f"oldphoto review {__version__}", checkpoints=[],
            outcome=decision, outcome_detail=outcome_detail or None,
            source_objects=[{"uri": src[1], "sha256": src[0]}], outcome_objects=outs, agent_type="person"))
        res = c.execute(decisions_t.insert().values(
            item_id=item_id, result_id=rid, run_id=run_id, decision=decision, note=note, options=opts,
            reviewer=reviewer, decided=now, queue_state="queued" if decision == "reprocess" else None,
            event_identifier=ident))
        return int(res.inserted_primary_key[0])

    did = cat._write(go)
    return next(d for d in decisions(cat, item_id) if d.id == did)


def reprocess_queue(cat: "Catalog", state: str = "queued") -> list[dict[str, Any]]:
    """Reprocess requests in `state` (oldest first) with their item's source URI and the run's destination."""
    q = (select(decisions_t, items_t.c.source_uri, items_t.c.name.label("item_name"), runs_t.c.parameters)
         .join(items_t, items_t.c.id == decisions_t.c.item_id)
         .outerjoin(runs_t, runs_t.c.id == decisions_t.c.run_id)
         .where(decisions_t.c.decision == "reprocess", decisions_t.c.queue_state == state)
         .order_by(decisions_t.c.decided, decisions_t.c.id))
    out = []
    for x in cat._read(lambda c: c.execute(q).mappings().all()):
        d = dict(x)
        d["destination"] = (d.pop("parameters") or {}).get("destination")
        out.append(d)
    return out


def set_queue_state(cat: "Catalog", decision_ids: list[int], state: str, run_id: str | None = None,
                    expect: str | None = None) -> int:
    """Move reprocess requests to `state` (taken by a run, done); with `expect`, only those in that state
    (so two workers never take the same request). Returns how many moved."""
    if state not in QUEUE_STATES:
        raise ReviewError(f"queue state must be one of {', '.join(QUEUE_STATES)}")
    conds = [decisions_t.c.id.in_(decision_ids), decisions_t.c.decision == "reprocess"]
    if expect:
        conds.append(decisions_t.c.queue_state == expect)
    values: dict[str, Any] = {"queue_state": state}
    if run_id is not None:
        values["queue_run_id"] = run_id
    return int(cat._write(lambda c: c.execute(update(decisions_t).where(*conds).values(**values)).rowcount))


def latest_decisions(c: Connection, item_ids: list[int]) -> dict[int, dict[str, Any]]:
    """item id -> its newest decision (for exports)."""
    if not item_ids:
        return {}
    newest = (select(decisions_t.c.item_id, func.max(decisions_t.c.id).label("id"))
              .where(decisions_t.c.item_id.in_(item_ids)).group_by(decisions_t.c.item_id).subquery())
    q = select(decisions_t).join(newest, newest.c.id == decisions_t.c.id)
    return {int(x["item_id"]): dict(x) for x in c.execute(q).mappings()}


__all__ = ["GridFilter", "GridRow", "GridPage", "RunRow", "Decision", "ItemReview", "ReviewError", "grid",
           "runs_overview", "run_ids", "item_review", "record_decision", "reprocess_queue", "set_queue_state", "score_expr",
           "score_of", "save_metrics", "metrics", "artefacts", "artefact", "source_of", "latest_decisions"]
