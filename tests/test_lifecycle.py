"""The one item lifecycle (oldphoto.lifecycle) through `oldphoto restore`, with real files, a real tmpfs that
fills up, real over-long paths, a real `kill -9` and a real PostgreSQL server stopped mid-run."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from oldphoto.catalog import Catalog, CatalogError
from oldphoto.cli import app
from oldphoto.lifecycle import MAX_PART_BYTES, list_inputs, output_names, safe_part
from oldphoto.provenance import ItemProvenance

pytestmark = pytest.mark.timeout(900)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from oldphoto.testing.random_weights import make_random_weights

    d = tmp_path_factory.mktemp("lifecycle_weights")
    make_random_weights(d, seed=4, tiny=True)
    return d


def _png(side: int = 40, seed: int = 0, noise: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    if noise:
        arr = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    else:
        yy, xx = np.mgrid[0:side, 0:side]
        base = (100 + 50 * np.sin(xx / (3 + seed)) + 30 * np.cos(yy / 4)).clip(0, 255)
        arr = np.stack([base, base * 0.9, base * 0.8], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def _restore(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["restore", *args, "--scratch", "off", "--no-faces"])
    return r.exit_code, r.output


def _no_part_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if ".part" in p.name]


# ------------------------------------------------------------------------------------------- listing, names
def test_listing_rule_and_names(tmp_path):
    src = tmp_path / "scans"
    long_stem = "é" * 120                                     # 240 bytes: over MAX_PART_BYTES, a legal file name
    _tree(src, {"box12/old/a.png": b"1", "box12/scratch/a.png": b"2", "b.jpg": b"3", "B.JPG": b"4",
                "notes.txt": b"5", ".DS_Store": b"6", ".cache/c.png": b"7", f"{long_stem}.png": b"8",
                "box12/old/a.tif": b"9"})
    listing = list_inputs([str(src), str(src / "b.jpg")])         # a file given twice is listed once
    names = {Path(it.uri).relative_to(src).as_posix(): it.name for it in listing.items}
    assert names["box12/scratch/a.png"] == "box12/scratch/a"      # sub-folders kept
    # same folder name within the run (a.png / a.tif, b / B): each gets -<8 hex>
    assert names["box12/old/a.png"].startswith("box12/old/a-") and names["box12/old/a.tif"].startswith("box12/old/a-")
    assert names["b.jpg"] != names["B.JPG"] and names["b.jpg"].casefold() != names["B.JPG"].casefold()
    long_name = names[f"{long_stem}.png"]
    assert len(long_name.encode()) <= MAX_PART_BYTES + 9 and long_name.startswith("é" * 100)
    assert {Path(s.uri).relative_to(src).as_posix(): s.reason.split(" ")[0] for s in listing.skipped} == {
        "notes.txt": "not", ".DS_Store": "hidden", ".cache/c.png": "hidden"}
    # a file given directly is an input whatever its name
    assert [it.name for it in list_inputs([str(src / "notes.txt")]).items] == ["notes"]
    # writable parts: control characters, backslashes, '..' never reach a path
    assert safe_part("a\x00b\\c\n") == "a_b_c_" and safe_part("..") == "_"
    assert output_names(["x/../y.png"]) == ["x/_/y"]


def test_s3_listing_skips_dotdot_and_hidden_keys(tmp_path):
    from moto.server import ThreadedMotoServer

    from services import FAKE_AWS, patched_env

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        with patched_env({**FAKE_AWS, "AWS_ENDPOINT_URL": f"http://{host}:{port}"}):
            import boto3

            s3 = boto3.client("s3")
            s3.create_bucket(Bucket="lifecycle-listing")     # moto's state is per process: names of our own
            for key in ("night/box1/a.png", "night/box1/../evil.png", "night/.hidden.png", "night/x.txt"):
                s3.put_object(Bucket="lifecycle-listing", Key=key, Body=b"x")
            listing = list_inputs(["s3://lifecycle-listing/night/"])
            assert [(it.uri, it.name) for it in listing.items] == [("s3://lifecycle-listing/night/box1/a.png",
                                                                    "box1/a")]
            assert {s.uri.rsplit("night/", 1)[1]: s.reason.split(" ")[0] for s in listing.skipped} == {
                "box1/../evil.png": "unsafe", ".hidden.png": "hidden", "x.txt": "not"}
    finally:
        server.stop()


# --------------------------------------------------------------------------------- options and fingerprint
# fingerprints of these options (pinned when RestoreOptions became checked with pydantic, which must not move them;
# re-pinned on 2026-12-02 when the colour_correct and colour_strength options were added: a new option is a new
# record of what is computed, so every fingerprint moved once, on purpose; and again in session 7 for blob_guard
# and in session 11 for refine, in session 15 for detector_scales, in session 20 for structure_return; in session 21
# when the restoration revision joined the fingerprint, and again whenever RESTORATION_REVISION is raised (session
# 22 also added detector_mirror; session 23 raised it to 4, session 24 to 5))
_PINNED_FINGERPRINTS = [      # (options, fingerprint, the same options given as text have the same fingerprint)
    ({}, "7d90e7aa9bbaf371ab30b94c4c781a0cd00f1d1c3d19ff07fbe1ec63dcbcdd98", True),
    (dict(scratch="on", hr=True, tile=256, face_strength=0.5, face_min_agreement=24.0, precision="bf16",
          max_pixels=50_000_000), "9caa2beb051735e284aa84c5379ee36ef35b987ccae4a9cb31942dd083fe7de4", True),
    # ints given for float fields stay ints (their JSON, "1", is what was fingerprinted); the text "1" is 1.0
    (dict(face_strength=1, scratch_threshold=0), "b73d6a36f8dc633e21a66d4559494913a5c44fe38b4b38f7af4651d740a339c6",
     False),
]


class _OneCheckpoint:
    def has(self, role):
        return role == "vae_a"

    def checkpoint(self, role):
        return ("vae_a", "ab" * 32)


@pytest.mark.parametrize("kw,expected,text_same", _PINNED_FINGERPRINTS)
def test_options_fingerprint_is_unchanged_by_the_checks(kw, expected, text_same):
    from oldphoto.lifecycle import run_fingerprint
    from oldphoto.stages.base import RestoreOptions

    from oldphoto.lifecycle import RESTORATION_REVISION

    params, fp = run_fingerprint(RestoreOptions(**kw), _OneCheckpoint())
    assert fp == expected
    assert params == {**{k: v for k, v in RestoreOptions(**kw).to_dict().items() if k != "device"},
                      "restoration_revision": RESTORATION_REVISION}
    # the same options as text (Prefect parameters, forms) are coerced to the same values and fingerprint
    as_text = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in kw.items()}
    assert (run_fingerprint(RestoreOptions(**as_text), _OneCheckpoint())[1] == expected) is text_same


def test_a_new_restoration_revision_restores_again(monkeypatch):
    """The same options and weights under a raised restoration revision (a code change that restores differently)
    have another fingerprint, so the plan does not skip what an older revision restored."""
    import oldphoto.lifecycle as lc
    from oldphoto.stages.base import RestoreOptions

    params, before = lc.run_fingerprint(RestoreOptions(), _OneCheckpoint())
    monkeypatch.setattr(lc, "RESTORATION_REVISION", lc.RESTORATION_REVISION + 1)
    params_after, after = lc.run_fingerprint(RestoreOptions(), _OneCheckpoint())
    assert after != before and params_after["restoration_revision"] == params["restoration_revision"] + 1


def test_options_are_checked_with_clear_errors():
    from oldphoto.stages.base import RestoreOptions

    o = RestoreOptions(tile="256", hr="true", face_strength="0.5", global_batch=2.0)
    assert (o.tile, o.hr, o.face_strength, o.global_batch) == (256, True, 0.5, 2)
    assert type(o.tile) is int and type(o.global_batch) is int
    for kw, words in [(dict(scratch="maybe"), ["scratch", "'auto', 'on' or 'off'", "'maybe'"]),
                      (dict(precision="fp16"), ["precision", "'fp32' or 'bf16'"]),
                      (dict(tile=0), ["tile", "greater than 0"]),
                      (dict(tile_overlap=-1), ["tile_overlap", "greater than or equal to 0"]),
                      (dict(face_strength=1.5), ["face_strength", "less than or equal to 1"]),
                      (dict(scratch_threshold=-0.1), ["scratch_threshold"]),
                      (dict(global_batch=2.5), ["global_batch", "fractional"]),
                      (dict(faces="perhaps"), ["faces", "boolean"]),
                      (dict(max_pixels="many"), ["max_pixels", "integer"])]:
        with pytest.raises(ValueError) as e:
            RestoreOptions(**kw)
        msg = str(e.value)
        assert msg.startswith("invalid restore options: ") and all(w in msg for w in words), msg
    with pytest.raises(ValueError, match="tile: .*face_batch: "):          # every problem at once
        RestoreOptions(tile=-1, face_batch=0)


def test_restore_cli_reports_a_bad_option(tmp_path):
    img = tmp_path / "a.png"
    img.write_bytes(_png(seed=1))
    common = [str(img), "--out", str(tmp_path / "o"), "--catalog", f"sqlite:///{tmp_path / 'c.sqlite'}"]
    for args, words in [(["--scratch", "maybe"], ["scratch", "'auto', 'on' or 'off'"]),
                        (["--tile", "0"], ["tile", "greater than 0"]),
                        (["--max-megapixels", "0"], ["max_pixels", "greater than 0"])]:
        r = CliRunner().invoke(app, ["restore", *common, *args])
        text = " ".join(r.output.replace("│", " ").split())       # the message as typer's box wraps it
        assert r.exit_code == 2 and all(w in text for w in words), r.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "c.sqlite").exists()


# ------------------------------------------------------------------------------ mirror, skip, fingerprint
@pytest.mark.slow
def test_restore_mirrors_the_tree_and_skips_what_is_done(tmp_path, weights):
    src, out = tmp_path / "scans", tmp_path / "out"
    _tree(src, {"box12/old/a.png": _png(seed=1), "box12/scratch/a.png": _png(seed=2), "c.png": _png(seed=3),
                "notes.txt": b"not an image", ".DS_Store": b"x"})
    url = f"sqlite:///{tmp_path / 'cat.sqlite'}"
    code, output = _restore(str(src), "--out", str(out), "--weights", str(weights), "--catalog", url)
    assert code == 0, output
    for name in ("box12/old/a", "box12/scratch/a", "c"):
        prov = ItemProvenance.from_json((out / name / "provenance.json").read_text())
        assert prov.status == "done" and (out / name / "restored.png").is_file()
        assert prov.input.uri == str(src / f"{name}.png")
    assert "SKIPPED" in output and str(src / "notes.txt") in output
    cat = Catalog(url)
    first = cat.runs()[0]
    assert (first.state, first.n_done, first.n_skipped, first.n_items) == ("finished", 3, 2, 5)
    # files that are not inputs are in the catalog as skipped items, each with its reason
    skipped = {Path(i.source_uri).name: i.last_error for i in cat.items(status="skipped")}
    assert set(skipped) == {"notes.txt", ".DS_Store"} and all(skipped.values()), skipped
    assert "hidden" in skipped[".DS_Store"]
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("restored.png")}

    # the same inputs, weights and options, on another device setting: nothing is recomputed
    code, output = _restore(str(src), "--out", str(out), "--weights", str(weights), "--catalog", url,
                            "--device", "cpu", "--tile", "512")
    assert code == 0 and "3 already done" in output, output
    assert {p: p.stat().st_mtime_ns for p in out.rglob("restored.png")} == stamps
    second = cat.runs()[0]
    assert second.id != first.id and (second.n_done, second.n_skipped) == (0, 5)
    # a changed option is a different fingerprint: done again
    code, output = _restore(str(src / "c.png"), "--out", str(tmp_path / "out2"), "--weights", str(weights),
                            "--catalog", url, "--no-tone-match")
    assert code == 0 and "1 of 1 restored" in output, output


# --------------------------------------------------------------------------------- per-item write failures
@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
def test_full_disk_fails_only_that_item(tmp_path, weights, small_tmpfs):
    src = tmp_path / "scans"
    # the big noise scan's outputs do not fit in 400 kB; the small ones do
    _tree(src, {"a.png": _png(seed=1), "b_big.png": _png(side=420, noise=True), "c.png": _png(seed=3)})
    url = f"sqlite:///{tmp_path / 'cat.sqlite'}"
    code, output = _restore(str(src), "--out", str(small_tmpfs), "--weights", str(weights), "--catalog", url)
    assert code == 1, output
    assert "FAILED " + str(src / "b_big.png") in output and "No space left on device" in output, output
    assert _no_part_files(small_tmpfs) == []
    assert not (small_tmpfs / "b_big" / "restored.png").exists()
    for name in ("a", "c"):                          # the inputs after the failure were attempted, and done
        assert json.loads((small_tmpfs / name / "provenance.json").read_text())["status"] == "done"
    cat = Catalog(url)
    assert cat.item(str(src / "b_big.png")).status == "failed"
    assert "No space left on device" in cat.item(str(src / "b_big.png")).last_error
    assert cat.status_counts()["done"] == 2


def test_name_too_long_fails_only_that_item(tmp_path, weights):
    src = tmp_path / "scans"
    long_stem = "n" * 180
    _tree(src, {"short.png": _png(seed=1), f"{long_stem}.png": _png(seed=2)})
    # an output folder so deep that DEST/<180 bytes>/restored.png passes PATH_MAX (4096) and DEST/short/... not
    out = tmp_path
    while len(str(out)) < 4096 - 120:
        out = out / ("d" * min(200, 4096 - 120 - len(str(out))))
    out.mkdir(parents=True)
    url = f"sqlite:///{tmp_path / 'cat.sqlite'}"
    code, output = _restore(str(src), "--out", str(out), "--weights", str(weights), "--catalog", url)
    assert code == 1, output
    cat = Catalog(url)
    bad = cat.item(str(src / f"{long_stem}.png"))
    assert bad.status == "failed" and "File name too long" in bad.last_error and "write:" in bad.last_error
    assert cat.item(str(src / "short.png")).status == "done"
    assert (out / "short" / "restored.png").is_file() and _no_part_files(tmp_path) == []


# ------------------------------------------------------------------------------------------ kill -9, re-run
def _restore_cmd(src: Path, out: Path, weights: Path, url: str) -> list[str]:
    return [sys.executable, "-c", "from oldphoto.cli import main; main()", "restore", str(src), "--out", str(out),
            "--weights", str(weights), "--catalog", url, "--scratch", "off", "--no-faces"]


def _agree(cat: Catalog, src: Path, out: Path, names: list[str]) -> None:
    """Catalog and DEST agree item by item: each done once, its provenance.json names the run the catalog names."""
    for name in names:
        hist = cat.item_history(str(src / f"{name}.png"))
        done = [a for a in hist.attempts if a.status == "done"]
        assert len(done) == 1, (name, [(a.run_id, a.status) for a in hist.attempts])
        prov = ItemProvenance.from_json((out / name / "provenance.json").read_text())
        assert prov.status == "done" and prov.run_id == done[0].run_id
        assert prov.input.sha256 == done[0].input["sha256"]


def _n_done(db: Path) -> int:
    """Items the SQLite catalog at `db` records as done; 0 while the run has not created it (or its schema) yet
    (opening a missing catalog creates nothing)."""
    try:
        with Catalog(f"sqlite:///{db}") as cat:
            return cat.status_counts()["done"]
    except CatalogError:
        return 0


def _wait_for_items(proc: subprocess.Popen, db: Path, n: int, timeout: float) -> None:
    """Wait until the SQLite catalog at `db` records `n` items as done (an output file alone is written before its
    record), then a random moment more (the point of the kill)."""
    deadline = time.time() + timeout
    while time.time() < deadline and _n_done(db) < n:
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    assert _n_done(db) >= n, f"{n} items were not recorded within {timeout:.0f} s"
    time.sleep(random.uniform(0, 0.5))
    assert proc.poll() is None, "the run ended before it could be killed"


@pytest.mark.slow
def test_kill_9_then_rerun(tmp_path, weights):
    src, out = tmp_path / "scans", tmp_path / "out"
    # enough items, large enough, that the run outlasts the kill window even on an idle machine
    names = [f"s{i:02d}" for i in range(16)]
    _tree(src, {f"{n}.png": _png(side=192, seed=i) for i, n in enumerate(names)})
    url = f"sqlite:///{tmp_path / 'cat.sqlite'}"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_restore_cmd(src, out, weights, url), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_items(proc, tmp_path / "cat.sqlite", 2, timeout=300)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    cat = Catalog(url)
    killed = cat.runs()[0]
    assert killed.state == "running" and killed.finished is None
    n_recorded = cat.status_counts(run_id=killed.id)["done"]
    assert 1 <= n_recorded < len(names)

    r = subprocess.run(_restore_cmd(src, out, weights, url), env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    dead = cat.run(killed.id)
    assert dead.state == "aborted" and dead.finished is not None
    assert f"pid {killed.pid}" in dead.reason and "ended without closing the run" in dead.reason
    rerun = cat.runs()[0]
    assert rerun.state == "finished" and rerun.n_skipped == n_recorded        # what was done is not redone
    assert rerun.n_done == len(names) - n_recorded
    assert cat.status_counts()["done"] == len(names) and _no_part_files(out) == []
    _agree(cat, src, out, names)


# --------------------------------------------------------------------------------- catalog outage (real PG)
@pytest.mark.postgres
def test_postgres_outage_delays_recording_and_loses_nothing(tmp_path, weights):
    from pg import PostgresServer, PostgresUnavailable

    try:
        pg = PostgresServer.start()
    except PostgresUnavailable as e:
        pytest.skip(str(e))
    with pg:
        url = pg.create_database("outage")
        src, out = tmp_path / "scans", tmp_path / "out"
        names = [f"s{i:02d}" for i in range(6)]
        _tree(src, {f"{n}.png": _png(side=64, seed=i) for i, n in enumerate(names)})
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               "OMP_NUM_THREADS": "1", "OLDPHOTO_CATALOG_OUTAGE_S": "120"}
        proc = subprocess.Popen(_restore_cmd(src, out, weights, url), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            deadline = time.time() + 300
            while time.time() < deadline and not list(out.glob("*/provenance.json")):
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.05)
            pg.pause()                       # the database goes away for a minute while results are being recorded
            time.sleep(60)
            pg.resume()
            output, _ = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, output
        assert "catalog unreachable" in output
        cat = Catalog(url)
        assert cat.status_counts()["done"] == len(names), output
        run = cat.runs()[0]
        assert (run.state, run.n_done) == ("finished", len(names))
        _agree(cat, src, out, names)


# ----------------------------------------------------------------------------------------- two runs at once
@pytest.mark.slow
def test_two_runs_at_once_compute_each_item_once(tmp_path, weights):
    src, out = tmp_path / "scans", tmp_path / "out"
    names = [f"s{i:02d}" for i in range(6)]
    _tree(src, {f"{n}.png": _png(side=64, seed=i) for i, n in enumerate(names)})
    url = f"sqlite:///{tmp_path / 'cat.sqlite'}"
    Catalog(url).upgrade()
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(_restore_cmd(src, out, weights, url), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    cat = Catalog(url)
    runs = cat.runs()
    assert len(runs) == 2 and all(r.state == "finished" for r in runs)
    assert sum(r.n_done for r in runs) == len(names)                     # each item computed once
    assert all(r.n_done + r.n_skipped == len(names) for r in runs)
    assert cat.status_counts()["done"] == len(names) and _no_part_files(out) == []
    _agree(cat, src, out, names)                                         # provenance names the catalog's run


# ---------------------------------------------------------------------------------- S3 down for a while
@pytest.mark.slow
def test_s3_down_mid_run_is_retried(tmp_path, weights):
    from moto.server import ThreadedMotoServer

    from services import FAKE_AWS, free_port, patched_env

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    names = [f"s{i:02d}" for i in range(6)]
    try:
        env = {**FAKE_AWS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
        with patched_env(env):
            import boto3

            s3 = boto3.client("s3")
            s3.create_bucket(Bucket="lifecycle-s3down")
            for i, n in enumerate(names):
                s3.put_object(Bucket="lifecycle-s3down", Key=f"night/{n}.png", Body=_png(side=64, seed=i))
        out = tmp_path / "out"
        url = f"sqlite:///{tmp_path / 'cat.sqlite'}"
        penv = {**os.environ, **env, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                "OMP_NUM_THREADS": "1"}
        cmd = _restore_cmd(tmp_path, out, weights, url)
        cmd[cmd.index(str(tmp_path))] = "s3://lifecycle-s3down/night/"
        proc = subprocess.Popen(cmd, env=penv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 300
        while time.time() < deadline and not list(out.glob("*/provenance.json")):
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.05)
        server.stop()                         # the S3 endpoint goes away (connections refused) ...
        time.sleep(8)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()                        # ... and comes back with the same buckets
        output, _ = proc.communicate(timeout=600)
    finally:
        server.stop()
    assert proc.returncode == 0, output
    cat = Catalog(url)
    assert cat.status_counts()["done"] == len(names)
    for n in names:
        assert json.loads((out / n / "provenance.json").read_text())["status"] == "done"


# ------------------------------------------------------------------ kill -9 of `oldphoto archive`, re-run
def _archive_env(tmp_path: Path) -> dict[str, str]:
    """`oldphoto archive` as `make run` runs it: a temporary local Prefect API, an embedded local Ray."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "RAY_")) and k not in ("OLDPHOTO_CATALOG", "OLDPHOTO_WEIGHTS")}
    env.update({"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_UI_ENABLED": "false", "OMP_NUM_THREADS": "1",
                "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])})
    return env


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _archive_cmd(src: Path, out: Path, weights: Path) -> list[str]:
    return [sys.executable, "-c", "from oldphoto.cli import main; main()", "archive", str(src), str(out),
            "--weights", str(weights), "--scratch", "off", "--no-faces", "-o", "structure_return=false"]


@pytest.mark.slow
def test_archive_kill_9_then_rerun_leaves_nothing_behind(tmp_path, weights):
    """`kill -9` of `oldphoto archive` at a random point after the first items: what it recorded stays, its
    helper processes (temporary Prefect API, Ray) are stopped by the reaper, the re-run marks it aborted,
    computes only what was not recorded, and the catalog and DEST agree item by item. Then a run where every
    item fails ends Failed."""
    from oldphoto.reaper import alive, descendants

    src, out = tmp_path / "scans", tmp_path / "out"
    names = [f"s{i:02d}" for i in range(12)]
    _tree(src, {f"{n}.png": _png(side=160, seed=i) for i, n in enumerate(names)})
    env = _archive_env(tmp_path)
    proc = subprocess.Popen(_archive_cmd(src, out, weights), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, cwd=tmp_path)
    helpers: dict[int, int] = {}
    try:
        _wait_for_items(proc, out / "catalog.sqlite", 2, timeout=420)
        helpers = descendants(proc.pid)
        cmd = {p: _cmdline(p) for p in alive(helpers)}
        helpers = {p: t for p, t in helpers.items() if "oldphoto.reaper" not in cmd.get(p, "")}
        assert any("uvicorn" in c for c in cmd.values()) and any("raylet" in c for c in cmd.values()), cmd
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # nothing of the killed run is left running (Ray's agents would linger a minute, Prefect's API forever)
        left: list[str] = []
        for _ in range(60):
            left = [cmd.get(p, str(p))[:80] for p in alive(helpers)]
            if not left:
                break
            time.sleep(0.5)
        assert left == [], left
    finally:
        if proc.poll() is None:
            proc.kill()
    url = f"sqlite:///{out / 'catalog.sqlite'}"
    cat = Catalog(url)
    killed = cat.runs()[0]
    assert killed.state == "running" and killed.finished is None
    n_recorded = cat.status_counts(run_id=killed.id)["done"]
    assert 1 <= n_recorded < len(names)

    r = subprocess.run(_archive_cmd(src, out, weights), env=env, capture_output=True, text=True, timeout=600,
                       cwd=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    dead = cat.run(killed.id)
    assert dead.state == "aborted" and dead.finished is not None and f"pid {killed.pid}" in dead.reason
    rerun = cat.runs()[0]
    assert rerun.state == "finished" and rerun.n_skipped == n_recorded           # what was done is not redone
    assert rerun.n_done == len(names) - n_recorded
    assert cat.status_counts()["done"] == len(names) and _no_part_files(out) == []
    _agree(cat, src, out, names)
    for name in names:        # `-o structure_return=false` reached every item (with it on, the floor is recorded)
        params = json.loads((out / name / "provenance.json").read_text())["parameters"]
        assert params["structure_return"] is False and "tone_transfer" in params and "returned_structure" not in params

    # a run where every item fails ends Failed, and says so
    bad = tmp_path / "bad"
    _tree(bad, {"a.png": b"\x89PNG\r\n\x1a\n broken", "b.jpg": b"\xff\xd8\xff not a jpeg"})
    r = subprocess.run(_archive_cmd(bad, tmp_path / "bad_out", weights), env=env, capture_output=True, text=True,
                       timeout=600, cwd=tmp_path)
    output = r.stdout + r.stderr
    assert r.returncode == 1 and "0 done, 2 failed" in output, output[-3000:]
    assert "run state: Failed: every item failed" in output, output[-3000:]


# --------------------------------------------------------------------- progress: a bar on a terminal, else lines
def test_progress_lines_are_periodic():
    from oldphoto.progress import ItemProgress

    lines: list[str] = []
    with ItemProgress(5, label="restore", emit=lines.append, every_s=3600) as p:    # one line per hour at most
        for i in range(5):
            p.advance(failed=i == 2, name=f"s{i}")
    assert lines[0] == "restore: 5 item(s) to do"
    assert len(lines) == 2 and lines[1].startswith("restore 5/5: 4 done, 1 failed; ") and "(s4)" in lines[1]
    lines.clear()
    with ItemProgress(3, label="restore", emit=lines.append, every_s=0) as p:      # 0: a line per item
        for i in range(3):
            p.advance(name=f"s{i}")
    assert [ln.split(":")[0] for ln in lines] == ["restore", "restore 1/3", "restore 2/3", "restore 3/3"]


def _on_a_terminal(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[int, str]:
    """Run `cmd` with stdin, stdout and stderr on a new pseudo-terminal (160 columns); its exit code and all it
    wrote there."""
    import fcntl
    import select
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:              # EIO: every process holding the terminal has closed it
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        os.close(master)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
@pytest.mark.prefect
@pytest.mark.ray
def test_archive_progress_bar_on_a_terminal_lines_elsewhere(tmp_path, weights):
    """`oldphoto archive` on a real pseudo-terminal draws a progress bar (redrawn in place, with the counts), the
    run's log lines (a failed item) printed above it, not into it; with its output to a pipe it writes plain
    progress lines (counts, rate, ETA) instead."""
    import re

    src = tmp_path / "scans"
    names = [f"s{i:02d}" for i in range(3)]
    _tree(src, {f"{n}.png": _png(side=64, seed=i) for i, n in enumerate(names)})
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    env = {**_archive_env(tmp_path), "TERM": "xterm-256color"}
    for var in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES", "CI"):
        env.pop(var, None)
    code, raw = _on_a_terminal(_archive_cmd(src, tmp_path / "out_tty", weights), env, tmp_path, timeout=600)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    assert code == 1 and "3 done, 1 failed, 0 skipped" in text, text[-4000:]
    segments = re.split(r"[\r\n]", text)
    bar = [seg for seg in segments if re.search(r"restore\s.*\b[0-4]/4\b", seg)]
    assert any(re.search(r"\b0/4\b", s) for s in bar) and any(re.search(r"\b4/4\b.*1 failed", s) for s in bar), \
        text[-4000:]
    assert "\r" in raw and "\x1b[2K" in raw                 # redrawn in place: carriage return, erase line
    warned = [seg for seg in segments if "broken failed: load:" in seg]
    assert warned and not any("━" in seg for seg in warned), text[-4000:]      # above the bar, not inside it
    assert "item(s) to do" not in text and "items/min" not in text, text[-4000:]     # no plain lines on a terminal

    r = subprocess.run(_archive_cmd(src, tmp_path / "out_pipe", weights),
                       env={**env, "OLDPHOTO_PROGRESS_EVERY_S": "0"}, capture_output=True, text=True, timeout=600,
                       cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "3 done, 1 failed, 0 skipped" in out, out[-4000:]
    assert "restore: 4 item(s) to do" in out, out[-4000:]
    for n in (1, 2, 3, 4):
        assert re.search(rf"restore {n}/4: \d done, [01] failed; [\d.]+ items/min, ETA ", out), out[-4000:]
    assert re.search(r"restore 4/4: 3 done, 1 failed; ", out), out[-4000:]
    assert "\r" not in out and "\x1b[2K" not in out and "━" not in out        # no bar drawn into a pipe


# ------------------------------------------------------------- S3 down mid-run, through the flow (`oldphoto archive`)
@pytest.mark.slow
@pytest.mark.prefect
@pytest.mark.ray
def test_archive_flow_s3_down_mid_run_is_retried(tmp_path, weights):
    """The restore-archive flow (through `oldphoto archive`: temporary Prefect API, local Ray) from and to (moto)
    S3, the endpoint stopped for 8 s after the first items are written and started again: every item ends done,
    once, and the catalog, DEST and the run summary agree item by item."""
    import boto3
    from moto.server import ThreadedMotoServer

    from oldphoto.storage import open_storage
    from services import FAKE_AWS, free_port, patched_env

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    bucket = "lifecycle-flow-s3down"
    src, dest = f"s3://{bucket}/night/", f"s3://{bucket}/restored/"
    names = [f"s{i:02d}" for i in range(12)]
    s3_env = {**FAKE_AWS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    proc = None
    try:
        with patched_env(s3_env):
            s3 = boto3.client("s3")
            s3.create_bucket(Bucket=bucket)
            for i, n in enumerate(names):
                s3.put_object(Bucket=bucket, Key=f"night/{n}.png", Body=_png(side=160, seed=i))
        url = f"sqlite:///{tmp_path / 'cat.sqlite'}"
        cmd = [sys.executable, "-c", "from oldphoto.cli import main; main()", "archive", src, dest,
               "--weights", str(weights), "--catalog", url, "--scratch", "off", "--no-faces"]
        proc = subprocess.Popen(cmd, env={**_archive_env(tmp_path), **s3_env}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True, cwd=tmp_path)
        deadline = time.time() + 420
        while time.time() < deadline:
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="restored/").get("Contents", [])]
            if any(k.endswith("/provenance.json") for k in keys):
                break
            assert proc.poll() is None, proc.stdout.read()[-4000:]
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before S3 could be stopped"
        server.stop()                         # the S3 endpoint goes away (connections refused) mid-run ...
        time.sleep(8)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()                        # ... and comes back with the same buckets
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, output[-4000:]
        assert "12 done, 0 failed, 0 skipped" in output, output[-4000:]

        cat = Catalog(url)
        run = cat.runs()[0]
        assert (run.state, run.n_done, run.n_failed, run.n_skipped) == ("finished", len(names), 0, 0)
        assert cat.status_counts()["done"] == len(names)
        with patched_env(s3_env):
            store = open_storage(dest)
            summary = json.loads(store.read_bytes(f"{dest}_runs/{run.id}/summary.json"))
            assert summary["run_id"] == run.id and summary["failures"] == [] and summary["skipped"] == []
            assert summary["counts"] == {"done": len(names), "failed": 0, "skipped": 0, "total": len(names)}
            assert sorted(summary["review_sheets"]) == [f"{dest}{n}/review.png" for n in names]
            for i, n in enumerate(names):
                hist = cat.item_history(f"{src}{n}.png")
                assert [(a.run_id, a.status) for a in hist.attempts] == [(run.id, "done")], n
                prov = ItemProvenance.from_json(store.read_bytes(f"{dest}{n}/provenance.json").decode())
                assert prov.status == "done" and prov.run_id == run.id and prov.input.uri == f"{src}{n}.png"
                assert prov.input.sha256 == hist.attempts[0].input["sha256"]
                assert store.exists(f"{dest}{n}/restored.png") and store.exists(f"{dest}{n}/review.png")
            assert not [k for k in store.fs.find(dest.removeprefix("s3://")) if ".part" in k]
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        server.stop()


@pytest.mark.slow
@pytest.mark.prefect
@pytest.mark.ray
def test_archive_flow_full_disk_fails_only_that_item(tmp_path, weights, small_tmpfs):
    """The full-disk fault through the restore-archive flow (`oldphoto archive`, items written by Ray tasks, some
    at once): the scan whose outputs do not fit fails with the reason, leaves no partial file, and the catalog,
    DEST and the run summary agree item by item."""
    src = tmp_path / "scans"
    _tree(src, {"a.png": _png(seed=1), "b_big.png": _png(side=420, noise=True), "c.png": _png(seed=3)})
    url = f"sqlite:///{tmp_path / 'cat.sqlite'}"
    r = subprocess.run(_archive_cmd(src, small_tmpfs, weights) + ["--catalog", url], env=_archive_env(tmp_path),
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out[-4000:]
    assert "FAILED b_big: write:" in out and "No space left on device" in out, out[-4000:]
    assert _no_part_files(small_tmpfs) == [] and not (small_tmpfs / "b_big" / "restored.png").exists()
    cat = Catalog(url)
    run = cat.runs()[0]
    summary = json.loads((small_tmpfs / "_runs" / run.id / "summary.json").read_text())
    failed = {f["name"]: f["error"] for f in summary["failures"]}
    assert "b_big" in failed and "No space left on device" in failed["b_big"]
    assert summary["counts"]["done"] + summary["counts"]["failed"] == 3 == run.n_done + run.n_failed
    assert (summary["counts"]["done"], summary["counts"]["failed"]) == (run.n_done, run.n_failed)
    for name in ("a", "b_big", "c"):                       # item by item: catalog, DEST, summary
        item = cat.item(str(src / f"{name}.png"))
        prov = small_tmpfs / name / "provenance.json"
        if item.status == "done":
            assert name not in failed and (small_tmpfs / name / "restored.png").is_file()
            assert ItemProvenance.from_json(prov.read_text()).run_id == run.id
        else:                                              # a failure provenance.json where it fits
            assert item.status == "failed" and failed[name] == item.last_error
            assert not (small_tmpfs / name / "restored.png").exists()
            if prov.exists():
                p = ItemProvenance.from_json(prov.read_text())
                assert p.status == "failed" and p.run_id == run.id and p.outputs == []
    assert cat.item(str(src / "b_big.png")).status == "failed"


def test_archive_options_are_checked_before_any_work(tmp_path):
    """`oldphoto archive -o KEY=VALUE`: any other RestoreOptions field, typed and checked before a Prefect API or
    Ray is started; a mistake is a usage error naming it."""
    from oldphoto.cli.archive import parse_options

    assert parse_options(["structure_return=false", "colour-strength=0.5", "face_strength=none"]) == {
        "structure_return": False, "colour_strength": 0.5, "face_strength": None}
    assert parse_options([]) == {}
    for bad, says in ((["tone_match=false"], "own flag: --tone-match"), (["nope=1"], "unknown restore option 'nope'"),
                      (["colour_strength=2"], "colour_strength"), (["refine=maybe"], "refine"),
                      (["structure_return"], "is not KEY=VALUE"), (["device=cuda"], "chosen per Ray pool")):
        with pytest.raises(ValueError, match=says):
            parse_options(bad)
    src = tmp_path / "scans"
    src.mkdir()
    r = CliRunner().invoke(app, ["archive", str(src), str(tmp_path / "out"), "-o", "colour_strength=2"])
    assert r.exit_code == 2 and "colour_strength" in r.output
    assert not (tmp_path / "out").exists()           # stopped before anything was made


def test_archive_own_flags_are_the_flows_own_parameters():
    """`oldphoto archive` refuses `-o` for exactly the restore options the flows take as parameters of their own
    (the CLI's `OWN_FLAGS` mirrors them: a new flow parameter must get its flag there)."""
    import inspect

    from oldphoto.cli.archive import OWN_FLAGS
    from oldphoto.flows.restore_archive import reprocess_failed, restore_archive
    from oldphoto.pipeline import RestoreOptions

    fields = {f.name for f in dataclasses.fields(RestoreOptions)}
    for flow_fn in (restore_archive.fn, reprocess_failed.fn):
        assert set(inspect.signature(flow_fn).parameters) & fields == set(OWN_FLAGS)


def test_the_flows_refuse_a_device_option(tmp_path):
    """A deployment run given options={"device": ...} fails at once with the reason (the Ray pools choose the
    device), as `oldphoto archive -o device=...` does, instead of restoring on a device nobody asked for."""
    from oldphoto.flows.restore_archive import reprocess_failed, restore_archive

    for flow_fn, args in ((restore_archive.fn, (str(tmp_path), str(tmp_path / "out"))), (reprocess_failed.fn, ())):
        with pytest.raises(ValueError, match="device='cuda' refused: device is chosen per Ray pool"):
            flow_fn(*args, options={"device": "cuda"})
    assert not (tmp_path / "out").exists()

