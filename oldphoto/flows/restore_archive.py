"""Prefect flows for the nightly archive run: list a night's scans, restore them on Ray, record them in the catalog.

    restore-archive     source -> destination: every image below `source` not already done with these weights
                        and options (decided on the driver from the catalog: same source URI, same input bytes,
                        same fingerprint = skipped); `reprocess_failed=True` retries only the failed items.
    reprocess-failed    the catalog's failed items again, written where their last run wrote.

The item lifecycle (listing, names, fingerprint, writes, per-item recording) is `oldphoto.lifecycle`, the one
`oldphoto restore` runs. Outputs go to DEST/<path below SOURCE without extension>/... (restored image, mask,
faces, review sheet, provenance.json). The catalog URL comes from $OLDPHOTO_CATALOG or a Prefect Secret block
(`catalog=secret:NAME`), never from a parameter with a password. Each run ends with a summary artefact and
DEST/_runs/RUN_ID/summary.json (best effort): counts, failures with their reasons, skipped files, review sheets;
its final state is Completed (with a message naming the failures, if any) or Failed when every item failed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE as NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, Failed

from oldphoto.distributed import DistributedConfig, StageSource, ensure_ray
from oldphoto.distributed.config import check_no_device
from oldphoto.distributed.pipeline import ItemResult, iter_pipeline, run_parameters
from oldphoto.lifecycle import (Heartbeat, Recorder, SkippedInput, WorkItem, claim_items, list_inputs,
                                plan_items, with_catalog_retry)
from oldphoto.progress import ItemProgress, every_s_from_env, terminal_console
from oldphoto.storage import open_storage
from oldphoto.weights_source import WeightsSource

RETRIES = dict(retries=3, retry_delay_seconds=[2, 10, 30], cache_policy=NO_CACHE)
SUMMARY_KEY = "restore-archive-summary"
SECRET_PREFIX = "secret:"


def catalog_url(spec: str | None) -> str:
    """The catalog URL from the flow's `catalog` parameter: None = $OLDPHOTO_CATALOG; "secret:NAME" = the
    URL held by the Prefect Secret block NAME; else a URL *without* a password (a password in a flow parameter
    would be stored in Prefect's database and shown in its UI: refused). A relative SQLite path is made
    absolute so Ray workers in other directories open the same file."""
    from sqlalchemy.engine import make_url

    if spec is None or spec == "":
        url = os.environ.get("OLDPHOTO_CATALOG")
        if not url:
            raise ValueError("no catalog: set OLDPHOTO_CATALOG on the worker (or pass catalog=secret:BLOCK, the "
                             "name of a Prefect Secret block holding the URL)")
    elif spec.startswith(SECRET_PREFIX):
        from prefect.blocks.system import Secret

        url = str(Secret.load(spec[len(SECRET_PREFIX):]).get())
    else:
        try:
            has_password = make_url(spec).password is not None
        except Exception:
            raise ValueError("the catalog parameter is not a database URL") from None
        if has_password:
            raise ValueError("the catalog URL given as a flow parameter carries a password; flow parameters are "
                             "stored in plain text by Prefect: put the URL in $OLDPHOTO_CATALOG on the worker or "
                             "in a Prefect Secret block (catalog=secret:BLOCK)")
        url = spec
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix) and not url[len(prefix):].startswith(("/", ":memory:")) and url[len(prefix):]:
            return prefix + os.path.abspath(url[len(prefix):])
    return url


def _catalog(spec: str | None):
    from oldphoto.catalog import Catalog

    return Catalog(catalog_url(spec))


@dataclass
class Plan:
    todo: list[WorkItem]
    already_done: list[WorkItem]
    not_inputs: list[SkippedInput]
    destination: str
    busy: list[WorkItem] = field(default_factory=list)       # held by another run at work


@task(name="plan-items", **RETRIES)
def plan_run(source: str | None, destination: str | None, limit: int | None, reprocess_failed: bool,
             catalog: str | None, fingerprint: str) -> Plan:
    """The items of this run, decided here on the driver: the images below `source` not already done with this
    fingerprint (or, reprocess_failed, the catalog's failed items, written where their last run wrote)."""
    logger = get_run_logger()
    cat = _catalog(catalog)
    cat.upgrade()
    if reprocess_failed:
        return _plan_failed(cat, source, destination, limit, logger)
    if not source:
        raise ValueError("restore-archive needs `source` (s3://bucket/prefix/, file:///path or a folder)")
    if destination is None:
        raise ValueError("restore-archive needs `destination` (s3://bucket/prefix/, file:///path or a folder)")
    listing = list_inputs([source])
    items = listing.items[:limit] if limit else listing.items
    todo, done = plan_items(items, cat, fingerprint)
    logger.info("%d image(s) below %s: %d to do, %d already done; %d other file(s) skipped (hidden or not images)",
                len(items), source, len(todo), len(done), len(listing.skipped))
    return Plan(todo, done, listing.skipped, destination)


def _plan_failed(cat: Any, source: str | None, destination: str | None, limit: int | None, logger: Any) -> Plan:
    """The catalog's failed items (those below `source` when given), written where their last run wrote unless
    `destination` says otherwise."""
    failed = cat.failed_items()
    if source:
        listed = {it.uri: it for it in list_inputs([source]).items}
        items = [listed[f.source_uri] for f in failed if f.source_uri in listed]
    else:
        items = [WorkItem(f.source_uri, f.name) for f in failed]
    if destination is None:
        destination = _failed_destination(cat, failed)
    items = items[:limit] if limit else items
    logger.info("reprocessing %d failed item(s) into %s", len(items), destination)
    return Plan(items, [], [], destination)


def _failed_destination(cat: Any, failed: list[Any]) -> str:
    dests = {(cat.run(f.last_run_id).parameters or {}).get("destination") for f in failed if f.last_run_id}
    dests.discard(None)
    if len(dests) != 1:
        raise ValueError(f"the failed items were written to {len(dests)} destinations "
                         f"({', '.join(sorted(map(str, dests))) or 'none recorded'}): pass `destination`")
    return dests.pop()


@task(name="open-run", **RETRIES)
def open_run(catalog: str | None, parameters: dict[str, Any], fingerprint: str, flow_run_id: str | None) -> str:
    return _catalog(catalog).start_run(parameters, flow_run_id=flow_run_id, fingerprint=fingerprint)


@task(name="claim-items", **RETRIES)
def claim_run_items(catalog: str | None, run_id: str, items: list[WorkItem]) -> tuple[list[WorkItem], list[WorkItem]]:
    """Lease the items to this run in the catalog: two runs at once never compute an item twice."""
    mine, busy = claim_items(items, _catalog(catalog), run_id)
    if busy:
        get_run_logger().info("%d item(s) are being restored by another run: skipped", len(busy))
    return mine, busy


@task(name="close-run", **RETRIES)
def close_run(catalog: str | None, run_id: str, skipped: int, reason: str | None,
              not_inputs: list[SkippedInput] | None = None) -> dict[str, Any]:
    """Close the run; the files that are not inputs are recorded as skipped items with their reason."""
    info = with_catalog_retry(lambda: _catalog(catalog).finish_run(
        run_id, skipped=skipped, reason=reason, skipped_inputs=[(s.uri, s.reason) for s in not_inputs or []]))
    return {"n_items": info.n_items, "n_done": info.n_done, "n_failed": info.n_failed}


@task(name="restore-on-ray", cache_policy=NO_CACHE)
def restore_on_ray(items: list[WorkItem], destination: str, source: StageSource, config: DistributedConfig,
                   catalog: str | None, run_id: str) -> list[dict[str, Any]]:
    """The Ray pipeline; each finished item is recorded in the catalog as soon as it comes out (its files are
    written by then), riding out a catalog outage of up to OLDPHOTO_CATALOG_OUTAGE_S."""
    import ray

    logger = get_run_logger()
    started_here = not ray.is_initialized()
    ensure_ray(config)
    record = Recorder(_catalog(catalog), run_id, warn=logger.warning)
    results: list[dict[str, Any]] = []
    terminal = terminal_console()           # `oldphoto archive` on a terminal: a bar; else lines in the flow's log
    progress = (ItemProgress(len(items), console=terminal, label="restore") if terminal is not None else
                ItemProgress(len(items), label="restore", emit=logger.info, every_s=every_s_from_env()))
    try:
        with progress:
            for res in iter_pipeline(items, destination, source, config):
                if res.provenance is not None:
                    record(res.provenance)
                results.append(_brief(res))
                if res.status == "failed":
                    logger.warning("%s failed: %s", res.name, res.error)
                progress.advance(failed=res.status == "failed", name=res.name)
    finally:
        if started_here:
            ray.shutdown()
    return results


def _brief(res: ItemResult) -> dict[str, Any]:
    return {"uri": res.uri, "name": res.name, "status": res.status, "error": res.error,
            "review": res.outputs.get("review.png"), "restored": next(
                (u for k, u in res.outputs.items() if k.startswith("restored.")), None)}


def summarise(results: list[dict[str, Any]], plan: Plan, run_id: str) -> tuple[dict[str, Any], str]:
    destination = plan.destination
    skipped = ([{"uri": it.uri, "reason": "already done with these weights and options"} for it in plan.already_done]
               + [{"uri": it.uri, "reason": "being restored by another run"} for it in plan.busy]
               + [{"uri": s.uri, "reason": s.reason} for s in plan.not_inputs])
    counts = {s: sum(r["status"] == s for r in results) for s in ("done", "failed")}
    counts["skipped"] = len(skipped)
    counts["total"] = len(results) + len(skipped)
    failures = [{"name": r["name"], "uri": r["uri"], "error": r["error"]} for r in results if r["status"] == "failed"]
    reviews = [r["review"] for r in results if r["status"] == "done" and r["review"]]
    summary = {"run_id": run_id, "destination": destination, "counts": counts, "failures": failures,
               "skipped": skipped, "review_sheets": reviews}
    return summary, _summary_markdown(summary, plan)


def _summary_markdown(summary: dict[str, Any], plan: Plan) -> str:
    run_id, destination, counts = summary["run_id"], summary["destination"], summary["counts"]
    failures, reviews = summary["failures"], summary["review_sheets"]
    lines = [f"# Restore run `{run_id}`", "", f"Destination: `{destination}`", "",
             "| done | failed | skipped | total |", "|---:|---:|---:|---:|",
             f"| {counts['done']} | {counts['failed']} | {counts['skipped']} | {counts['total']} |", "",
             f"Skipped: {len(plan.already_done)} already done, {len(plan.busy)} being restored by another run, "
             f"{len(plan.not_inputs)} not inputs (hidden files, not images).", ""]
    if failures:
        lines += ["## Failures", "", "| item | reason |", "|---|---|"]
        lines += [f"| `{f['name']}` | {str(f['error']).replace('|', '/')} |" for f in failures] + [""]
    if reviews:
        lines += ["## Review sheets (before / after / mask)", ""]
        lines += [f"- {u}" for u in reviews[:200]]
        if len(reviews) > 200:
            lines.append(f"- ... and {len(reviews) - 200} more, under `{destination}`")
    return "\n".join(lines)


def publish_summary(summary: dict[str, Any], markdown: str, logger: Any) -> None:
    """DEST/_runs/RUN_ID/summary.json and the Prefect artefact: best effort, a finished run never fails here."""
    destination, run_id = summary["destination"], summary["run_id"]
    try:
        store = open_storage(destination)
        uri = store.join(destination, "_runs", run_id, "summary.json")
        store.write_bytes(uri, json.dumps(summary, indent=2).encode())
        summary["summary_uri"] = uri
    except Exception as e:  # noqa: BLE001
        logger.warning("could not write the run summary under %s: %s", destination, e)
        summary["summary_uri"] = None
    try:
        create_markdown_artifact(markdown=markdown + f"\n\nSummary file: `{summary['summary_uri']}`\n",
                                 key=SUMMARY_KEY, description=f"oldphoto restore run {run_id}")
    except Exception as e:  # noqa: BLE001
        logger.warning("could not create the summary artefact: %s", e)


def _restore(source: str | None, destination: str | None, catalog: str | None, options: dict[str, Any],
             limit: int | None, reprocess_failed: bool, ray_address: str | None, weights: str | None,
             ray_config: dict[str, Any] | None):
    from oldphoto.pipeline import RestoreOptions, check_models

    logger = get_run_logger()
    config = DistributedConfig.from_dict(ray_config)
    if ray_address:
        config.ray_address = ray_address
    opts = RestoreOptions(**options)
    stage_source = StageSource(WeightsSource.from_env(weights), opts)
    # missing weights stop the run here, with what is missing and how to get it (not once per item)
    check_models(stage_source.weights.load("cpu"), stage_source.restore_options())
    params, fp = run_parameters(stage_source)
    plan = plan_run(source, destination, limit, reprocess_failed, catalog, fp)
    run_params = {**params, "source": source, "destination": plan.destination,
                  "weights": stage_source.weights.spec(), "reprocess_failed": reprocess_failed, "limit": limit}
    run_id = open_run(catalog, run_params, fp, str(flow_run.id) if flow_run.id else None)
    stage_source.run_id = run_id
    plan.todo, plan.busy = claim_run_items(catalog, run_id, plan.todo)
    with Heartbeat(_catalog(catalog), run_id):
        results = (restore_on_ray(plan.todo, plan.destination, stage_source, config, catalog, run_id)
                   if plan.todo else [])
    summary, markdown = summarise(results, plan, run_id)
    c = summary["counts"]
    close_run(catalog, run_id, c["skipped"] - len(plan.not_inputs),
              f"{c['failed']} item(s) failed" if c["failed"] else None, plan.not_inputs)
    publish_summary(summary, markdown, logger)
    msg = (f"run {run_id}: {c['done']} done, {c['failed']} failed, {c['skipped']} skipped; "
           f"summary at {summary.get('summary_uri')}")
    logger.info(msg)
    if c["failed"] and not c["done"]:
        return Failed(message=f"every item failed ({msg})", data=summary)
    if c["failed"]:
        return Completed(message=f"completed with {c['failed']} failed item(s): {msg}", data=summary)
    return Completed(message=msg, data=summary)


def _options(scratch: str, hr: bool, faces: bool, colour: bool, tone_match: bool, tile: int,
             options: dict[str, Any] | None) -> dict[str, Any]:
    """The flow's restore options: its own parameters over `options`; a device is refused (`check_no_device`)."""
    check_no_device(options or {})
    return {**(options or {}), "scratch": scratch, "hr": hr, "faces": faces, "colour": colour,
            "tone_match": tone_match, "tile": tile}


@flow(name="restore-archive", log_prints=True)
def restore_archive(source: str | None = None, destination: str | None = None, catalog: str | None = None,
                    scratch: str = "auto", hr: bool = False, faces: bool = True, colour: bool = False,
                    tone_match: bool = True, tile: int = 512, options: dict[str, Any] | None = None,
                    limit: int | None = None, reprocess_failed: bool = False, ray_address: str | None = None,
                    weights: str | None = None, ray_config: dict[str, Any] | None = None):
    """Restore every image below `source` into `destination` (s3://bucket/prefix/, file:// or a folder) on Ray
    (`ray_address`, default $RAY_ADDRESS or an embedded local session), recording each item in the catalog
    (`catalog`: None = $OLDPHOTO_CATALOG, or secret:BLOCK; never a URL with a password).

    weights: "default" (shipped), a folder of oldphoto weights, or "official:/path/to/release"
    (default $OLDPHOTO_WEIGHTS). Items already done with the same weights and options are skipped;
    `reprocess_failed` retries only the catalog's failed items. `ray_config`: DistributedConfig fields
    (pool sizes, num_gpus per pool, batch size). scratch, hr, faces, colour, tone_match, tile: as
    `oldphoto restore`; `options`: any other `oldphoto.pipeline.RestoreOptions` field but the device (each Ray
    pool chooses its own; refused)."""
    return _restore(source, destination, catalog, _options(scratch, hr, faces, colour, tone_match, tile, options),
                    limit, reprocess_failed, ray_address, weights, ray_config)


@flow(name="reprocess-failed", log_prints=True)
def reprocess_failed(destination: str | None = None, catalog: str | None = None, source: str | None = None,
                     scratch: str = "auto", hr: bool = False, faces: bool = True, colour: bool = False,
                     tone_match: bool = True, tile: int = 512, options: dict[str, Any] | None = None,
                     limit: int | None = None, ray_address: str | None = None, weights: str | None = None,
                     ray_config: dict[str, Any] | None = None):
    """Run the catalog's failed items again (only those below `source` when given), into the destination
    their last run wrote to (or `destination`). Options as `restore-archive`."""
    return _restore(source, destination, catalog, _options(scratch, hr, faces, colour, tone_match, tile, options),
                    limit, True, ray_address, weights, ray_config)


if __name__ == "__main__":
    import sys

    restore_archive(source=sys.argv[1], destination=sys.argv[2])
