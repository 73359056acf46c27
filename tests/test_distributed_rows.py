"""The Ray pipeline's rows (oldphoto.distributed.rows): an ItemState as plain columns and back, through the
Arrow block and the numpy batch Ray Data makes of it (no Ray session needed)."""
from __future__ import annotations

import numpy as np
import pytest
from ray.data.block import BlockAccessor
from ray.data.extensions import ArrowPythonObjectType
from skimage.transform import SimilarityTransform

from oldphoto.distributed.rows import TENSOR_COLUMNS, batch_states, states_to_table, state_from_row, state_to_row
from oldphoto.imageops.faces import DetectedFace
from oldphoto.imageops.io import DecodedImage
from oldphoto.models import ModelSet
from oldphoto.pipeline import ItemState, RestoreOptions, build_stages
from oldphoto.stages.base import FaceResult, run_stage
from oldphoto.testing.random_weights import make_random_weights
from services import CORRUPT_JPEG, small_scans


def _through_ray_block(states: list[ItemState]) -> list[ItemState]:
    """states -> the block a map_batches function returns -> the numpy batch Ray hands the next one -> states."""
    table = states_to_table(states)
    assert not any(isinstance(t, ArrowPythonObjectType) for t in table.schema.types)   # no pickled objects
    return batch_states(BlockAccessor.for_block(table).to_batch_format("numpy"))


def _assert_same(a: ItemState, b: ItemState) -> None:
    assert (a.uri, a.name, a.out_dir, a.error, a.use_scratch, a.face_size) == \
           (b.uri, b.name, b.out_dir, b.error, b.use_scratch, b.face_size)
    assert a.provenance.to_json() == b.provenance.to_json()
    assert a.files == b.files
    for x, y in ((a.mask, b.mask), (a.suspect, b.suspect), (a.restored, b.restored)):
        assert (x is None) == (y is None)
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y) and y.flags.writeable
    assert (a.decoded is None) == (b.decoded is None)
    if a.decoded is not None:
        da, db = a.decoded, b.decoded
        assert da.pixels.dtype == db.pixels.dtype and np.array_equal(da.pixels, db.pixels)
        for f in ("grey", "bit_depth", "format", "mode", "icc_profile", "exif", "orientation", "tiff_tags", "dpi",
                  "warnings"):
            assert getattr(da, f) == getattr(db, f), f
    assert (a.scan_faces is None) == (b.scan_faces is None)
    for fa, fb in zip(a.scan_faces or [], b.scan_faces or [], strict=True):
        assert fa.box == fb.box and fa.score == fb.score
        assert np.array_equal(fa.landmarks68, fb.landmarks68) and np.array_equal(fa.points5, fb.points5)
    for fa, fb in zip(a.faces, b.faces, strict=True):
        assert (fa.index, fa.box, fa.score, fa.detected_on) == (fb.index, fb.box, fb.score, fb.detected_on)
        assert np.array_equal(fa.points5, fb.points5) and np.array_equal(fa.tform.params, fb.tform.params)
        assert fa.aligned.dtype == fb.aligned.dtype and np.array_equal(fa.aligned, fb.aligned)
        assert (fa.enhanced is None) == (fb.enhanced is None)
        if fa.enhanced is not None:
            assert np.array_equal(fa.enhanced, fb.enhanced)


def test_every_field_round_trips():
    rng = np.random.default_rng(0)
    opts = RestoreOptions()
    st = ItemState.new("s3://b/x.tif", b"bytes", opts, name="x", out_dir="/out/x", run_id="r1")
    st.decoded = DecodedImage(pixels=rng.random((7, 5, 3), dtype=np.float32), grey=True, bit_depth=16,
                              format="TIFF", mode="I;16", icc_profile=b"\x00icc", exif=None, orientation=6,
                              tiff_tags={270: "a description", 305: "scanner"}, dpi=(300.0, 299.5),
                              warnings=["ICC profile dropped"])
    st.mask = rng.random((7, 5)) > 0.5
    st.suspect = rng.random((7, 5)) > 0.3
    st.use_scratch = True
    st.restored = rng.random((7, 5, 3), dtype=np.float32)
    st.scan_faces = [DetectedFace(box=(1, 2, 30, 40), landmarks68=rng.random((68, 2)) * 40, score=0.75,
                                  points5=rng.random((5, 2)))]
    st.face_size = 8
    tform = SimilarityTransform(scale=1.5, rotation=0.1, translation=(3.0, 4.0))
    st.faces = [FaceResult(index=1, box=(1, 2, 30, 40), points5=rng.random((5, 2)), score=None, tform=tform,
                           aligned=rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), detected_on="input",
                           enhanced=rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)),
                FaceResult(index=2, box=(5, 5, 9, 9), points5=rng.random((5, 2)), score=1.25, tform=tform,
                           aligned=rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))]
    st.files = {"restored.png": b"\x89PNG...", "faces/1_after.png": b""}
    st.provenance.parameters["face_strength_used"] = 0.5         # the stages add keys: an open record
    bare = ItemState.new("b.png", None, opts, name="b")
    bare.fail("load", "could not read it")
    bare.scan_faces = []                                          # searched, none found: not None
    for a, b in zip([st, bare], _through_ray_block([st, bare]), strict=True):
        _assert_same(a, b)
    assert _through_ray_block([st])[0].data is None               # the input bytes stay in the fetch task
    # a row as plain values round-trips too (what iter_rows and the tests see)
    _assert_same(st, state_from_row(state_to_row(st)))
    assert set(TENSOR_COLUMNS) <= set(states_to_table([st]).column_names)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    make_random_weights(d, seed=3, tiny=True)
    return ModelSet.from_weights_dir(d)


def test_stages_through_rows_equal_the_sequential_restorer(models):
    """Each stage's output through a block and a batch, as between Ray's pools, gives `oldphoto restore`'s
    states: same records, same pixels, same files."""
    opts = RestoreOptions(scratch="auto")
    stages = build_stages(models, opts)
    scans = dict(small_scans(3, seed=2))
    scans["broken.jpg"] = CORRUPT_JPEG
    seq = [ItemState.new(n, d, opts, name=n.rsplit(".", 1)[0], out_dir=f"/o/{n}") for n, d in scans.items()]
    ray_ = [ItemState.new(n, d, opts, name=n.rsplit(".", 1)[0], out_dir=f"/o/{n}") for n, d in scans.items()]
    for stage in stages:
        seq = [run_stage(stage, s) for s in seq]
        ray_ = _through_ray_block([run_stage(stage, s) for s in ray_])
        for a, b in zip(seq, ray_, strict=True):
            assert [r.name for r in a.provenance.stages] == [r.name for r in b.provenance.stages]
            assert a.error == b.error and a.use_scratch == b.use_scratch
            for x, y in ((a.mask, b.mask), (a.suspect, b.suspect), (a.restored, b.restored)):
                assert (x is None) == (y is None) and (x is None or np.array_equal(x, y))
    assert [s.failed for s in ray_] == [False, False, False, True]
    for a, b in zip(seq, ray_, strict=True):
        assert set(a.files) == set(b.files)
        if not a.failed:
            assert a.files["restored.png"] == b.files["restored.png"] and a.files["mask.png"] == b.files["mask.png"]
