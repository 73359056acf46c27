"""The archive workflow as a museum runs it: a real Prefect server, `prefect deploy` from prefect.yaml, a process
worker, deployments triggered with `prefect deployment run`, scans in (moto) S3, Ray, and the catalog."""
from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from oldphoto.catalog import Catalog
from services import CORRUPT_JPEG, CORRUPT_PNG, REPO, RayHead, make_bucket, small_scans, stop_process
from oldphoto.storage import open_storage

pytestmark = [pytest.mark.slow, pytest.mark.prefect, pytest.mark.ray, pytest.mark.timeout(900)]

SRC = "s3://night-scans/2024-05-01/"
DEST = "s3://restored/out/"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, moto_s3, prefect_server):
    """Prefect server + deployments + one process worker + a Ray head; yields (server, catalog URL)."""
    from oldphoto.testing.random_weights import make_random_weights

    tmp = tmp_path_factory.mktemp("stack")
    weights = tmp / "weights"
    make_random_weights(weights, seed=5, tiny=True)
    catalog_url = f"sqlite:///{tmp / 'catalog.sqlite'}"
    # `ray start --head` in Ray's default auth mode (token authentication on), as a museum starts it
    head = RayHead(tmp, auth_token=secrets.token_hex(16))
    head.start()
    assert "Token authentication is enabled" in head.log.read_text()
    env = {"OLDPHOTO_CATALOG": catalog_url, "OLDPHOTO_WEIGHTS": str(weights), "RAY_ADDRESS": head.address,
           "RAY_AUTH_TOKEN": head.auth_token}
    prefect_server.env.update(env)
    prefect_server.env.pop("RAY_AUTH_MODE", None)

    r = prefect_server.run("work-pool", "create", "oldphoto-process", "--type", "process")
    assert r.returncode == 0, r.stdout + r.stderr
    # as a museum with the installed package does it: `prefect deploy` in a folder that holds only prefect.yaml,
    # the worker started in an empty folder; neither is the checkout
    deploy_dir, worker_dir = tmp / "deploy", tmp / "worker-cwd"
    deploy_dir.mkdir()
    worker_dir.mkdir()
    shutil.copy(REPO / "prefect.yaml", deploy_dir / "prefect.yaml")
    r = prefect_server.run("--no-prompt", "deploy", "--all", cwd=deploy_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("restore-archive/nightly", "restore-archive/on-demand", "reprocess-failed/on-demand"):
        assert name in r.stdout, r.stdout
    worker = prefect_server.spawn("worker", "start", "--pool", "oldphoto-process", "--type", "process",
                                  log=tmp / "worker.log", cwd=worker_dir)
    try:
        yield prefect_server, catalog_url, worker_dir
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


def test_nightly_archive_workflow(stack, moto_s3):
    server, catalog_url, _ = stack
    # the nightly deployment is scheduled by cron on the process pool, as prefect.yaml says
    nightly = _get(server, "/deployments/name/restore-archive/nightly")
    assert nightly["work_pool_name"] == "oldphoto-process"
    assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["30 1 * * *"]
    assert nightly["parameters"]["source"] == "s3://oldphoto-scans/incoming/"
    make_bucket(moto_s3, "night-scans")
    make_bucket(moto_s3, "restored")
    src = open_storage(SRC)
    # nested folders (boxes), the same file name in two of them, and files that are not inputs
    scans = {f"box{i % 2}/old/{n}" if i < 4 else f"box{i % 2}/{n}": d
             for i, (n, d) in enumerate(small_scans(6, seed=2).items())}
    scans["box9/scan_00.jpg"] = small_scans(1, seed=3)["scan_00.jpg"]
    for name, data in scans.items():
        src.write_bytes(SRC + name, data)
    src.write_bytes(SRC + "broken_a.jpg", CORRUPT_JPEG)
    src.write_bytes(SRC + "broken_b.png", CORRUPT_PNG)
    src.write_bytes(SRC + "box0/notes.txt", b"box 0: wedding, 1923")
    src.write_bytes(SRC + "box1/.DS_Store", b"\x00junk")
    dest = open_storage(DEST)
    stem = {n: n.rsplit(".", 1)[0] for n in scans}                   # DEST/<path below SOURCE, no suffix>/

    # 1. the on-demand deployment, triggered as a user does
    _run(server, "restore-archive/on-demand", {"source": SRC, "destination": DEST, "scratch": "auto"})
    cat = Catalog(catalog_url)
    counts = cat.status_counts()
    assert counts["done"] == 7 and counts["failed"] == 2, counts
    failed = {i.name: i for i in cat.failed_items()}
    assert set(failed) == {"broken_a", "broken_b"}
    assert all(i.last_error and i.last_error.startswith("load:") for i in failed.values())
    for name in scans:
        for f in ("restored.png", "mask.png", "review.png", "provenance.json"):
            assert dest.exists(f"{DEST}{stem[name]}/{f}"), f"{stem[name]}/{f} missing in S3"
        prov = json.loads(dest.read_bytes(f"{DEST}{stem[name]}/provenance.json"))
        assert prov["status"] == "done" and prov["input"]["uri"] == SRC + name
    first_run = cat.runs(limit=1)[0]
    summary = _latest_summary(catalog_url)
    assert summary["counts"] == {"done": 7, "failed": 2, "skipped": 2, "total": 11}
    assert {s["uri"] for s in summary["skipped"]} == {SRC + "box0/notes.txt", SRC + "box1/.DS_Store"}
    assert (first_run.n_done, first_run.n_failed, first_run.n_skipped, first_run.state) == (7, 2, 2, "finished")
    assert {f["name"] for f in summary["failures"]} == {"broken_a", "broken_b"}
    assert len(summary["review_sheets"]) == 7 and all(u.endswith("/review.png") for u in summary["review_sheets"])
    md = _artifact_markdown(server)
    assert "broken_a" in md and "| 7 | 2 | 2 | 11 |" in md and "review.png" in md
    # the flow run's final state says that items failed
    state = _get(server, f"/flow_runs/{first_run.flow_run_id}")["state"]
    assert state["type"] == "COMPLETED" and "2 failed item(s)" in state["message"], state
    stamps = {n: dest.fs.info(f"{DEST}{stem[n]}/restored.png")["LastModified"] for n in scans}

    # 2. the corrupt scans are replaced; reprocess-failed finishes them, where the first run wrote (from the
    # catalog), and touches nothing else
    fixed = small_scans(2, seed=9)
    src.write_bytes(SRC + "broken_a.jpg", fixed["scan_00.jpg"])
    src.write_bytes(SRC + "broken_b.png", fixed["scan_01.png"])
    _run(server, "reprocess-failed/on-demand", {})
    counts = cat.status_counts()
    assert counts["done"] == 9 and counts["failed"] == 0, counts
    assert _latest_summary(catalog_url)["counts"] == {"done": 2, "failed": 0, "skipped": 0, "total": 2}
    for name in ("broken_a", "broken_b"):
        assert dest.exists(f"{DEST}{name}/restored.png")

    # 3. a second full run recomputes nothing
    _run(server, "restore-archive/on-demand", {"source": SRC, "destination": DEST})
    assert _latest_summary(catalog_url)["counts"] == {"done": 0, "failed": 0, "skipped": 11, "total": 11}
    assert cat.status_counts()["done"] == 9
    for n, t in stamps.items():
        assert dest.fs.info(f"{DEST}{stem[n]}/restored.png")["LastModified"] == t
    # the originals are untouched
    for name, data in scans.items():
        assert src.read_bytes(SRC + name) == data


def test_deployments_need_no_checkout(stack, moto_s3):
    """The deployments name the flows by module path and record no folder: a worker started in an empty folder,
    away from the checkout, runs them from the installed package, and nothing is copied into its folder."""
    server, catalog_url, worker_dir = stack
    for name in ("restore-archive/nightly", "restore-archive/on-demand", "reprocess-failed/on-demand",
                 "reprocess-reviewed/on-demand"):
        dep = _get(server, f"/deployments/name/{name}")
        assert dep["entrypoint"].startswith("oldphoto.flows.") and "/" not in dep["entrypoint"], dep["entrypoint"]
        assert dep["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "."}}]
        assert not dep.get("path") and str(REPO) not in json.dumps(dep), dep
    src, dest = "s3://night-scans/no-checkout/", "s3://restored/no-checkout/"
    for bucket in ("night-scans", "restored"):
        if not open_storage(f"s3://{bucket}").exists(f"s3://{bucket}"):
            make_bucket(moto_s3, bucket)
    open_storage(src).write_bytes(src + "one.png", small_scans(2, seed=6)["scan_01.png"])
    out = _run(server, "restore-archive/on-demand", {"source": src, "destination": dest, "scratch": "off"})
    assert "Completed" in out
    prov = json.loads(open_storage(dest).read_bytes(f"{dest}one/provenance.json"))
    assert prov["status"] == "done" and prov["input"]["uri"] == src + "one.png"
    assert list(worker_dir.iterdir()) == []


@pytest.mark.postgres
def test_catalog_password_never_reaches_prefect(stack, moto_s3, tmp_path):
    """`oldphoto archive --catalog postgresql://user:PASSWORD@...`: the password is in no flow parameter, so in
    nothing Prefect stores or shows (its database, its logs), nor in any output or log of the run."""
    from pg import PostgresServer, PostgresUnavailable

    server, _, _ = stack
    sentinel = "Sentinel-" + secrets.token_hex(8)
    try:
        pg = PostgresServer.start()
    except PostgresUnavailable as e:
        pytest.skip(str(e))
    with pg:
        url = pg.create_database("secrets").replace("postgres@", f"postgres:{sentinel}@")
        source, dest = "s3://night-scans/secret-in/", "s3://restored/secret-run/"
        for bucket in ("night-scans", "restored"):
            if not open_storage(f"s3://{bucket}").exists(f"s3://{bucket}"):
                make_bucket(moto_s3, bucket)
        for name, data in small_scans(2, seed=4).items():
            open_storage(source).write_bytes(source + name, data)
        env = {**server.env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        env.pop("OLDPHOTO_CATALOG", None)
        r = subprocess.run([sys.executable, "-c", "from oldphoto.cli import main; main()", "archive", source, dest,
                            "--catalog", url, "--limit", "2"], env=env, capture_output=True, text=True, timeout=600,
                           cwd=tmp_path)
        out = r.stdout + r.stderr
        assert r.returncode in (0, 1) and "2 done" in out, out[-3000:]
        run = Catalog(url).runs(limit=1)[0]
        assert run.n_done == 2 and sentinel not in json.dumps(run.parameters)
        flow_run = _get(server, f"/flow_runs/{run.flow_run_id}")
        assert "catalog" in flow_run["parameters"] and sentinel not in json.dumps(flow_run)
    assert sentinel not in out
    places = [p for p in Path(server.home).rglob("*") if p.is_file()]                 # Prefect's DB, its logs
    places += [p for p in Path(server.home).parent.glob("stack*/*.log")]              # the worker's log
    assert any(p.name.startswith("prefect.db") for p in places)
    for p in places:
        assert sentinel.encode() not in p.read_bytes(), p
    store = open_storage(dest)
    for key in store.fs.find(dest.removeprefix("s3://")):                            # every output of the run
        assert sentinel.encode() not in store.read_bytes("s3://" + key), key
