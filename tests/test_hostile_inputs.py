"""A corpus of hostile and awkward inputs, generated here, through `oldphoto restore` in one run.

Unreadable files fail with a clear one-line error (summary and provenance) while the others go on; valid but
unusual files (CMYK, palette, 16-bit, RGBA, grey, bilevel, float, rotated, tiny, elongated, GIF, misnamed) restore;
inputs are never modified. The decode policy's choices (first frame of a multi-frame file, float written as
16-bit, oversized ICC dropped) are warnings in provenance; symbolic links inside the source folder are skipped,
never followed, and never leak their target's content; strips of 10×20000 and 20000×10 pixels restore with
bounded memory and time.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata
import tifffile
from typer.testing import CliRunner

from oldphoto.cli import app
from oldphoto.models import make_random_weights
from oldphoto.storage import SYMLINK_NOT_FOLLOWED

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny_weights_hostile")
    make_random_weights(d, seed=1, tiny=True)
    return d


def _save(arr_or_im, fmt: str, **kw) -> bytes:
    im = arr_or_im if isinstance(arr_or_im, Image.Image) else Image.fromarray(arr_or_im)
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(side: int = 60000) -> bytes:
    """A few hundred bytes whose header claims side×side pixels."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
            + _chunk(b"IEND", b""))


def corpus() -> dict[str, tuple[bytes | None, str]]:
    """file name -> (bytes, expectation): "ok", "ok:grey", "ok:16", or the substring of the expected error."""
    rng = np.random.default_rng(0)
    photo = np.asarray(Image.fromarray(skdata.astronaut()).resize((72, 64)))
    good_jpg = _save(photo, "JPEG", quality=90)
    good_png = _save(photo, "PNG")
    c: dict[str, tuple[bytes | None, str]] = {}
    c["empty.jpg"] = (b"", "empty file")
    c["truncated.jpg"] = (good_jpg[: len(good_jpg) // 2], "truncated or corrupt")
    c["truncated.png"] = (good_png[: int(len(good_png) * 0.6)], "truncated or corrupt")
    c["random bytes.png"] = (rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(), "not a readable image")
    c["notes.txt"] = (b"Box 12, folder 3: wedding portraits, 1923.\n" * 20, "skipped")   # not an image name
    c["bomb.png"] = (bomb_png(), "too large")
    c["huge.png"] = (_save(np.zeros((800, 800), np.uint8), "PNG"), "too large")   # over --max-megapixels 0.5
    c["cmyk.jpg"] = (_save(Image.fromarray(photo).convert("CMYK"), "JPEG"), "ok")
    pal = Image.fromarray(photo).convert("P", palette=Image.ADAPTIVE, colors=16)
    c["palette transparent.png"] = (_save(pal, "PNG", transparency=0), "ok")
    c["rgb16.png"] = (cv2.imencode(".png", (photo.astype(np.uint16) * 257)[..., ::-1])[1].tobytes(), "ok:16")
    rgba = np.dstack([photo, np.full(photo.shape[:2], 128, np.uint8)])
    c["rgba.png"] = (_save(rgba, "PNG"), "ok")
    c["grey.png"] = (_save(Image.fromarray(photo).convert("L"), "PNG"), "ok:grey")
    c["bilevel.png"] = (_save(Image.fromarray(photo).convert("1"), "PNG"), "ok:grey")
    c["float.tif"] = (_save(Image.fromarray(photo[..., 0].astype(np.float32)), "TIFF"), "ok:grey16")
    buf = io.BytesIO()
    tifffile.imwrite(buf, photo.astype(np.float32) / 255, photometric="rgb")
    c["float rgb.tif"] = (buf.getvalue(), "ok:16")
    pages = [Image.fromarray(photo), Image.fromarray(photo[::-1])]
    c["multipage.tif"] = (_save(pages[0], "TIFF", save_all=True, append_images=pages[1:]), "ok")
    icc = bytearray(3_000_000)                     # a 3 MB "RGB" ICC profile: over what PIL reads back
    icc[16:20], icc[36:40] = b"RGB ", b"acsp"
    c["huge icc.jpg"] = (_save(photo, "JPEG", icc_profile=bytes(icc)), "ok")
    c["名前 with spaces ✓.jpg"] = (good_jpg, "ok")
    c["tiny.png"] = (_save(photo[:1, :1], "PNG"), "ok")
    c["elongated.png"] = (_save(np.tile(photo[:4], (1, 5, 1)), "PNG"), "ok")                     # 4×360
    im = Image.fromarray(photo)
    exif = im.getexif()
    exif[0x0112] = 8
    c["sideways.jpg"] = (_save(im, "JPEG", exif=exif.tobytes()), "ok:rotated")
    exif[0x0112] = 99
    c["bad orientation.jpg"] = (_save(im, "JPEG", exif=exif.tobytes()), "ok")
    frames = [Image.fromarray(photo).convert("P"), Image.fromarray(photo[::-1]).convert("P")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    c["animated.gif"] = (buf.getvalue(), "ok")
    c["jpeg named.png"] = (good_jpg, "ok")
    c["truncated.tif"] = (_save(photo, "TIFF")[:400], "truncated or corrupt")
    return c


SECRET = b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
WARNINGS = {    # what the decode policy reports in provenance, exactly
    "animated.gif": ["multi-frame file (2 frames): only the first was restored"],
    "multipage.tif": ["multi-frame file (2 pages): only the first was restored"],
    "float.tif": ["float TIFF (float32) written back as 16-bit integer TIFF"],
    "float rgb.tif": ["float TIFF (float32) written back as 16-bit integer TIFF"],
    "huge icc.jpg": ["ICC profile of 3,000,000 bytes dropped (over 1,000,000: the output could not be read back)"],
}
LINK_SKIPPED = "skipped:symbolic link, not followed"


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_hostile_corpus(tmp_path, weights_dir):
    src = tmp_path / "scans"
    src.mkdir()
    cases = corpus()
    assert len(cases) >= 15
    for name, (blob, _) in cases.items():
        (src / name).write_bytes(blob)
    (src / ".DS_Store").write_bytes(b"\x00\x01junk")                 # hidden: not an input
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
    before = {p.name: sha(p) for p in src.iterdir() if p.is_file() and not p.is_symlink()}
    mtimes = {p.name: p.stat().st_mtime_ns for p in src.iterdir() if p.is_file()}
    out = tmp_path / "out"

    result = CliRunner().invoke(app, ["restore", str(src), "--out", str(out), "--weights", str(weights_dir),
                                      "--scratch", "off", "--max-megapixels", "0.5", "--no-catalog"])
    assert result.exit_code == 1, result.output

    # inputs untouched, nothing added to the input folder
    assert {p.name: sha(p) for p in src.iterdir() if p.is_file() and not p.is_symlink()} == before
    assert {p.name: p.stat().st_mtime_ns for p in src.iterdir() if p.is_file()} == mtimes
    assert sorted(p.name for p in src.iterdir()) == sorted(list(cases) + [".DS_Store"])

    failed_lines = {line.split(": ", 1)[0][len("FAILED "):]: line for line in result.stdout.splitlines()
                    if line.startswith("FAILED ")}
    folders = {json.loads(p.read_text())["input"]["uri"]: p.parent for p in out.glob("*/provenance.json")}
    skipped = dict(line[len("SKIPPED "):].split(": ", 1) for line in result.stdout.splitlines()
                   if line.startswith("SKIPPED "))
    expect_skipped = {str(src / n): e for n, (_, e) in cases.items() if e.startswith("skipped")}
    assert set(skipped) == set(expect_skipped) | {str(src / ".DS_Store")}
    for path, e in expect_skipped.items():
        assert e == "skipped" or skipped[path] == SYMLINK_NOT_FOLLOWED, (path, skipped[path])
    # one folder per input, colliding stems included; skipped files get none
    assert len(folders) == len(cases) - len(expect_skipped)
    # nothing of a link's target in any message, provenance or output
    assert b"root:x" not in result.stdout.encode() + result.stderr.encode()
    assert not any(b"root:x" in p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert sum(f.name.startswith("truncated-") for f in folders.values()) == 3
    n_ok = 0
    for name, (_, expect) in cases.items():
        path = str(src / name)
        if expect.startswith("skipped"):
            assert path not in folders and path not in failed_lines
            continue
        item = folders[path]
        prov = json.loads((item / "provenance.json").read_text())
        if expect.startswith("ok"):
            assert prov["status"] == "done", (name, prov["error"])
            assert path not in failed_lines
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
            assert path in failed_lines and expect in failed_lines[path], (name, result.stdout)
            assert sorted(p.name for p in item.iterdir()) == ["provenance.json"]
    assert n_ok >= 12
    assert not (out / ".DS_Store").exists()


def run_bounded(cmd: list[str], rss_limit: int, timeout: float) -> tuple[int, int]:
    """(exit code, peak RSS in bytes) of a command, killed as soon as its RSS passes `rss_limit` or it runs
    past `timeout` seconds (exit code -9 then), so a regression fails fast instead of exhausting the machine.

    The peak is the child's own high-water mark (VmHWM, sampled every 0.1 s), not `ru_maxrss`: the latter also
    counts the memory the child shared with this (large) pytest process between fork and exec."""
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    t0 = time.monotonic()
    peak = 0
    while True:
        pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return os.waitstatus_to_exitcode(status), peak
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
    code, peak = run_bounded([sys.executable, "-c", "from oldphoto.cli import main; main()", "restore", str(src),
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
