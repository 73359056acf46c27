"""Prefect flows for the nightly archive run: list a night's scans, restore them on Ray, record them in the catalog.

    restore-archive     source -> destination: every image below `source` not already done with these weights
                        and parameters (same input sha256 + fingerprint = skipped); `reprocess_failed=True`
                        retries only the items the catalog lists as failed.
    reprocess-failed    the catalog's failed items again (after their files were replaced or a fix deployed).

Deployments (prefect.yaml): `restore-archive/nightly` (cron) and `restore-archive/on-demand`, on a process
work pool. Outputs go to DEST/NAME/... exactly as `oldphoto restore` writes them (restored image, mask, faces,
review sheet, provenance.json). Each run ends with a summary artefact: counts, failures with their reasons,
and where the review sheets are.
"""
from __future__ import annotations

import os
import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE as NO_CACHE
from prefect.runtime import flow_run

from oldphoto.distributed import DistributedConfig, StageSource, WeightsSource, WorkItem, ensure_ray, work_items
from oldphoto.distributed.pipeline import DoneInCatalog, ItemResult, iter_pipeline, run_parameters
from oldphoto.provenance import ItemProvenance
from oldphoto.storage import open_storage

RETRIES = dict(retries=3, retry_delay_seconds=[2, 10, 30], cache_policy=NO_CACHE)
RECORD_EVERY = 25          # results per catalog transaction while the pipeline streams
SUMMARY_KEY = "restore-archive-summary"


def catalog_url(url: str | None) -> str:
    """The catalog URL (default: $OLDPHOTO_CATALOG, else a SQLite file in the working directory), with a
    SQLite path made absolute so Ray workers in other directories open the same file."""
    from oldphoto.catalog import default_url

    url = url or default_url()
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix) and not url[len(prefix):].startswith(("/", ":memory:")) and url[len(prefix):]:
            return prefix + os.path.abspath(url[len(prefix):])
    return url


@task(name="plan-items", **RETRIES)
def plan_items(source: str | None, limit: int | None, reprocess_failed: bool, catalog: str) -> list[WorkItem]:
    """The items of this run: the images below `source`, or (reprocess_failed) the catalog's failed items."""
    logger = get_run_logger()
    if reprocess_failed:
        from oldphoto.catalog import Catalog

        failed = Catalog(catalog).failed_items()
        if source:
            listed = {it.uri: it for it in work_items(source)}
            items = [listed[f.source_uri] for f in failed if f.source_uri in listed]
        else:
            items = [WorkItem(f.source_uri, f.name) for f in failed]
        items = items[:limit] if limit else items
        logger.info("reprocessing %d failed item(s)", len(items))
        return items
    if not source:
        raise ValueError("restore-archive needs `source` (s3://bucket/prefix/, file:///path or a folder)")
    items = work_items(source, limit=limit)
    logger.info("%d image(s) below %s", len(items), source)
    return items


@task(name="open-run", **RETRIES)
def open_run(catalog: str, parameters: dict[str, Any], fingerprint: str, flow_run_id: str | None) -> str:
    from oldphoto.catalog import Catalog

    cat = Catalog(catalog)
    cat.upgrade()
    return cat.start_run(parameters, flow_run_id=flow_run_id, fingerprint=fingerprint)


@task(name="register-results", **RETRIES)
def register_results(catalog: str, run_id: str, records: list[dict[str, Any]]) -> int:
    """Record finished items in the catalog (idempotent: re-recording an item of a run replaces it)."""
    from oldphoto.catalog import Catalog

    return Catalog(catalog).record_many([ItemProvenance.from_dict(r) for r in records], run_id)


@task(name="close-run", **RETRIES)
def close_run(catalog: str, run_id: str) -> dict[str, Any]:
    from oldphoto.catalog import Catalog

    info = Catalog(catalog).finish_run(run_id)
    return {"n_items": info.n_items, "n_done": info.n_done, "n_failed": info.n_failed}


@task(name="restore-on-ray", cache_policy=NO_CACHE)
def restore_on_ray(items: list[WorkItem], destination: str, source: StageSource, config: DistributedConfig,
                   catalog: str, run_id: str, fingerprint: str) -> list[dict[str, Any]]:
    """The Ray pipeline; every finished item is recorded in the catalog as results stream in."""
    import ray

    logger = get_run_logger()
    started_here = not ray.is_initialized()
    ensure_ray(config)
    results: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    t0, n = time.perf_counter(), len(items)
    try:
        for res in iter_pipeline(items, destination, source, config, skip_if=DoneInCatalog(catalog, fingerprint)):
            results.append(_brief(res))
            if res.status != "skipped" and res.provenance is not None:
                pending.append(res.provenance.to_dict())
            if res.status == "failed":
                logger.warning("%s failed: %s", res.name, res.error)
            if len(pending) >= RECORD_EVERY:
                register_results(catalog, run_id, pending)
                pending = []
            if len(results) % 10 == 0 or len(results) == n:
                logger.info("%d/%d items finished (%.1f s)", len(results), n, time.perf_counter() - t0)
        if pending:
            register_results(catalog, run_id, pending)
    finally:
        if started_here:
            ray.shutdown()
    return results


def _brief(res: ItemResult) -> dict[str, Any]:
    return {"uri": res.uri, "name": res.name, "status": res.status, "error": res.error,
            "review": res.outputs.get("review.png"), "restored": next(
                (u for k, u in res.outputs.items() if k.startswith("restored.")), None)}


def summarise(results: list[dict[str, Any]], destination: str, run_id: str) -> tuple[dict[str, Any], str]:
    counts = {s: sum(r["status"] == s for r in results) for s in ("done", "failed", "skipped")}
    counts["total"] = len(results)
    failures = [{"name": r["name"], "uri": r["uri"], "error": r["error"]} for r in results if r["status"] == "failed"]
    reviews = [r["review"] for r in results if r["status"] == "done" and r["review"]]
    lines = [f"# Restore run `{run_id}`", "", f"Destination: `{destination}`", "",
             "| done | failed | skipped (already done) | total |", "|---:|---:|---:|---:|",
             f"| {counts['done']} | {counts['failed']} | {counts['skipped']} | {counts['total']} |", ""]
    if failures:
        lines += ["## Failures", "", "| item | reason |", "|---|---|"]
        lines += [f"| `{f['name']}` | {str(f['error']).replace('|', '/')} |" for f in failures] + [""]
    if reviews:
        lines += ["## Review sheets (before / after / mask)", ""]
        lines += [f"- {u}" for u in reviews[:200]]
        if len(reviews) > 200:
            lines.append(f"- ... and {len(reviews) - 200} more, under `{destination}`")
    summary = {"run_id": run_id, "destination": destination, "counts": counts, "failures": failures,
               "review_sheets": reviews}
    return summary, "\n".join(lines)


def _restore(source: str | None, destination: str, catalog_url_: str | None, scratch: str, limit: int | None,
             reprocess_failed: bool, ray_address: str | None, weights: str | None, faces: bool, hr: bool,
             ray_config: dict[str, Any] | None) -> dict[str, Any]:
    import json

    from oldphoto.pipeline import RestoreOptions, check_models

    logger = get_run_logger()
    catalog = catalog_url(catalog_url_)
    config = DistributedConfig.from_dict(ray_config)
    if ray_address:
        config.ray_address = ray_address
    stage_source = StageSource(WeightsSource.parse(weights or os.environ.get("OLDPHOTO_WEIGHTS")),
                               RestoreOptions(scratch=scratch, faces=faces, hr=hr))
    # missing weights stop the run here, with what is missing and how to get it (not once per item)
    check_models(stage_source.weights.load("cpu"), stage_source.restore_options())
    params, fp = run_parameters(stage_source)
    items = plan_items(source, limit, reprocess_failed, catalog)
    run_params = {**params, "source": source, "destination": destination, "weights": stage_source.weights.spec(),
                  "reprocess_failed": reprocess_failed, "limit": limit}
    run_id = open_run(catalog, run_params, fp, str(flow_run.id) if flow_run.id else None)
    stage_source.run_id = run_id
    results = restore_on_ray(items, destination, stage_source, config, catalog, run_id, fp) if items else []
    close_run(catalog, run_id)
    summary, markdown = summarise(results, destination, run_id)
    store = open_storage(destination)
    summary_uri = store.join(destination, "_runs", run_id, "summary.json")
    store.write_bytes(summary_uri, json.dumps(summary, indent=2).encode())
    summary["summary_uri"] = summary_uri
    create_markdown_artifact(markdown=markdown + f"\n\nSummary file: `{summary_uri}`\n", key=SUMMARY_KEY,
                             description=f"oldphoto restore run {run_id}")
    c = summary["counts"]
    logger.info("run %s: %d done, %d failed, %d skipped; summary at %s", run_id, c["done"], c["failed"],
                c["skipped"], summary_uri)
    return summary


@flow(name="restore-archive", log_prints=True)
def restore_archive(source: str | None = None, destination: str = "restored", catalog_url: str | None = None,
                    scratch: str = "auto", limit: int | None = None, reprocess_failed: bool = False,
                    ray_address: str | None = None, weights: str | None = None, faces: bool = True,
                    hr: bool = False, ray_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Restore every image below `source` into `destination` (s3://bucket/prefix/, file:// or a folder) on Ray
    (`ray_address`, default $RAY_ADDRESS or an embedded local session), recording each item in the catalog.

    weights: "default" (shipped), a folder of oldphoto weights, or "official:/path/to/release"
    (default $OLDPHOTO_WEIGHTS). Items already done with the same weights and parameters are skipped;
    `reprocess_failed` retries only the catalog's failed items. `ray_config`: DistributedConfig fields."""
    return _restore(source, destination, catalog_url, scratch, limit, reprocess_failed, ray_address, weights,
                    faces, hr, ray_config)


@flow(name="reprocess-failed", log_prints=True)
def reprocess_failed(destination: str = "restored", catalog_url: str | None = None, source: str | None = None,
                     scratch: str = "auto", limit: int | None = None, ray_address: str | None = None,
                     weights: str | None = None, faces: bool = True, hr: bool = False,
                     ray_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the catalog's failed items again (only those below `source` when given)."""
    return _restore(source, destination, catalog_url, scratch, limit, True, ray_address, weights, faces, hr,
                    ray_config)


if __name__ == "__main__":
    import sys

    restore_archive(source=sys.argv[1], destination=sys.argv[2])
