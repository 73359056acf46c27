"""Run the reprocess requests reviewers queued (`oldphoto review reprocess`): each request is the item again with
the options of the run it came from, changed as the reviewer asked (e.g. scratch off, no faces), written where
that result was written (DEST/<item>/, replacing its files, as a re-run with other options does) and recorded
as a new run in the catalog. Requests are taken (queued -> taken) before work starts, so two workers never do
the same one, and marked done with the run that did them.
"""
from __future__ import annotations

import dataclasses
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from oldphoto.catalog import review as rq

if TYPE_CHECKING:
    from oldphoto.catalog import Catalog


@dataclass
class Batch:
    destination: str
    options: dict[str, Any]              # RestoreOptions fields
    requests: list[dict[str, Any]]


def plan(cat: "Catalog", device: str = "cpu") -> list[Batch]:
    """The queued requests grouped by (destination, resulting options)."""
    from oldphoto.pipeline import RestoreOptions

    fields = {f.name for f in dataclasses.fields(RestoreOptions)}
    groups: dict[tuple[str, str], Batch] = {}
    for req in rq.reprocess_queue(cat, "queued"):
        run_params = _run_parameters(cat, req["run_id"])
        opts = {k: v for k, v in run_params.items() if k in fields}
        opts.update(req["options"] or {})
        opts["device"] = device
        dest = req["destination"] or run_params.get("destination")
        if not dest:
            continue
        key = (dest, repr(sorted(opts.items())))
        groups.setdefault(key, Batch(dest, opts, [])).requests.append(req)
    return list(groups.values())


def _run_parameters(cat: "Catalog", run_id: str | None) -> dict[str, Any]:
    return dict(cat.run(run_id).parameters or {}) if run_id else {}


def _name(cat: "Catalog", req: dict[str, Any], destination: str) -> str:
    """The item's folder below DEST (where its restored image was written), else its catalog name."""
    for a in rq.artefacts(cat, req["result_id"]) if req["result_id"] else []:
        if a["kind"] == "restored":
            folder = posixpath.dirname(a["uri"])
            base = destination.rstrip("/")
            if folder.startswith(base + "/"):
                return folder[len(base) + 1:]
    return req["item_name"]


def run_queue(cat: "Catalog", models: Any, device: str = "cpu", say: Callable[[str], None] = print) -> list[str]:
    """Do every queued request; returns the ids of the runs opened (one per batch)."""
    from oldphoto.lifecycle import Recorder, WorkItem, run_fingerprint, start_item, write_item
    from oldphoto.pipeline import Restorer, RestoreOptions, check_models

    runs: list[str] = []
    for batch in plan(cat, device):
        options = RestoreOptions(**batch.options)
        check_models(models, options)
        params, fp = run_fingerprint(options, models)
        ids = [r["id"] for r in batch.requests]
        run_id = cat.start_run({**params, "device": device, "destination": batch.destination,
                                "reprocess_requests": ids}, fingerprint=fp)
        if rq.set_queue_state(cat, ids, "taken", run_id=run_id, expect="queued") == 0:
            cat.finish_run(run_id, reason="nothing left to take")
            continue
        taken = [r for r in rq.reprocess_queue(cat, "taken") if r["queue_run_id"] == run_id]
        restorer, record = Restorer(models, options), Recorder(cat, run_id)
        failed = 0
        for req in taken:
            item = WorkItem(req["source_uri"], _name(cat, req, batch.destination))
            state = restorer.process(start_item(item, batch.destination, options, run_id))
            write_item(state, batch.destination)
            record(state.provenance)
            failed += int(state.failed)
            say(f"{item.name}: {'failed: ' + str(state.error) if state.failed else 'done'} (request {req['id']})")
        rq.set_queue_state(cat, [r["id"] for r in taken], "done", run_id=run_id)
        cat.finish_run(run_id, reason=f"{failed} item(s) failed" if failed else None)
        runs.append(run_id)
    return runs
