"""The archive workflow as a museum runs it: a real Prefect server, `prefect deploy` from prefect.yaml, a process
worker, deployments triggered with `prefect deployment run`, scans in (moto) S3, Ray, and the catalog."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from oldphoto.catalog import Catalog
from services import (CORRUPT_JPEG, CORRUPT_PNG, REPO, RayHead, make_bucket, moto_s3, prefect_server,  # noqa: F401
                      small_scans, stop_process)
from oldphoto.storage import open_storage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SRC = "s3://night-scans/2024-05-01/"
DEST = "s3://restored/out/"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, moto_s3, prefect_server):  # noqa: F811
    """Prefect server + deployments + one process worker + a Ray head; yields (server, catalog URL)."""
    from oldphoto.models import make_random_weights

    tmp = tmp_path_factory.mktemp("stack")
    weights = tmp / "weights"
    make_random_weights(weights, seed=5, tiny=True)
    catalog_url = f"sqlite:///{tmp / 'catalog.sqlite'}"
    head = RayHead(tmp)
    head.start()
    env = {"OLDPHOTO_CATALOG": catalog_url, "OLDPHOTO_WEIGHTS": str(weights), "RAY_ADDRESS": head.address,
           "RAY_AUTH_MODE": "disabled"}
    prefect_server.env.update(env)

    r = prefect_server.run("work-pool", "create", "oldphoto-process", "--type", "process")
    assert r.returncode == 0, r.stdout + r.stderr
    r = prefect_server.run("--no-prompt", "deploy", "--all")
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("restore-archive/nightly", "restore-archive/on-demand", "reprocess-failed/on-demand"):
        assert name in r.stdout, r.stdout
    worker = prefect_server.spawn("worker", "start", "--pool", "oldphoto-process", "--type", "process",
                                  log=tmp / "worker.log")
    try:
        yield prefect_server, catalog_url
    finally:
        stop_process(worker)
        head.stop()


def _run(server, deployment: str, params: dict) -> str:
    args = [a for k, v in params.items() for a in ("-p", f"{k}={v}")]      # as a user types it
    r = server.run("deployment", "run", deployment, *args, "--watch", "--watch-timeout", "600", timeout=660)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Completed" in out, out[-4000:] + _worker_log(server)
    return out


def _worker_log(server) -> str:
    logs = sorted(Path(server.home).parent.glob("stack*/worker.log"))
    return "".join(f"\n--- {p} ---\n{p.read_text(errors='replace')[-6000:]}" for p in logs)


def _latest_summary(catalog_url: str) -> dict:
    run = Catalog(catalog_url).runs(limit=1)[0]
    return json.loads(open_storage(DEST).read_bytes(f"{DEST}_runs/{run.id}/summary.json"))


def _artifact_markdown(server) -> str:
    """The newest run-summary artefact, read from the Prefect server's REST API."""
    import urllib.request

    body = {"artifacts": {"key": {"any_": ["restore-archive-summary"]}}, "sort": "CREATED_DESC", "limit": 1}
    req = urllib.request.Request(f"{server.api_url}/artifacts/filter", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        arts = json.loads(r.read())
    return arts[0]["data"] if arts else ""


def _get(server, path: str):
    import urllib.request

    with urllib.request.urlopen(f"{server.api_url}{path}", timeout=30) as r:
        return json.loads(r.read())


def test_nightly_archive_workflow(stack, moto_s3):  # noqa: F811
    server, catalog_url = stack
    # the nightly deployment is scheduled by cron on the process pool, as prefect.yaml says
    nightly = _get(server, "/deployments/name/restore-archive/nightly")
    assert nightly["work_pool_name"] == "oldphoto-process"
    assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["30 1 * * *"]
    assert nightly["parameters"]["source"] == "s3://oldphoto-scans/incoming/"
    make_bucket(moto_s3, "night-scans")
    make_bucket(moto_s3, "restored")
    src = open_storage(SRC)
    scans = small_scans(6, seed=2)
    for name, data in scans.items():
        src.write_bytes(SRC + name, data)
    src.write_bytes(SRC + "broken_a.jpg", CORRUPT_JPEG)
    src.write_bytes(SRC + "broken_b.png", CORRUPT_PNG)
    dest = open_storage(DEST)

    # 1. the on-demand deployment, triggered as a user does
    _run(server, "restore-archive/on-demand", {"source": SRC, "destination": DEST, "scratch": "auto"})
    cat = Catalog(catalog_url)
    counts = cat.status_counts()
    assert counts["done"] == 6 and counts["failed"] == 2, counts
    failed = {i.name: i for i in cat.failed_items()}
    assert set(failed) == {"broken_a", "broken_b"}
    assert all(i.last_error and i.last_error.startswith("load:") for i in failed.values())
    for name in scans:
        stem = name.rsplit(".", 1)[0]
        for f in ("restored.png", "mask.png", "review.png", "provenance.json"):
            assert dest.exists(f"{DEST}{stem}/{f}"), f"{stem}/{f} missing in S3"
        prov = json.loads(dest.read_bytes(f"{DEST}{stem}/provenance.json"))
        assert prov["status"] == "done" and prov["input"]["uri"] == SRC + name
    summary = _latest_summary(catalog_url)
    assert summary["counts"] == {"done": 6, "failed": 2, "skipped": 0, "total": 8}
    assert {f["name"] for f in summary["failures"]} == {"broken_a", "broken_b"}
    assert len(summary["review_sheets"]) == 6 and all(u.endswith("/review.png") for u in summary["review_sheets"])
    md = _artifact_markdown(server)
    assert "broken_a" in md and "| 6 | 2 | 0 | 8 |" in md and "review.png" in md
    stamps = {n: dest.fs.info(f"{DEST}{n.rsplit('.', 1)[0]}/restored.png")["LastModified"] for n in scans}

    # 2. the corrupt scans are replaced; reprocess-failed finishes them and touches nothing else
    fixed = small_scans(2, seed=9)
    src.write_bytes(SRC + "broken_a.jpg", fixed["scan_00.jpg"])
    src.write_bytes(SRC + "broken_b.png", fixed["scan_01.png"])
    _run(server, "reprocess-failed/on-demand", {"destination": DEST})
    counts = cat.status_counts()
    assert counts["done"] == 8 and counts["failed"] == 0, counts
    assert _latest_summary(catalog_url)["counts"] == {"done": 2, "failed": 0, "skipped": 0, "total": 2}
    for stem in ("broken_a", "broken_b"):
        assert dest.exists(f"{DEST}{stem}/restored.png")

    # 3. a second full run recomputes nothing
    _run(server, "restore-archive/on-demand", {"source": SRC, "destination": DEST})
    assert _latest_summary(catalog_url)["counts"] == {"done": 0, "failed": 0, "skipped": 8, "total": 8}
    assert cat.status_counts()["done"] == 8
    for n, t in stamps.items():
        assert dest.fs.info(f"{DEST}{n.rsplit('.', 1)[0]}/restored.png")["LastModified"] == t
    # every item has one done attempt with this fingerprint, and the originals are untouched
    for name, data in scans.items():
        assert src.read_bytes(SRC + name) == data
