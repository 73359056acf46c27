"""The whole restoration pipeline and `oldphoto restore`, with tiny random weights (real networks, random values).

With random weights the restored pixels and the detector's mask are arbitrary, so these tests check what the
pipeline guarantees: files, sizes, modes, bit depths, face detection/alignment/blending plumbing, provenance and
checksums. The scratch on/off/auto semantics are checked with a detector stub that marks the drawn scratches
(`DrawnScratchDetector`), used only for that plumbing.
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms
from skimage import data as skdata
from typer.testing import CliRunner

from oldphoto import __version__
from oldphoto.cli import app
from oldphoto.models import ModelSet
from oldphoto.testing.random_weights import make_random_weights
from oldphoto.pipeline import (ItemState, Restorer, RestoreOptions, WeightsSource, build_stages,
                               build_stages_from_source, check_models)
from oldphoto.stages.base import AUTO_SCRATCH_MIN_COVERAGE, FACE_MIN_AGREEMENT_DB
from oldphoto.provenance import ItemProvenance

pytestmark = pytest.mark.timeout(600)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny_weights")
    make_random_weights(d, seed=0, tiny=True)
    return d


@pytest.fixture(scope="session")
def models(weights_dir) -> ModelSet:
    return ModelSet.from_weights_dir(weights_dir)


def astronaut(size: int = 320) -> np.ndarray:
    return np.asarray(Image.fromarray(skdata.astronaut()).resize((size, size), Image.BICUBIC))


def grace_hopper() -> np.ndarray:
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB").resize((256, 300), Image.BICUBIC))


def draw_scratches(img: np.ndarray, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Near-white lines (old-photo scratches) over an image whose own pixels are kept below 0.8."""
    import cv2

    rng = np.random.default_rng(seed)
    out = (img.astype(np.float32) * 0.8).astype(np.uint8)
    mask = np.zeros(img.shape[:2], np.uint8)
    h, w = mask.shape
    for _ in range(4):
        p0 = (int(rng.integers(0, w)), 0)
        p1 = (int(rng.integers(0, w)), h - 1)
        cv2.line(mask, p0, p1, 1, thickness=2)
    out[mask.astype(bool)] = 250
    return out, mask.astype(bool)


def jpeg(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=92, **kw)
    return buf.getvalue()


class DrawnScratchDetector(torch.nn.Module):
    """Plumbing stub for the scratch U-Net: logits > 0 where the grey input is near white (the drawn lines)."""

    def forward(self, grey: torch.Tensor) -> torch.Tensor:
        return (grey - 0.8) * 40.0


class StubDetectorModels(ModelSet):
    def get(self, role):
        return DrawnScratchDetector() if role == "scratch_unet" else super().get(role)


# ------------------------------------------------------------------------------------------- CLI end to end
@pytest.mark.slow
def test_restore_command_end_to_end(tmp_path, weights_dir, models):
    src = tmp_path / "in put"
    (src / "ältere Fotos").mkdir(parents=True)
    scratched, _ = draw_scratches(astronaut())
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    (src / "astronaut.jpg").write_bytes(jpeg(scratched, icc_profile=icc))
    grey16 = (np.asarray(Image.fromarray(grace_hopper()).convert("L"), dtype=np.uint16) * 257)[:150, :200]
    Image.fromarray(grey16).save(src / "ältere Fotos" / "grace hopper.tif")
    Image.fromarray(grace_hopper()[::3, ::3]).save(src / "ältere Fotos" / "astronaut.png")  # same stem, elsewhere
    before = {p: sha(p) for p in src.rglob("*") if p.is_file()}
    out = tmp_path / "out"

    result = CliRunner().invoke(app, ["restore", str(src), "--out", str(out), "--weights", str(weights_dir),
                                      "--scratch", "on"])
    assert result.exit_code == 0, result.output
    assert "3 of 3 restored" in " ".join(result.output.split())
    assert {p: sha(p) for p in src.rglob("*") if p.is_file()} == before           # inputs untouched

    # outputs mirror the source tree: the two astronauts (same stem, other folders) are both kept
    folders = sorted(p.parent.relative_to(out).as_posix() for p in out.rglob("provenance.json"))
    assert folders == ["astronaut", "ältere Fotos/astronaut", "ältere Fotos/grace hopper"]

    # the scanned astronaut: every file, right sizes, ICC kept, faces found and enhanced
    jpg_dir = out / "astronaut"
    prov = ItemProvenance.from_json((jpg_dir / "provenance.json").read_text())
    restored = Image.open(jpg_dir / "restored.png")
    assert restored.size == (320, 320) and restored.mode == "RGB"
    assert restored.info.get("icc_profile") == icc
    mask = Image.open(jpg_dir / "mask.png")
    assert mask.size == (320, 320) and set(np.unique(np.asarray(mask))) <= {0, 255}
    assert prov.mask_coverage == pytest.approx(float((np.asarray(mask) > 0).mean()), abs=1e-6)
    assert len(prov.faces) >= 1                                                   # dlib finds her face
    face = prov.faces[0]
    l, t, r, b = face.box
    assert 60 < l < r < 260 and 0 <= t < b < 220 and len(face.landmarks) == 5
    for k in range(1, len(prov.faces) + 1):
        for when in ("before", "after"):
            f = Image.open(jpg_dir / "faces" / f"face_{k:02d}_{when}.png")
            assert f.size == (256, 256)
    review = Image.open(jpg_dir / "review.png")
    assert review.width > 2.5 * review.height * 0.8                               # three panels side by side

    # provenance: input, outputs with checksums, checkpoints, parameters, version, stage timings
    assert prov.status == "done" and prov.error is None and prov.oldphoto_version == __version__
    assert prov.input.sha256 == before[src / "astronaut.jpg"]
    assert (prov.input.width, prov.input.height, prov.input.format) == (320, 320, "JPEG")
    assert prov.parameters["scratch"] == "on" and prov.parameters["hr"] is False
    assert prov.parameters["global_path"] == "scratch"
    for o in prov.outputs:
        assert Path(o.uri).is_file() and sha(Path(o.uri)) == o.sha256, o.uri
    kinds = [o.kind for o in prov.outputs]
    assert kinds.count("restored") == 1 and "mask" in kinds and "review" in kinds and "face_after" in kinds
    names = {c.name: c.sha256 for c in prov.checkpoints()}
    for role in ("scratch_unet", "vae_a", "mapping_scratch", "vae_b_scratch", "face_256"):
        assert names[models.checkpoint(role).name] == models.checkpoint(role).sha256 == sha(models.path(role))
    assert "dlib_shape_predictor_68" in names
    stages = {s.name: s for s in prov.stages}
    assert set(stages) == {"load", "scratch_detection", "global_restoration", "face_detection",
                           "face_enhancement", "blending", "write"}
    assert all(s.status == "done" and s.seconds >= 0 for s in stages.values())
    assert stages["global_restoration"].seconds > 0

    # 16-bit grey TIFF stays a 16-bit grey TIFF of the same size
    tif = out / "ältere Fotos" / "grace hopper" / "restored.tif"
    back = Image.open(tif)
    assert back.size == (200, 150) and back.mode.startswith("I;16")
    assert np.asarray(back).max() > 255                                            # really uses 16 bits

    # the catalog has the run and its items
    from oldphoto.catalog import Catalog

    cat = Catalog(f"sqlite:///{out / 'catalog.sqlite'}")
    assert len(cat.items()) == 3


def test_restore_without_weights_says_what_is_missing(tmp_path):
    img = tmp_path / "a.png"
    Image.fromarray(astronaut(64)).save(img)
    empty = tmp_path / "no_weights"
    empty.mkdir()
    result = CliRunner().invoke(app, ["restore", str(img), "--out", str(tmp_path / "o"), "--weights", str(empty)])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    for role in ("vae_a", "mapping_quality", "scratch_unet", "face_256"):
        assert role in text
    assert "How to get them" in text
    assert not (tmp_path / "o" / "a").exists()


# ------------------------------------------------------------------------------------------- scratch semantics
def _restorer(weights_dir, **kw) -> Restorer:
    return Restorer(StubDetectorModels.from_weights_dir(weights_dir), RestoreOptions(faces=False, **kw))


@pytest.mark.parametrize("mode", ["off", "on", "auto"])
@pytest.mark.slow
def test_scratch_modes_with_controllable_detector(weights_dir, mode):
    img = np.asarray(Image.fromarray(skdata.astronaut()).resize((320, 256), Image.BICUBIC))  # = working size
    scratched, drawn = draw_scratches(img)
    clean = (img.astype(np.float32) * 0.8).astype(np.uint8)
    r = _restorer(weights_dir, scratch=mode)
    st = r.run("scratched.png", _png(scratched))
    assert not st.failed, st.error
    stages = {s.name: s.status for s in st.provenance.stages}
    if mode == "off":
        assert st.mask is None and "mask.png" not in st.files and stages["scratch_detection"] == "skipped"
        assert st.provenance.parameters["global_path"] == "quality"
        return
    assert stages["scratch_detection"] == "done"
    assert st.mask.shape == drawn.shape
    iou = (st.mask & drawn).sum() / (st.mask | drawn).sum()
    assert iou > 0.9
    assert st.provenance.mask_coverage == pytest.approx(st.mask.mean(), abs=1e-6)
    assert st.provenance.parameters["global_path"] == "scratch"
    ckpts = {c.name for s in st.provenance.stages if s.name == "global_restoration" for c in s.checkpoints}
    assert any("mapping_scratch" in c for c in ckpts) and not any("mapping_quality" in c for c in ckpts)
    if mode == "auto":                                                        # a clean photo: quality path
        st2 = r.run("clean.png", _png(clean))
        assert st2.provenance.mask_coverage < AUTO_SCRATCH_MIN_COVERAGE        # no operating point in random weights
        assert st2.provenance.parameters["auto_scratch_min_coverage_used"] == AUTO_SCRATCH_MIN_COVERAGE
        assert "mask.png" in st2.files and st2.provenance.parameters["global_path"] == "quality"


@pytest.mark.slow
def test_hr_scratch_uses_patch_attention_and_512_face_size(weights_dir):
    scratched, _ = draw_scratches(np.asarray(Image.fromarray(astronaut(256)).resize((256, 256))))
    r = Restorer(StubDetectorModels.from_weights_dir(weights_dir), RestoreOptions(scratch="on", hr=True))
    st = r.run("hr.jpg", jpeg(scratched))
    assert not st.failed, st.error
    assert st.provenance.parameters["global_path"] == "scratch_hr"
    ckpts = {c.name for c in st.provenance.checkpoints()}
    assert any("mapping_hr" in c for c in ckpts)
    assert st.restored.shape == (256, 256, 3)
    assert st.face_size == 512                          # faces would be aligned to the 512 template
    from oldphoto.stages.restore_global import dilate_mask, hole_fill

    dot = np.zeros((20, 20), bool)
    dot[10, 10] = True
    assert dilate_mask(dot).sum() == 49 and dilate_mask(dot)[7:14, 7:14].all()      # 3 × 3×3 = one 7×7
    filled = hole_fill(np.zeros((20, 20, 3), np.float32), dot)
    assert filled[10, 10].tolist() == [1.0, 1.0, 1.0] and filled.sum() == 3.0


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- API
def test_stages_are_picklable_and_batch_faces(weights_dir, models):
    opts = RestoreOptions(scratch="off")
    stages = build_stages(models, opts)
    again = pickle.loads(pickle.dumps(stages))
    from_source = pickle.loads(pickle.dumps(build_stages_from_source(WeightsSource.parse(weights_dir), opts)))
    check_models(models, opts)
    items = [("astro.jpg", jpeg(astronaut())), ("grace.jpg", jpeg(grace_hopper()))]
    states = [ItemState.new(u, d, opts) for u, d in items]
    for stage in from_source:                          # the Ray way: each stage over a batch
        states = stage.batch(states)
    assert all(not s.failed for s in states), [s.error for s in states]
    assert [len(s.faces) >= 1 for s in states] == [True, True]
    assert all("restored.png" in s.files and "provenance.json" in s.files for s in states)
    assert len(again) == 5 and again[2].models is not None


def test_exif_rotated_scan_comes_out_upright(models):
    img = astronaut(128)[:, :96]                                   # 128 high, 96 wide as seen by the viewer
    stored = np.rot90(img, k=1)                                    # stored sideways, EXIF 6 turns it back
    im = Image.fromarray(np.ascontiguousarray(stored))
    exif = im.getexif()
    exif[0x0112] = 6
    st = Restorer(models, RestoreOptions(scratch="off", faces=False)).run("rot.jpg", jpeg(np.asarray(im),
                                                                                       exif=exif.tobytes()))
    assert not st.failed, st.error
    out = Image.open(io.BytesIO(st.files["restored.png"]))
    assert out.size == (96, 128)
    assert out.getexif().get(0x0112, 1) == 1
    assert st.provenance.input.width == 96 and st.provenance.input.height == 128


def test_global_stage_batches_same_size_items_like_single_ones(models):
    from oldphoto.stages import DecodeStage, GlobalRestorationStage

    opts = RestoreOptions(scratch="off", faces=False)
    imgs = [astronaut(64), grace_hopper()[:64, :64], astronaut(64)[::-1].copy()]
    decode, stage = DecodeStage(models, opts), GlobalRestorationStage(models, opts)
    batched = stage.batch([decode(ItemState.new(f"{i}.png", _png(a), opts)) for i, a in enumerate(imgs)])
    for i, a in enumerate(imgs):
        single = stage(decode(ItemState.new(f"{i}.png", _png(a), opts)))
        assert not batched[i].failed and batched[i].restored.shape == (64, 64, 3)
        assert np.abs(batched[i].restored - single.restored).max() < 1e-4
        assert [r.name for r in batched[i].provenance.stages] == ["load", "global_restoration"]


def test_tone_match_option_is_recorded_and_keeps_the_scan_tonality(models):
    from oldphoto.quality import psnr

    img = astronaut(96)
    outs = {}
    for tone in (True, False):
        st = Restorer(models, RestoreOptions(scratch="off", faces=False, review=False, tone_match=tone)).run(
            "astro.png", _png(img))
        assert not st.failed, st.error
        assert st.provenance.parameters["tone_match"] is tone
        assert ("tone_transfer" in st.provenance.parameters) is tone
        outs[tone] = st.restored
    scan = img.astype(np.float32) / 255.0
    assert outs[True].shape == outs[False].shape == scan.shape
    assert np.abs(outs[True] - outs[False]).mean() > 1e-3
    # random tiny networks: the raw output is arbitrary, the tone-matched one follows the scan
    assert psnr(scan, outs[True]) > psnr(scan, outs[False]) + 3


def test_review_sheet_of_a_grey_scan_shows_the_grey_result(models, tmp_path):
    grey = Image.fromarray(astronaut(96)).convert("L")
    buf = io.BytesIO()
    grey.save(buf, format="PNG")
    # tone transfer off: it would carry the scan's greyness onto the network output by itself
    state = Restorer(models, RestoreOptions(scratch="off", faces=False, tone_match=False)).run("grey.png",
                                                                                              buf.getvalue())
    assert not state.failed, state.error
    restored = Image.open(io.BytesIO(state.files["restored.png"]))
    assert restored.mode == "L"
    sheet = np.asarray(Image.open(io.BytesIO(state.files["review.png"])).convert("RGB")).astype(int)
    # input | restored, both grey: no pixel of the sheet has colour (the tiny random networks output colour)
    assert np.abs(sheet[..., 0] - sheet[..., 1]).max() <= 1 and np.abs(sheet[..., 1] - sheet[..., 2]).max() <= 1
    colour = Restorer(models, RestoreOptions(scratch="off", faces=False, colour=True, tone_match=False)).run(
        "grey.png", buf.getvalue())
    sheet_c = np.asarray(Image.open(io.BytesIO(colour.files["review.png"])).convert("RGB")).astype(int)
    assert np.abs(sheet_c[..., 0] - sheet_c[..., 2]).max() > 1      # with --colour the sheet shows colour


# ------------------------------------------------------------------------------------------- faces: do no harm
class IdentityFace(torch.nn.Module):
    """A face 'enhancer' that returns its input: it always agrees with the scan."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class GreenFace(torch.nn.Module):
    """A face 'enhancer' that paints a green blotch over the left half of the face (a harmful network)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        s = x.shape[-1]
        y[:, 0, :, : s // 2] = -1.0
        y[:, 1, :, : s // 2] = 1.0
        y[:, 2, :, : s // 2] = -1.0
        return y


def _face_models(weights_dir, net):
    class FaceModels(ModelSet):
        def get(self, role):
            return net if role.startswith("face_") else super().get(role)
    return FaceModels.from_weights_dir(weights_dir)


@pytest.mark.parametrize("net, applied", [(IdentityFace(), True), (GreenFace(), False)])
@pytest.mark.slow
def test_enhanced_face_replaces_the_original_only_when_it_agrees(weights_dir, net, applied):
    r = Restorer(_face_models(weights_dir, net), RestoreOptions(scratch="off"))
    st = r.run("grace.jpg", jpeg(grace_hopper()))
    assert not st.failed, st.error
    assert st.provenance.faces, "dlib finds her face"
    f = st.provenance.faces[0]
    assert f.applied is applied and f.agreement_db is not None and f.detected_on in ("restored", "input")
    assert ("kept the original" in f.reason) is (not applied)
    assert (f.agreement_db >= FACE_MIN_AGREEMENT_DB) is applied
    # a rejected face leaves the stage-1 output untouched; an applied one changes it
    r_off = Restorer(_face_models(weights_dir, net), RestoreOptions(scratch="off", faces=False))
    base = r_off.run("grace.jpg", jpeg(grace_hopper())).restored
    changed = bool(np.abs(st.restored - base).max() > 1e-3)
    assert changed is applied
    saved = json.loads(st.files["provenance.json"])
    assert saved["faces"][0]["applied"] is applied and saved["faces"][0]["reason"] == f.reason


def test_face_strength_zero_keeps_the_face_and_is_validated(weights_dir):
    r = Restorer(_face_models(weights_dir, IdentityFace()),
                 RestoreOptions(scratch="off", face_strength=0.0))
    st = r.run("grace.jpg", jpeg(grace_hopper()))
    assert st.provenance.faces and st.provenance.faces[0].applied is False
    with pytest.raises(ValueError, match="face_strength: Input should be less than or equal to 1"):
        RestoreOptions(face_strength=1.5)


def test_detector_operating_point_comes_from_the_weights_file(tmp_path, weights_dir):
    import shutil

    from oldphoto.weights import read_info, set_operating_point

    w = tmp_path / "w"
    shutil.copytree(weights_dir, w)
    before = read_info(w / "scratch_unet.safetensors")
    set_operating_point(w / "scratch_unet.safetensors", {"threshold": 0.9, "auto_threshold": 0.95,
                                                         "auto_min_coverage": 0.5})
    after = read_info(w / "scratch_unet.safetensors")
    assert after.payload_sha256 == before.payload_sha256 and after.dtype == before.dtype   # same tensors
    img = np.asarray(Image.fromarray(skdata.astronaut()).resize((320, 256), Image.BICUBIC))
    scratched, _ = draw_scratches(img)
    st = _restorer(w, scratch="auto").run("s.png", _png(scratched))
    p = st.provenance.parameters
    assert p["scratch_threshold_used"] == 0.9 and p["auto_scratch_min_coverage_used"] == 0.5
    assert p["auto_scratch_threshold_used"] == 0.95   # the auto decision counts pixels at its own threshold
    assert p["global_path"] == "quality"              # 4 drawn lines cover far less than half the photo
    st = _restorer(w, scratch="auto", auto_scratch_min_coverage=0.001).run("s.png", _png(scratched))  # override
    assert st.provenance.parameters["global_path"] == "scratch"
    st = _restorer(w, scratch="auto", scratch_threshold=0.3).run("s.png", _png(scratched))  # a threshold given:
    assert st.provenance.parameters["auto_scratch_threshold_used"] == 0.3                    # the decision's too
    set_operating_point(w / "scratch_unet.safetensors", {"threshold": 0.9, "auto_threshold": 0.95,
                                                         "auto_min_coverage": 0.5,
                                                         "unmirrored": {"threshold": 0.8, "auto_threshold": 0.85}})
    for mirror, used in ((True, (0.9, 0.95, 0.5)), (False, (0.8, 0.85, 0.5))):   # the one-pass map's own point
        p = _restorer(w, scratch="auto", detector_mirror=mirror).run("s.png", _png(scratched)).provenance.parameters
        assert p["detector_mirrored"] is mirror
        assert (p["scratch_threshold_used"], p["auto_scratch_threshold_used"],
                p["auto_scratch_min_coverage_used"]) == used



def test_two_scale_detection_finds_a_line_too_thin_for_the_working_size():
    """A 1 px bright line on a 1024 px scan falls between the samples of the official shrink to 256 px (bilinear, no
    antialias), so a detector sees nothing there; the second scale (512 px) sees it, and the combined map marks
    it at half strength, nothing beside it. A scan at the working size is detected at one scale, unchanged."""
    from oldphoto.stages.scratch import scratch_probability

    def net(x: torch.Tensor) -> torch.Tensor:           # a "detector" that calls bright pixels scratches
        return 30.0 * x

    img = np.full((1024, 1024, 3), 0.2, np.float32)
    img[:, 515] = 1.0                                   # column 4*128+3: not sampled by the 4x shrink
    one, rounded, sizes_one = scratch_probability(net, img, scales=1)
    two, _, sizes_two = scratch_probability(net, img, scales=2)
    assert rounded == (1024, 1024) and one.shape == two.shape == (256, 256)
    assert sizes_one == [(256, 256)] and sizes_two == [(256, 256), (512, 512)]     # what provenance records
    assert one.max() < 0.01
    assert two[:, 128].min() > 0.45 and np.delete(two, 128, axis=1).max() < 0.01
    small = np.full((256, 256, 3), 0.2, np.float32)
    small[:, 100] = 1.0
    once = scratch_probability(net, small, scales=2)
    assert once.sizes == [(256, 256)]
    assert np.array_equal(once.prob, scratch_probability(net, small, scales=1).prob)


def test_mirrored_pass_keeps_lines_and_drops_one_sided_answers():
    """`mirror`: the detector also sees the scan mirrored three ways and the logits are averaged. A "detector" that
    answers to a pixel brighter than its left neighbour with no bright pixel two to its left marks a thin bright
    line in every orientation (kept) but a dark-to-bright edge only when it is not mirrored left-right (dropped)."""
    import torch.nn.functional as F

    from oldphoto.stages.scratch import scratch_probability

    def net(x: torch.Tensor) -> torch.Tensor:
        p = F.pad(x, (2, 0, 0, 0), mode="replicate")
        left, left2 = p[..., 1:-1], p[..., :-2]
        return 30.0 * (x - left) - 40.0 * (left2 + 1.0) + 10.0

    img = np.full((256, 256, 3), 0.2, np.float32)
    img[:, 60] = 1.0                                    # a thin bright line
    img[:, 180:] = 1.0                                  # a dark-to-bright edge at column 180
    one = scratch_probability(net, img, scales=1)
    both = scratch_probability(net, img, scales=1, mirror=True)
    assert one.prob[:, 60].min() > 0.99 and one.prob[:, 180].min() > 0.99        # one pass: line and edge
    assert both.prob[:, 60].min() > 0.99 and both.prob[:, 180].max() < 0.1     # mirrored: the line only
    assert np.delete(both.prob, 60, axis=1).max() < 0.1


def test_blob_guard_drops_large_mask_blobs_and_records_it(weights_dir):
    """A large bright area the (stub) detector marks as a defect beside drawn scratches: the blob guard takes it out
    of the mask (recorded in provenance) and keeps the scratches; --no-blob-guard keeps the detector's own mask."""
    import cv2

    img = np.asarray(Image.fromarray(skdata.astronaut()).resize((320, 256), Image.BICUBIC))
    scratched, drawn = draw_scratches(img)
    blob = np.zeros(drawn.shape, np.uint8)
    cv2.ellipse(blob, (250, 180), (40, 25), 0, 0, 360, 1, -1)
    scratched[blob.astype(bool)] = 250
    on = _restorer(weights_dir, scratch="on").run("s.png", _png(scratched))
    off = _restorer(weights_dir, scratch="on", blob_guard=False).run("s.png", _png(scratched))
    removed = on.provenance.parameters["blob_guard"]["mask_fraction_removed"]
    assert off.provenance.parameters["blob_guard"] is False              # the option, no record
    assert off.mask[blob.astype(bool)].mean() > 0.9 and on.mask[blob.astype(bool)].mean() < 0.1
    assert removed > 0.02 and not (on.mask & ~off.mask).any()          # the guard only ever takes pixels away
    lines = drawn & ~cv2.dilate(blob, np.ones((9, 9), np.uint8)).astype(bool)
    assert on.mask[lines].mean() > 0.9                                   # the scratches stay


@pytest.mark.slow
def test_face_operating_point_from_the_weights_can_keep_every_original(tmp_path, weights_dir):
    import shutil

    from oldphoto.weights import set_operating_point

    w = tmp_path / "w"
    shutil.copytree(weights_dir, w)
    set_operating_point(w / "face_256.safetensors", {"apply": False, "reason": "no gain on val"})
    st = Restorer(_face_models(w, IdentityFace()), RestoreOptions(scratch="off")).run("g.jpg", jpeg(grace_hopper()))
    assert st.provenance.faces and all(f.applied is False and "no gain on val" in f.reason
                                       for f in st.provenance.faces)
    # a user who asks for a threshold overrides it
    st = Restorer(_face_models(w, IdentityFace()), RestoreOptions(scratch="off", face_min_agreement=0.0)).run(
        "g.jpg", jpeg(grace_hopper()))
    assert st.provenance.faces[0].applied is True and st.provenance.parameters["face_min_agreement_used"] == 0.0
