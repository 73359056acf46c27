"""Prefect flow `reprocess-reviewed`: the reprocess requests curators queued in the review app
(`oldphoto review serve`), each run with the options of its run changed as the reviewer asked, written where
that result was written and recorded as a new run (`oldphoto.review.reprocess`; the same as
`oldphoto review reprocess`). The catalog URL comes from $OLDPHOTO_CATALOG or a Prefect Secret block
(`catalog=secret:NAME`), as for `restore-archive`.
"""
from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from oldphoto.flows.restore_archive import catalog_url
from oldphoto.weights_source import WeightsSource


@flow(name="reprocess-reviewed", log_prints=True)
def reprocess_reviewed(catalog: str | None = None, weights: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """Run every queued reprocess request (weights: as `restore-archive`, default $OLDPHOTO_WEIGHTS)."""
    from oldphoto.catalog import Catalog
    from oldphoto.review.reprocess import run_queue

    logger = get_run_logger()
    cat = Catalog(catalog_url(catalog))
    cat.upgrade()
    models = WeightsSource.from_env(weights).load(device)
    runs = run_queue(cat, models, device=device, say=logger.info)
    logger.info("%d run(s) for the reviewers' reprocess requests: %s", len(runs), ", ".join(runs) or "none queued")
    return {"runs": runs}
