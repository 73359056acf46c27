"""Data area: GIMP/Krita decoders on crafted bytes, splits, fetch manifest idempotence over a fake package cache."""
from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from oldphoto.data.dataset import (DataNotFetchedError, PhotoDataset, builtin_photos, face_split,
                                   held_out_face_photos, load_splits, make_splits, real_old_photo, real_old_photos,
                                   split_photos, held_out_photos)
from oldphoto.data.fetch import PackageReader, fetch, read_deb_members
from oldphoto.digest import file_sha256
from oldphoto.data.rcc import RccFormatError, read_rcc
from oldphoto.data.sources import (NPM_PACKAGES, V1_PHOTO_IDS, DebPackage, FaceSource, FetchPlan, NpmPackage,
                                   PhotoSource, Select, TextureSource)
from oldphoto.data.textures import (TextureBank, TextureFormatError, decode_gbr, decode_gih, decode_pat,
                                    decode_texture_file, read_bundle_member)


# ------------------------------------------------------------------------------------------ crafted files
def gbr_bytes(pix: np.ndarray, name: str = "brush", version: int = 2, spacing: int = 25) -> bytes:
    h, w = pix.shape[:2]
    nbytes = 1 if pix.ndim == 2 else pix.shape[2]
    name_b = name.encode() + b"\x00"
    if version == 1:
        header = struct.pack(">5I", 20 + len(name_b), 1, w, h, nbytes) + name_b
    else:
        header = struct.pack(">5I", 28 + len(name_b), version, w, h, nbytes) + b"GIMP" + struct.pack(">I", spacing) + name_b
    return header + pix.astype(np.uint8).tobytes()


def gih_bytes(cells: list[np.ndarray], name: str = "pipe") -> bytes:
    head = f"{name}\n{len(cells)} ncells:{len(cells)} dim:1 rank0:{len(cells)} sel0:random\n".encode()
    return head + b"".join(gbr_bytes(c, f"cell{i}") for i, c in enumerate(cells))


def pat_bytes(pix: np.ndarray, name: str = "pattern") -> bytes:
    h, w, c = pix.shape
    name_b = name.encode() + b"\x00"
    return struct.pack(">5I", 24 + len(name_b), 1, w, h, c) + b"GPAT" + name_b + pix.astype(np.uint8).tobytes()


def test_decode_gbr_grey_and_rgba_and_v1():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    b, end = decode_gbr(gbr_bytes(grey, "Scratch 01"))
    assert b.name == "Scratch 01" and b.spacing == 25
    np.testing.assert_array_equal(b.pixels, grey)
    assert end == len(gbr_bytes(grey, "Scratch 01"))
    rgba = rng.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    b2, _ = decode_gbr(gbr_bytes(rgba))
    np.testing.assert_array_equal(b2.pixels, rgba)
    b1, _ = decode_gbr(gbr_bytes(grey, "old", version=1))
    assert b1.name == "old"
    np.testing.assert_array_equal(b1.pixels, grey)


def test_decode_gbr_rejects_bad_input():
    grey = np.zeros((4, 4), np.uint8)
    good = gbr_bytes(grey)
    with pytest.raises(TextureFormatError, match="truncated"):
        decode_gbr(good[:-3])
    with pytest.raises(TextureFormatError, match="magic"):
        decode_gbr(good[:20] + b"XXXX" + good[24:])
    with pytest.raises(TextureFormatError, match="depth"):
        decode_gbr(good[:16] + struct.pack(">I", 3) + good[20:])
    with pytest.raises(TextureFormatError):
        decode_gbr(b"\x00\x01")


def test_decode_gih_cells_in_order():
    cells = [np.full((6, 5), v, np.uint8) for v in (10, 200, 77)]
    name, brushes = decode_gih(gih_bytes(cells, "Grunge 01"))
    assert name == "Grunge 01" and len(brushes) == 3
    for c, b in zip(cells, brushes):
        np.testing.assert_array_equal(b.pixels, c)
    with pytest.raises(TextureFormatError):
        decode_gih(gih_bytes(cells)[:-10])


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_decode_pat(channels):
    pix = np.random.default_rng(channels).integers(0, 256, (4, 6, channels), dtype=np.uint8)
    name, out = decode_pat(pat_bytes(pix, "paper"))
    assert name == "paper"
    np.testing.assert_array_equal(out, pix)


def test_decode_pat_rejects_brush():
    with pytest.raises(TextureFormatError, match="magic"):
        decode_pat(gbr_bytes(np.zeros((2, 2), np.uint8), version=1))


def test_texture_files_to_png_roundtrip_and_krita_bundle():
    cells = [np.random.default_rng(i).integers(0, 256, (8, 9), dtype=np.uint8) for i in range(2)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("brushes/scratches.gih", gih_bytes(cells))
        zf.writestr("mimetype", "application/x-krita-resourcebundle")
    member = read_bundle_member(buf.getvalue(), "brushes/scratches.gih")
    pngs = decode_texture_file("scratches.gih", member)
    assert [s for s, _ in pngs] == ["_00", "_01"]
    for (_, png), cell in zip(pngs, cells):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), cell)
    # deterministic PNG bytes (manifest idempotence depends on it)
    assert decode_texture_file("scratches.gih", member) == pngs
    rgb = np.random.default_rng(5).integers(0, 256, (3, 3, 3), dtype=np.uint8)
    (_, png), = decode_texture_file("x.pat", pat_bytes(rgb))
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), rgb)
    with pytest.raises(TextureFormatError):
        read_bundle_member(buf.getvalue(), "brushes/missing.gbr")
    with pytest.raises(TextureFormatError, match="unknown"):
        decode_texture_file("x.abr", b"...")


# ------------------------------------------------------------------------------------------------ splits
def test_splits_deterministic_disjoint_and_builtin_held_out():
    ids = [f"pkg/photo{i:02d}" for i in range(40)] + [f"builtin/b{i}" for i in range(9)]
    builtin = [i for i in ids if i.startswith("builtin/")]
    s1 = make_splits(ids, always_test=builtin)
    s2 = make_splits(list(reversed(ids)), always_test=list(reversed(builtin)))
    assert s1 == s2
    assert set(builtin) <= set(s1["test"])
    assert len(s1["test"]) >= 8 and len(s1["val"]) == 4
    parts = [set(s1[k]) for k in ("train", "val", "test")]
    assert sum(map(len, parts)) == len(ids) and set().union(*parts) == set(ids)
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    # the salt decides, not the order: another salt gives another (still valid) split
    s3 = make_splits(ids, always_test=builtin, salt="other")
    assert s3["val"] != s1["val"] or s3["test"] != s1["test"]


def test_builtin_photos_available_and_fallback_test_set(tmp_path):
    recs = builtin_photos()
    assert len(recs) >= 8
    assert all(r.path.is_file() for r in recs)
    got, source = held_out_photos(tmp_path / "nothing-here")
    assert [r.id for r in got] == [r.id for r in recs] and "builtin" in source
    ds = PhotoDataset(recs[:2], max_short_side=64)
    img = ds[0]
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) == 64
    with pytest.raises(DataNotFetchedError):
        load_splits(tmp_path)


# ------------------------------------------------------------------------------------------ fetch (fake)
def _fake_tree(root: Path) -> dict[str, bytes]:
    """A package file tree made of real files: two builtin photos, a GIMP pattern, a brush pipe, a bundle."""
    recs = builtin_photos()
    files = {
        "usr/share/photos/a.png": recs[0].path.read_bytes(),
        "usr/share/photos/b.jpg": next(r for r in recs if r.path.suffix == ".jpg").path.read_bytes(),
        "usr/share/old/real.png": recs[1].path.read_bytes(),
        "usr/share/patterns/paper.pat": pat_bytes(np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)),
        "usr/share/brushes/scratch.gih": gih_bytes([np.random.default_rng(i).integers(0, 256, (20, 20), dtype=np.uint8)
                                                    for i in range(3)]),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("brushes/crackles.gbr", gbr_bytes(np.full((24, 24), 200, np.uint8)))
    files["usr/share/bundles/res.bundle"] = buf.getvalue()
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def _plan(pkg: DebPackage) -> FetchPlan:
    return FetchPlan(
        debs=(pkg,), pypi=(), npm=(), faces=(), extras={}, builtin=(),
        photos=(PhotoSource(pkg.name, "fake", ("usr/share/photos/a.png", "usr/share/photos/b.jpg")),),
        textures=(TextureSource(pkg.name, "paper", ("usr/share/patterns/paper.pat",), prefix="t_"),
                  TextureSource(pkg.name, "scratch", ("usr/share/brushes/scratch.gih",), prefix="t_"),
                  TextureSource(pkg.name, "scratch", ("brushes/crackles.gbr",), bundle="usr/share/bundles/res.bundle",
                                prefix="k_")),
        real=((pkg.name, "usr/share/old/real.png", "solvay_1927.png"),))


@pytest.fixture
def fake_deb(tmp_path) -> tuple[Path, dict[str, bytes]]:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb not installed")
    tree = tmp_path / "pkgroot"
    files = _fake_tree(tree)
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN" / "control").write_text("Package: oldphoto-fake\nVersion: 1:1.0-1\nArchitecture: all\n"
                                             "Maintainer: test <t@example.org>\nDescription: test\n")
    deb = tmp_path / "fake.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], check=True, capture_output=True)
    return deb, files


def test_read_deb_members(fake_deb):
    deb, files = fake_deb
    got = read_deb_members(deb, {"usr/share/photos/a.png", "usr/share/patterns/paper.pat", "no/such/file"})
    assert got == {k: files[k] for k in ("usr/share/photos/a.png", "usr/share/patterns/paper.pat")}


def test_fetch_offline_from_cache_is_idempotent(fake_deb, tmp_path):
    deb, files = fake_deb
    pkg = DebPackage("oldphoto-fake", "1:1.0-1", file_sha256(deb), deb.stat().st_size, "test")
    data = tmp_path / "data"
    (data / "cache" / "deb").mkdir(parents=True)
    shutil.copy(deb, data / "cache" / "deb" / pkg.filename)
    assert pkg.filename == "oldphoto-fake_1%3a1.0-1_all.deb"
    logs: list[str] = []
    r1 = fetch(data, _plan(pkg), offline=True, log=logs.append)
    assert r1.ok, r1.errors
    assert any("cached, sha256 ok" in line for line in logs)
    m1 = (data / "manifest.json").read_bytes()
    s1 = (data / "splits.json").read_bytes()
    manifest = json.loads(m1)
    assert manifest["packages"][0]["sha256"] == pkg.sha256
    # every recorded file exists with its recorded sum; photos and the real photo are byte-exact copies
    for rel, meta in manifest["files"].items():
        assert file_sha256(data / rel) == meta["sha256"]
    assert (data / "photos/fake/a.png").read_bytes() == files["usr/share/photos/a.png"]
    assert (data / "real/solvay_1927.png").read_bytes() == files["usr/share/old/real.png"]
    assert sorted(p.name for p in (data / "textures/scratch").iterdir()) == [
        "k_crackles.png", "t_scratch_00.png", "t_scratch_01.png", "t_scratch_02.png"]
    assert [p["id"] for p in manifest["photos"]] == ["fake/a", "fake/b"]
    # second run: nothing written, identical manifest and splits
    r2 = fetch(data, _plan(pkg), offline=True, log=lambda m: None)
    assert r2.ok and r2.written == 0
    assert (data / "manifest.json").read_bytes() == m1 and (data / "splits.json").read_bytes() == s1
    # the data folder reads back: textures and split photos
    bank = TextureBank.from_dir(data)
    assert len(bank.papers) == 1 and len(bank.scratches) == 4
    all_ids = sum((load_splits(data)[k] for k in ("train", "val", "test")), [])
    assert sorted(all_ids) == ["fake/a", "fake/b"]
    recs = sum((split_photos(data, k) for k in ("train", "val", "test")), [])
    assert all(r.path.is_file() for r in recs)


def test_fetch_refuses_a_tampered_cache_offline(fake_deb, tmp_path):
    deb, _ = fake_deb
    pkg = DebPackage("oldphoto-fake", "1.0", "0" * 64, 1, "test")
    data = tmp_path / "data"
    (data / "cache" / "deb").mkdir(parents=True)
    shutil.copy(deb, data / "cache" / "deb" / pkg.filename)
    r = fetch(data, _plan(pkg), offline=True, log=lambda m: None)
    assert not r.ok and "downloads are off" in r.errors[0]
    assert r.photos == []


def test_fetch_from_extracted_folder(tmp_path):
    tree = tmp_path / "tree"
    files = _fake_tree(tree)
    pkg = DebPackage("oldphoto-fake", "1.0", "unused", 0, "test")
    r = fetch(tmp_path / "data", _plan(pkg), log=lambda m: None, package_paths={"oldphoto-fake": tree})
    assert r.ok, r.errors
    assert (tmp_path / "data/photos/fake/b.jpg").read_bytes() == files["usr/share/photos/b.jpg"]
    assert PackageReader(tree).read({"usr/share/old/real.png"})["usr/share/old/real.png"] == files["usr/share/old/real.png"]


def test_cli_fetch_offline_without_cache_fails_clearly(tmp_path):
    from oldphoto.cli import app

    res = CliRunner().invoke(app, ["data", "fetch", str(tmp_path / "d"), "--offline"])
    assert res.exit_code == 1
    assert "downloads are off" in res.output


# ------------------------------------------------------------------------------------ npm face photos (fake)
def test_npm_package_names():
    pkg = NPM_PACKAGES[0]
    assert pkg.url == "https://registry.npmjs.org/@vladmandic/face-api/-/face-api-1.7.15.tgz"
    assert pkg.filename == "vladmandic-face-api-1.7.15.tgz" and pkg.spec == "@vladmandic/face-api@1.7.15"
    assert FetchPlan().faces[0].members == tuple(f"package/demo/sample{i}.jpg" for i in range(1, 7))


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def fake_npm(tmp_path) -> tuple[NpmPackage, dict[str, bytes]]:
    """A tarball laid out like the npm registry's (file:// URL), with demo/sample1-3.jpg, a symlink and a
    '..' member that must never be followed or written."""
    files = {f"package/demo/sample{i}.jpg": _jpeg(i) for i in range(1, 4)}
    files["package/package.json"] = b'{"name": "@fake/face-api", "version": "1.0.0"}'
    files["package/../../evil.jpg"] = _jpeg(9)
    reg = tmp_path / "registry"
    tgz = reg / "@fake" / "face-api" / "-" / "face-api-1.0.0.tgz"
    tgz.parent.mkdir(parents=True)
    with tarfile.open(tgz, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("package/demo/sample4.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    pkg = NpmPackage("@fake/face-api", "1.0.0", file_sha256(tgz), tgz.stat().st_size, "MIT", registry=reg.as_uri())
    return pkg, files


def _face_plan(npm: NpmPackage, deb: DebPackage, members: tuple[str, ...] | None = None) -> FetchPlan:
    plan = _plan(deb)
    plan.npm = (npm,)
    plan.faces = (FaceSource(npm.name, "face-api",
                             members or tuple(f"package/demo/sample{i}.jpg" for i in range(1, 4)), licence="MIT"),)
    return plan


def test_fetch_npm_face_photos_kept_out_of_splits_and_idempotent(fake_npm, tmp_path):
    npm, files = fake_npm
    tree = tmp_path / "tree"
    _fake_tree(tree)
    deb = DebPackage("oldphoto-fake", "1.0", "unused", 0, "test")
    # reference: the same data without the npm source
    ref = fetch(tmp_path / "ref", _plan(deb), log=lambda m: None, package_paths={"oldphoto-fake": tree})
    assert ref.ok, ref.errors
    data = tmp_path / "data"
    logs: list[str] = []
    r1 = fetch(data, _face_plan(npm, deb), log=logs.append, package_paths={"oldphoto-fake": tree})
    assert r1.ok, r1.errors
    assert any("downloading" in line and npm.url in line for line in logs)
    assert file_sha256(data / "cache" / "npm" / "fake-face-api-1.0.0.tgz") == npm.sha256
    assert sorted(p.name for p in (data / "faces" / "face-api").iterdir()) == [f"sample{i}.jpg" for i in (1, 2, 3)]
    manifest = json.loads((data / "manifest.json").read_text())
    for i in range(1, 4):
        rel, member = f"faces/face-api/sample{i}.jpg", f"package/demo/sample{i}.jpg"
        assert (data / rel).read_bytes() == files[member]
        assert manifest["files"][rel] == {"sha256": file_sha256(data / rel), "size": len(files[member]),
                                          "package": "@fake/face-api", "member": member, "kind": "face_photo"}
    assert [f["path"] for f in manifest["face_photos"]] == [f"faces/face-api/sample{i}.jpg" for i in range(1, 4)]
    assert {"type": "npm", "name": "@fake/face-api", "version": "1.0.0", "licence": "MIT",
            "file": "fake-face-api-1.0.0.tgz", "sha256": npm.sha256, "size": npm.size} in manifest["packages"]
    # nothing outside DIR, no face photo in the clean-photo splits: splits and photo list as without npm
    assert not (tmp_path / "evil.jpg").exists() and not (data.parent / "evil.jpg").exists()
    assert (data / "splits.json").read_bytes() == (tmp_path / "ref" / "splits.json").read_bytes()
    assert manifest["photos"] == json.loads((tmp_path / "ref" / "manifest.json").read_text())["photos"]
    # second run, offline: the cache is reused, nothing is written
    m1 = (data / "manifest.json").read_bytes()
    logs.clear()
    r2 = fetch(data, _face_plan(npm, deb), offline=True, log=logs.append, package_paths={"oldphoto-fake": tree})
    assert r2.ok and r2.written == 0, r2.errors
    assert any("@fake/face-api@1.0.0: cached, sha256 ok" in line for line in logs)
    assert (data / "manifest.json").read_bytes() == m1


def test_fetch_npm_refuses_sha256_mismatch_and_unsafe_members(fake_npm, tmp_path):
    npm, _ = fake_npm
    tree = tmp_path / "tree"
    _fake_tree(tree)
    deb = DebPackage("oldphoto-fake", "1.0", "unused", 0, "test")
    bad = NpmPackage(npm.name, npm.version, "0" * 64, npm.size, "MIT", registry=npm.registry)
    r = fetch(tmp_path / "d1", _face_plan(bad, deb), log=lambda m: None, package_paths={"oldphoto-fake": tree})
    assert not r.ok and any("differs from the pinned" in e for e in r.errors)
    assert not (tmp_path / "d1" / "cache" / "npm" / bad.filename).exists()   # the bad download is deleted
    assert not (tmp_path / "d1" / "faces").exists()
    # offline with an empty cache: a clear refusal, no download
    r = fetch(tmp_path / "d2", _face_plan(npm, deb), offline=True, log=lambda m: None,
              package_paths={"oldphoto-fake": tree})
    assert any("@fake/face-api@1.0.0 is not in" in e and "downloads are off" in e for e in r.errors)
    # '..' members, absolute paths and symlinks are never read or written
    r = fetch(tmp_path / "d3", _face_plan(npm, deb, ("package/../../evil.jpg", "/etc/passwd",
                                                     "package/demo/sample4.jpg", "package/demo/sample1.jpg")),
              log=lambda m: None, package_paths={"oldphoto-fake": tree})
    assert sum("unsafe member" in e for e in r.errors) == 2
    assert any("package/demo/sample4.jpg missing" in e for e in r.errors)
    assert sorted(p.name for p in (tmp_path / "d3" / "faces" / "face-api").iterdir()) == ["sample1.jpg"]
    assert not (tmp_path / "evil.jpg").exists()


def test_face_sources_use_faces_folder_and_key_follows_the_photos(tmp_path):
    from oldphoto.training.datasets import face_source_photos, face_sources_key

    data = tmp_path / "data"
    for rel, seed in (("faces/face-api/sample1.jpg", 1), ("photos/g/a.jpg", 2), ("real/solvay_1927.png", 3),
                      ("cache/npm/x.jpg", 4), ("textures/paper/t.png", 5)):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(_jpeg(seed))
    src = face_source_photos(data)
    names = [n for _, n, _ in src]
    assert "faces/face-api/sample1.jpg" in names and "photos/g/a.jpg" in names
    assert not any(n.startswith(("real/", "cache/", "textures/")) for n in names)
    k1 = face_sources_key(src, 256)
    assert face_sources_key(face_source_photos(data), 256) == k1 != face_sources_key(src, 512)
    (data / "faces/face-api/sample2.jpg").write_bytes(_jpeg(6))
    assert face_sources_key(face_source_photos(data), 256) != k1


def test_face_sources_leave_out_the_test_split_and_builtin_photos(tmp_path):
    """The quality bench runs the face stage on the test photos: the face trainer must never see them."""
    import json

    from oldphoto.training.datasets import face_source_photos

    data = tmp_path / "data"
    files = {"photos/g/train.jpg": 1, "photos/g/test.jpg": 2, "photos/g/copy_of_test.jpg": 2,
             "faces/face-api/sample1.jpg": 3}
    for rel, seed in files.items():
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(_jpeg(seed))
    builtin = builtin_photos()[0].path
    (data / "photos/builtin").mkdir(parents=True)
    (data / "photos/builtin" / builtin.name).write_bytes(builtin.read_bytes())
    (data / "manifest.json").write_text(json.dumps({"photos": [
        {"id": "g/train", "path": "photos/g/train.jpg"}, {"id": "g/test", "path": "photos/g/test.jpg"}]}))
    (data / "splits.json").write_text(json.dumps({"train": ["g/train"], "val": [], "test": ["g/test"]}))
    names = [n for _, n, _ in face_source_photos(data)]
    assert sorted(names) == ["faces/face-api/sample1.jpg", "photos/g/train.jpg"]
    # without a data folder (smoke runs) the builtin photos are the only source
    smoke = [n for _, n, _ in face_source_photos(None)]
    assert smoke and all(n.startswith("builtin/") for n in smoke)


# ------------------------------------------------------------------------------------------ Qt .rcc reader
def rcc_bytes(files: dict[str, bytes], compressed: tuple[str, ...] = (), version: int = 2,
              names_override: dict[str, str] | None = None, first_child_override: int | None = None) -> bytes:
    """A Qt binary resource file laid out as `rcc -binary` writes it: header, data, names, tree (the
    children of a directory are consecutive nodes, breadth first)."""
    root: dict = {}
    for path in files:
        d = root
        *dirs, leaf = path.split("/")
        for p in dirs:
            d = d.setdefault(p, {})
        d[leaf] = path
    nodes: list[list] = [["", root, 0, 0]]          # name, dict (dir) or path (file), count, first
    i = 0
    while i < len(nodes):
        if isinstance(nodes[i][1], dict):
            children = sorted(nodes[i][1].items())
            nodes[i][2:] = [len(children), len(nodes)]
            nodes += [[n, v, 0, 0] for n, v in children]
        i += 1
    data, names, name_off, data_off = b"", b"", {}, {}
    for path, payload in files.items():
        data_off[path] = len(data)
        if path in compressed:
            payload = struct.pack(">I", len(payload)) + zlib.compress(payload)
        data += struct.pack(">I", len(payload)) + payload
    for name, *_ in nodes:
        name = (names_override or {}).get(name, name)
        if name not in name_off:
            name_off[name] = len(names)
            names += struct.pack(">HI", len(name), 0) + name.encode("utf-16-be")
    tree = b""
    for k, (name, v, count, first) in enumerate(nodes):
        off = name_off[(names_override or {}).get(name, name)]
        if isinstance(v, dict):
            if k == 1 and first_child_override is not None:
                first = first_child_override
            tree += struct.pack(">IHII", off, 2, count, first)
        else:
            tree += struct.pack(">IHHHI", off, 1 if v in compressed else 0, 0, 0, data_off[v])
        if version >= 2:
            tree += struct.pack(">Q", 0)
    head = 20 + (4 if version >= 3 else 0)
    hdr = b"qres" + struct.pack(">4I", version, head + len(data) + len(names), head, head + len(data))
    if version >= 3:
        hdr += struct.pack(">I", 0)
    return hdr + data + names + tree


@pytest.mark.parametrize("version", [1, 2, 3])
def test_read_rcc_plain_and_zlib_entries(version):
    files = {"gcompris/a/one.webp": b"first file", "gcompris/a/b/two.jpg": b"x" * 300, "top.qml": b"qml"}
    blob = rcc_bytes(files, compressed=("gcompris/a/b/two.jpg",), version=version)
    assert read_rcc(blob) == dict(sorted(files.items()))
    assert read_rcc(blob, want=lambda p: p.endswith(".jpg")) == {"gcompris/a/b/two.jpg": b"x" * 300}


def test_read_rcc_rejects_hostile_files():
    good = {"d/a.jpg": b"abc"}
    with pytest.raises(RccFormatError, match="magic"):
        read_rcc(b"QRES" + rcc_bytes(good)[4:])
    with pytest.raises(RccFormatError, match="truncated"):
        read_rcc(rcc_bytes(good)[:30])
    with pytest.raises(RccFormatError, match="unsafe"):            # a '..' name: no path traversal
        read_rcc(rcc_bytes({"d/a.jpg": b"abc"}, names_override={"d": ".."}))
    with pytest.raises(RccFormatError, match="unsafe"):
        read_rcc(rcc_bytes({"d/a.jpg": b"abc"}, names_override={"a.jpg": "x/y.jpg"}))
    with pytest.raises(RccFormatError, match="cycle"):             # a directory that contains itself
        read_rcc(rcc_bytes(good, first_child_override=1))
    bomb = {"d/a.jpg": b"\0" * 100_000}
    with pytest.raises(RccFormatError, match="exceeds"):           # bounded decompressed size
        read_rcc(rcc_bytes(bomb, compressed=("d/a.jpg",)), max_file_bytes=10_000)
    lie = bytearray(rcc_bytes({"d/a.jpg": b"\0" * 1000}, compressed=("d/a.jpg",)))
    lie[24:28] = struct.pack(">I", 10)                             # says 10 bytes, inflates to 1000
    with pytest.raises(RccFormatError, match="header says 10"):
        read_rcc(bytes(lie))


# ------------------------------------------------------------------------------- v2 splits: v1 kept exactly
V1_TEST = ["builtin/astronaut", "builtin/camera", "builtin/chelsea", "builtin/china", "builtin/coffee",
           "builtin/flower", "builtin/grace_hopper", "builtin/motorcycle_left", "builtin/rocket", "opencv/aloeL",
           "plasma/ColorfulCups", "plasma/Kite"]
V1_VAL = ["lomiri/Picture_0B_by_freespace", "lomiri/friends_by_Aitzol_Berasategi", "mate/Aqua", "plasma/BytheWater"]


def test_v1_photos_keep_their_split_and_new_photos_split_by_hash():
    """The shipped weights were trained on the v1 train split: its test photos must stay held out."""
    v1 = list(V1_PHOTO_IDS)
    builtin = [i for i in v1 if i.startswith("builtin/")]
    assert len(v1) == 66
    only_v1 = make_splits(v1, always_test=builtin, v1_ids=V1_PHOTO_IDS)
    assert only_v1["test"] == V1_TEST and only_v1["val"] == V1_VAL
    assert only_v1 == make_splits(v1, always_test=builtin)           # the v1 rule, as fetched in v1
    new = [f"pkg{i % 7}/photo{i:04d}" for i in range(2000)]
    both = make_splits(v1 + new, always_test=builtin, v1_ids=V1_PHOTO_IDS)
    for k in ("train", "val", "test"):
        assert [i for i in both[k] if i in V1_PHOTO_IDS] == only_v1[k]
    frac = {k: sum(i in both[k] for i in new) / len(new) for k in ("train", "val", "test")}
    assert 0.08 < frac["test"] < 0.12 and 0.08 < frac["val"] < 0.12
    # a new photo's split depends on its id only, not on which other photos exist
    fewer = make_splits(v1 + new[:50], always_test=builtin, v1_ids=V1_PHOTO_IDS)
    assert all((i in fewer[k]) == (i in both[k]) for i in new[:50] for k in ("train", "val", "test"))


# ------------------------------------------------------------------- new sources: rules, real set, face split
def _img(seed: int, size: tuple[int, int] = (320, 280), fmt: str = "JPEG", quality: int = 90) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _v2_tree(root: Path) -> dict[str, bytes]:
    files = {
        "usr/share/bg/Nature/lake.jpg": _img(1),
        "usr/share/bg/Nature/lake_copy.jpg": _img(1, quality=60),       # near-duplicate: skipped
        "usr/share/bg/Indoors/room1.jpg": _img(2),                       # excluded by the rule (a render)
        "usr/share/bg/Outdoors/lake.jpg": _img(3),                       # same file name: gets a prefix
        "usr/share/bg/tiny.jpg": _img(4, (200, 300)),                    # short side < 256: skipped
        "usr/share/bg/notes.txt": b"not a photo",
        "usr/share/res/game.rcc": rcc_bytes({"act/erase/resource/fox.webp": _img(5, fmt="WEBP"),
                                             "act/erase/resource/icon.svg": b"<svg/>",
                                             "act/other/skip.webp": _img(6, fmt="WEBP")},
                                            compressed=("act/erase/resource/fox.webp",)),
        "usr/share/doc/old/1900_group.jpg": _img(7),
        "usr/share/doc/old/portrait.png": _img(8, fmt="PNG"),
    }
    files.update({f"usr/share/doc/faces/people/p{i:02d}.jpg": _img(100 + i, (64, 64)) for i in range(20)})
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def _v2_plan(pkg: DebPackage) -> FetchPlan:
    plan = _plan(pkg)
    plan.photos = (PhotoSource(pkg.name, "fake", ("usr/share/photos/a.png",)),
                   PhotoSource(pkg.name, "bg", select=Select("usr/share/bg/", (".jpg",), exclude=("/room1.jpg",)),
                               min_side=256, dedupe=True),
                   PhotoSource(pkg.name, "game", select=Select("act/erase/", (".webp",),
                                                               rcc=("usr/share/res/game.rcc",)), min_side=256))
    plan.real = ((pkg.name, "usr/share/old/real.png", "solvay_1927.png"),
                 (pkg.name, "usr/share/doc/old/portrait.png", "portrait.png"),
                 (pkg.name, "usr/share/doc/old/1900_group.jpg", "1900_group.jpg"))
    plan.faces = (FaceSource(pkg.name, "people", select=Select("usr/share/doc/faces/", (".jpg",))),)
    return plan


def test_fetch_rule_sources_real_set_and_face_split(tmp_path):
    from oldphoto.training.datasets import face_source_photos

    tree = tmp_path / "tree"
    _fake_tree(tree)
    files = _v2_tree(tree)
    pkg = DebPackage("oldphoto-fake", "1.0", "unused", 0, "test")
    data = tmp_path / "data"
    r = fetch(data, _v2_plan(pkg), log=lambda m: None, package_paths={pkg.name: tree})
    assert r.ok, r.errors
    manifest = json.loads((data / "manifest.json").read_text())
    # rule: folder + suffix + exclusions, short side >= 256, near-duplicates dropped, names made unique
    assert sorted(p["id"] for p in manifest["photos"]) == ["bg/Outdoors_lake", "bg/lake", "fake/a", "game/fox"]
    assert (data / "photos/bg/lake.jpg").read_bytes() == files["usr/share/bg/Nature/lake.jpg"]
    assert manifest["files"]["photos/game/fox.webp"]["member"] == "usr/share/res/game.rcc!act/erase/resource/fox.webp"
    with Image.open(data / "photos/game/fox.webp") as im:
        assert im.size == (320, 280)
    # the real-photo review set: Solvay first, then the others sorted; kind real_old_photo; never trained on
    assert real_old_photos(data) == [data / "real/solvay_1927.png", data / "real/1900_group.jpg",
                                     data / "real/portrait.png"]
    assert real_old_photo(data) == data / "real/solvay_1927.png"
    assert {manifest["files"][f"real/{n}"]["kind"] for n in ("solvay_1927.png", "1900_group.jpg", "portrait.png")} \
        == {"real_old_photo"}
    all_split_ids = sum(json.loads((data / "splits.json").read_text()).values(), [])
    assert not any("real" in i or "portrait" in i for i in all_split_ids)
    # face photos: a split per photo by the hash of its path; "test" and "val" ones are never face training sources
    faces = manifest["face_photos"]
    assert len(faces) == 20 and all(f["split"] == face_split(f["path"]) for f in faces)
    test_faces = sorted(data / f["path"] for f in faces if f["split"] == "test")
    val_faces = sorted(data / f["path"] for f in faces if f["split"] == "val")
    assert 0 < len(test_faces) < 20 and held_out_face_photos(data) == test_faces
    assert held_out_face_photos(data, "val") == val_faces and len(test_faces) + len(val_faces) < 20
    names = {n for _, n, _ in face_source_photos(data)}
    train_faces = {f["path"] for f in faces if f["split"] == "train"}
    assert train_faces <= names
    assert not names & {p.relative_to(data).as_posix() for p in test_faces + val_faces}
    assert not any(n.startswith("real/") for n in names)
    # one person per folder (dlib's johns): a person's crops all land in one split, keyed by the folder
    assert {face_split(p) for p in ("John_Salley", "John_Salley")} == {face_split("John_Salley")}
    # second run: identical outputs
    m1 = (data / "manifest.json").read_bytes()
    r2 = fetch(data, _v2_plan(pkg), log=lambda m: None, package_paths={pkg.name: tree})
    assert r2.ok and r2.written == 0 and (data / "manifest.json").read_bytes() == m1


def test_domain_r_never_trains_on_the_review_set(tmp_path):
    from oldphoto.training.runner import TrainOptions, _data

    tree = tmp_path / "tree"
    _fake_tree(tree)
    _v2_tree(tree)
    pkg = DebPackage("oldphoto-fake", "1.0", "unused", 0, "test")
    data = tmp_path / "data"
    assert fetch(data, _v2_plan(pkg), log=lambda m: None, package_paths={pkg.name: tree}).ok
    source, note = _data(TrainOptions(data=data), log=lambda m: None, need_real=True)
    assert source.real is None and "synthetic" in note["real_old_photos"]
    for uri in (data / "real", data / "real" / "portrait.png", data):
        with pytest.raises(ValueError, match="review set"):
            _data(TrainOptions(data=data, real=str(uri)), log=lambda m: None, need_real=True)
