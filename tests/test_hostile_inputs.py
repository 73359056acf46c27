"""The hostile corpus (tests/hostile_corpus.py, one generator per kind, 69 kinds) through `oldphoto restore` in one
run, in a child process with a peak RSS bound, and through `oldphoto archive` (slow: local Prefect API and Ray).

Unreadable files fail with a clear one-line error (summary and provenance) while the others go on; valid but
unusual files (CMYK, palette, 16-bit, RGBA, grey, bilevel, float, rotated, tiny, elongated, GIF, misnamed) restore;
inputs are never modified. The decode policy's choices (first frame of a multi-frame file, float written as
16-bit, oversized ICC dropped) are warnings in provenance; symbolic links inside the source folder are skipped,
never followed, and never leak their target's content; strips of 10×20000 and 20000×10 pixels restore with
bounded memory and time.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from hostile_corpus import MAX_MEGAPIXELS_ONLY, WARNINGS, corpus
from oldphoto.testing.random_weights import make_random_weights
from oldphoto.storage import SYMLINK_NOT_FOLLOWED

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny_weights_hostile")
    make_random_weights(d, seed=1, tiny=True)
    return d


SECRET = b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
LINK_SKIPPED = "skipped:symbolic link, not followed"


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def make_source(tmp_path: Path) -> tuple[Path, dict[str, tuple[bytes | None, str]]]:
    """The corpus written below tmp_path/scans, with a hidden file and three symbolic links (a dangling one,
    one to a "secret" out of the tree, one to a folder out of the tree): (source folder, cases by relative
    name)."""
    src = tmp_path / "scans"
    src.mkdir()
    cases: dict[str, tuple[bytes | None, str]] = dict(corpus())
    for name, (blob, _) in cases.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(blob)
    (src / ".DS_Store").write_bytes(b"\x00\x01junk")                 # hidden: not an input
    cases[".DS_Store"] = (None, "skipped:hidden")
    os.symlink(src / "gone.jpg", src / "broken link.jpg")            # dangling symlink
    cases["broken link.jpg"] = (None, LINK_SKIPPED)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "passwd").write_bytes(SECRET)
    (outside / "photo.jpg").write_bytes(cases["cmyk.jpg"][0])
    os.symlink(outside / "passwd", src / "passwd link.jpg")          # out of the tree, to a "secret"
    cases["passwd link.jpg"] = (None, LINK_SKIPPED)
    os.symlink(outside, src / "linked folder")                       # a folder out of the tree: not descended
    cases["linked folder"] = (None, LINK_SKIPPED)
    return src, cases


def snapshot(src: Path) -> dict[str, tuple[str, int]]:
    """Every regular file below src (links not followed): relative name -> (sha256, mtime)."""
    return {str(p.relative_to(src)): (sha(p), p.stat().st_mtime_ns) for p in src.rglob("*")
            if p.is_file() and not p.is_symlink()}


def check_outcomes(cases: dict, src: Path, out: Path, failed: dict[str, str], skipped: dict[str, str]) -> int:
    """Each kind's exact outcome from out's provenance.json files, and the run's FAILED/SKIPPED lines (by
    input path); returns the number restored."""
    folders = {json.loads(p.read_text())["input"]["uri"]: p.parent for p in out.rglob("provenance.json")}
    expect_skipped = {str(src / n): e for n, (_, e) in cases.items() if e.startswith("skipped")}
    assert set(skipped) == set(expect_skipped), set(skipped) ^ set(expect_skipped)
    for path, e in expect_skipped.items():
        if e == LINK_SKIPPED:
            assert skipped[path] == SYMLINK_NOT_FOLLOWED, (path, skipped[path])
        elif e == "skipped:hidden":
            assert skipped[path] == "hidden", (path, skipped[path])
        else:
            assert skipped[path].startswith("not an image file name"), (path, skipped[path])
    # one folder per input, colliding stems included; skipped files get none
    assert len(folders) == len(cases) - len(expect_skipped)
    # nothing of a link's target in any message, provenance or output
    assert not any(b"root:x" in p.read_bytes() for p in out.rglob("*") if p.is_file())
    n_ok = 0
    for name, (_, expect) in cases.items():
        path = str(src / name)
        if expect.startswith("skipped"):
            assert path not in folders and path not in failed
            continue
        item = folders[path]
        prov = json.loads((item / "provenance.json").read_text())
        if expect.startswith("ok"):
            assert prov["status"] == "done", (name, prov["error"])
            assert path not in failed
            restored = item / ("restored.tif" if name.endswith(".tif") else "restored.png")
            im = Image.open(restored)
            w, h = prov["input"]["width"], prov["input"]["height"]
            assert im.size == (w, h), name
            if expect == "ok:grey":
                assert im.mode in ("L", "I;16"), (name, im.mode)
            elif expect == "ok:grey16":
                assert im.mode.startswith("I;16"), (name, im.mode)
            elif expect == "ok:16":
                assert cv2.imread(str(restored), cv2.IMREAD_UNCHANGED).dtype == np.uint16
            else:
                assert im.mode == "RGB", (name, im.mode)
            if expect == "ok:rotated":
                assert (w, h) == (64, 72)
            assert (item / "review.png").is_file()
            assert prov["warnings"] == WARNINGS.get(name, []), (name, prov["warnings"])
            n_ok += 1
        else:
            assert prov["status"] == "failed", name
            assert expect in prov["error"], (name, prov["error"])
            assert "\n" not in prov["error"]
            assert path in failed and expect in failed[path], (name, failed.get(path))
            assert sorted(p.name for p in item.iterdir()) == ["provenance.json"]
    return n_ok


@pytest.mark.slow
def test_hostile_corpus(tmp_path, weights_dir):
    """Every kind of the corpus through one `oldphoto restore` run, in a child process whose peak RSS is
    bounded: each kind's exact outcome, inputs untouched."""
    src, cases = make_source(tmp_path)
    assert len(corpus()) >= 50
    before = snapshot(src)
    listing_before = sorted(str(p.relative_to(src)) for p in src.rglob("*"))
    out = tmp_path / "out"

    code, peak, output = run_bounded([sys.executable, "-c", "from oldphoto.cli import main; main()", "restore",
                                      str(src), "--out", str(out), "--weights", str(weights_dir), "--scratch", "off",
                                      "--max-megapixels", "0.5", "--no-catalog"], rss_limit=RSS_BOUND, timeout=400)
    assert code == 1 and peak < RSS_BOUND, f"exit {code}, peak RSS {peak / 2 ** 30:.2f} GiB\n{output[-3000:]}"
    print(f"peak RSS {peak / 2 ** 20:.0f} MiB over {len(cases)} inputs")

    # inputs untouched, nothing added to the input folder
    assert snapshot(src) == before
    assert sorted(str(p.relative_to(src)) for p in src.rglob("*")) == listing_before

    lines = output.splitlines()
    failed = dict(line[len("FAILED "):].split(": ", 1) for line in lines if line.startswith("FAILED "))
    skipped = dict(line[len("SKIPPED "):].split(": ", 1) for line in lines if line.startswith("SKIPPED "))
    assert "root:x" not in output
    n_ok = check_outcomes(cases, src, out, failed, skipped)
    assert n_ok >= 35
    folders = [p.parent.name for p in out.glob("*/provenance.json")]
    assert sum(f.startswith("truncated-") for f in folders) == 3        # colliding stems: one folder each
    assert not (out / ".DS_Store").exists()


RSS_BOUND = 2 ** 30      # 1 GiB (about 0.55 GiB measured): tiny weights, no input over 5,000 pixels a side


def run_bounded(cmd: list[str], rss_limit: int, timeout: float) -> tuple[int, int, str]:
    """(exit code, peak RSS in bytes, output) of a command, killed as soon as its RSS passes `rss_limit` or it runs
    past `timeout` seconds (exit code -9 then), so a regression fails fast instead of exhausting the machine.

    The peak is the child's own high-water mark (VmHWM, sampled every 0.1 s), not `ru_maxrss`: the latter also
    counts the memory the child shared with this (large) pytest process between fork and exec."""
    import time

    log = tempfile.TemporaryFile()            # not a pipe: a chatty child would block on a full one
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    t0 = time.monotonic()
    peak = 0
    while True:
        pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            log.seek(0)
            return os.waitstatus_to_exitcode(status), peak, log.read().decode(errors="replace")
        fields = {}
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                fields = {k: int(v.split()[0]) * 1024 for k, _, v in (line.partition(":") for line in f)
                          if k in ("VmRSS", "VmHWM")}
        except (OSError, ValueError):
            pass
        if time.monotonic() - t0 > 1.0:   # past the interpreter's start (exec has replaced the forked image)
            peak = max(peak, fields.get("VmHWM", 0))
        if fields.get("VmRSS", 0) > rss_limit or time.monotonic() - t0 > timeout:
            proc.kill()
        time.sleep(0.1)


@pytest.mark.slow
def test_strips_restore_with_bounded_memory_and_time(tmp_path, weights_dir):
    """Random-pixel strips of 10×20000 and 20000×10 (H×W, ~600 kB each) through `oldphoto restore`, detector,
    tone transfer and review sheet included: under 1 GiB peak RSS (they took 1.1 and 19.7 GB, still running
    after 5 minutes, before the working sizes were capped on each side) and within a generous timeout (about
    20 s on an idle 2-core machine; the time is measured by benchmarks/bench_restore.py --fit, with faces).
    Faces are off here: face detection is the face stage's own bound."""
    rng = np.random.default_rng(0)
    src = tmp_path / "strips"
    src.mkdir()
    for name, shape in (("wide", (10, 20000, 3)), ("tall", (20000, 10, 3))):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(src / f"{name}.png")
    out = tmp_path / "out"
    code, peak, _ = run_bounded([sys.executable, "-c", "from oldphoto.cli import main; main()", "restore", str(src),
                              "--out", str(out), "--weights", str(weights_dir), "--scratch", "on", "--no-faces",
                              "--no-catalog"], rss_limit=2 ** 30, timeout=300)
    assert code == 0 and peak < 2 ** 30, f"exit {code}, peak RSS {peak / 2 ** 30:.2f} GiB"
    for name, (h, w) in (("wide", (10, 20000)), ("tall", (20000, 10))):
        assert Image.open(out / name / "restored.png").size == (w, h)
        sheet = Image.open(out / name / "review.png")
        assert sheet.size[0] <= 3 * 3 * 384 + 4 * 8 and sheet.size[1] == 384 + 18 + 16


def test_listing_skips_links_and_reads_refuse_them_and_fifos(tmp_path):
    """The one lifecycle (CLI and archive flow): links below a source folder are skipped with the reason, and
    reading an input never goes through a link (a file swapped for one after listing) nor blocks on a FIFO;
    the messages carry the reason only."""
    from oldphoto.lifecycle import list_inputs, read_input

    (tmp_path / "secret").write_bytes(SECRET)
    src = tmp_path / "src"
    src.mkdir()
    os.symlink(tmp_path / "secret", src / "a.jpg")
    os.symlink(tmp_path, src / "up")                                 # a folder link, to above the source
    os.mkfifo(src / "pipe.jpg")
    listing = list_inputs([str(src)])
    assert {(os.path.basename(s.uri), s.reason) for s in listing.skipped} == {("a.jpg", SYMLINK_NOT_FOLLOWED),
                                                                               ("up", SYMLINK_NOT_FOLLOWED)}
    assert [os.path.basename(it.uri) for it in listing.items] == ["pipe.jpg"]
    for name, reason in (("a.jpg", SYMLINK_NOT_FOLLOWED), ("pipe.jpg", "not a regular file"),
                         ("missing.jpg", "file not found")):
        assert read_input(str(src / name)) == (None, reason)


@pytest.mark.slow
@pytest.mark.prefect
@pytest.mark.ray
def test_hostile_corpus_through_the_archive_flow(tmp_path, weights_dir):
    """The same corpus through `oldphoto archive SRC DEST` (as `make run`: a temporary local Prefect API, local
    Ray): each kind's outcome from DEST's provenance.json files and the run's summary.json, inputs untouched.
    The flow has no --max-megapixels: at the default 200 MP the 0.64 MP file is restored and the bombs are
    refused at that limit."""
    src, cases = make_source(tmp_path)
    for name, restored in MAX_MEGAPIXELS_ONLY.items():
        cases[name] = (cases[name][0], restored)
    cases = {n: (b, e.replace("500,000", "200,000,000")) for n, (b, e) in cases.items()}
    before = snapshot(src)
    listing_before = sorted(str(p.relative_to(src)) for p in src.rglob("*"))
    out = tmp_path / "restored"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "RAY_")) and k not in ("OLDPHOTO_CATALOG", "OLDPHOTO_WEIGHTS")}
    env.update({"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_UI_ENABLED": "false", "OMP_NUM_THREADS": "1",
                "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])})
    r = subprocess.run([sys.executable, "-c", "from oldphoto.cli import main; main()", "archive", str(src), str(out),
                        "--weights", str(weights_dir), "--scratch", "off"], env=env, capture_output=True, text=True,
                       timeout=400, cwd=tmp_path)
    output = r.stdout + r.stderr
    assert r.returncode == 1, output[-3000:]

    assert snapshot(src) == before
    assert sorted(str(p.relative_to(src)) for p in src.rglob("*")) == listing_before
    summaries = list(out.glob("_runs/*/summary.json"))
    assert len(summaries) == 1, output[-3000:]
    summary = json.loads(summaries[0].read_text())
    failed = {f["uri"].removeprefix("file://"): f["error"] for f in summary["failures"]}
    skipped = {s["uri"].removeprefix("file://"): s["reason"] for s in summary["skipped"]}
    assert "root:x" not in output
    n_ok = check_outcomes(cases, src, out, failed, skipped)
    n_skipped = sum(e.startswith("skipped") for _, e in cases.values())
    assert summary["counts"] == {"done": n_ok, "failed": len(cases) - n_ok - n_skipped, "skipped": n_skipped,
                                 "total": len(cases)}
