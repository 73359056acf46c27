"""The Ray Data pipeline on a real local Ray session, over moto S3, with D's stage classes and tiny random weights."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from oldphoto.distributed import DistributedConfig, ItemResult, StageSource, WeightsSource, run_pipeline, work_items
from oldphoto.distributed.config import PoolConfig
from oldphoto.provenance import ItemProvenance
from oldphoto.storage import open_storage
from services import CORRUPT_JPEG, CORRUPT_PNG, make_bucket, small_scans

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    from oldphoto.testing.random_weights import make_random_weights

    d = tmp_path_factory.mktemp("weights")
    make_random_weights(d, seed=3, tiny=True)
    return str(d)


@pytest.fixture(scope="module")
def source(weights) -> StageSource:
    from oldphoto.pipeline import RestoreOptions

    return StageSource(WeightsSource.parse(weights), RestoreOptions(scratch="auto"))


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data))).astype(int)


def test_config_and_rows_roundtrip(weights):
    cfg = DistributedConfig.gpu_cluster(actors_per_pool=3)
    back = DistributedConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.face.device == "cuda" and DistributedConfig().scratch.device == "cpu"
    assert WeightsSource.parse(weights) == WeightsSource("dir", weights)
    assert WeightsSource.parse("official:/x/y").kind == "official" and WeightsSource.parse(None).kind == "default"
    prov = ItemProvenance.from_dict({"input": {"uri": "s3://b/a.jpg", "name": "a"}, "status": "failed", "error": "e"})
    res = ItemResult("s3://b/a.jpg", "a", "failed", error="load: bad", provenance=prov, outputs={"x": "s3://o/a/x"})
    assert ItemResult.from_row(res.to_row()) == res
    # GPUs for the model pools where the cluster has them ("auto"), none where it has none or when "off"
    cpu = DistributedConfig()
    assert cpu.fitted({"CPU": 8.0}) == cpu and DistributedConfig(gpus="off").fitted({"GPU": 2.0}).face.num_gpus == 0
    one = cpu.fitted({"CPU": 8.0, "GPU": 1.0})
    assert [one.pool(p).num_gpus for p in ("scratch", "global", "face")] == [0.33] * 3 and one.face.device == "cuda"
    assert cpu.fitted({"GPU": 4.0}).global_.num_gpus == 1.0
    assert DistributedConfig(face=PoolConfig(num_gpus=0.5)).fitted({"GPU": 1.0}).face.num_gpus == 0.5


def test_s3_pipeline_matches_sequential_restorer(moto_s3, local_ray, source, weights):
    from oldphoto.models import ModelSet
    from oldphoto.pipeline import Restorer
    from ray.data import DataContext

    make_bucket(moto_s3, "scans")
    make_bucket(moto_s3, "restored")
    store = open_storage("s3://scans")
    scans = small_scans(6)
    scans["broken_01.jpg"] = CORRUPT_JPEG
    scans["broken_02.png"] = CORRUPT_PNG
    for name, data in scans.items():
        store.write_bytes(f"s3://scans/night/{name}", data)
    store.write_bytes("s3://scans/night/notes.txt", b"not an image")

    items = work_items("s3://scans/night/")
    assert [it.name for it in items] == sorted(n.rsplit(".", 1)[0] for n in scans)
    cfg = DistributedConfig(object_store_memory=64 * 2**20,
                            global_=PoolConfig(max_tasks_in_flight=1), scratch=PoolConfig(max_tasks_in_flight=1))
    seen: list[str] = []
    results = run_pipeline(items, "s3://restored/out", source, cfg, on_result=lambda r: seen.append(r.name))
    assert sorted(seen) == sorted(it.name for it in items) and len(results) == len(items)
    # the object-store budget is what Ray Data ran under
    assert DataContext.get_current().execution_options.resource_limits.object_store_memory == 64 * 2**20

    by = {r.name: r for r in results}
    for bad in ("broken_01", "broken_02"):
        r = by[bad]
        assert r.status == "failed" and r.error.startswith("load:"), r.error
        assert r.provenance.status == "failed" and r.provenance.input.sha256 == store.sha256(r.uri)
        # the failure's provenance.json is written too, and nothing else
        assert sorted(r.outputs) == ["provenance.json"]
        assert json.loads(store.read_bytes(r.outputs["provenance.json"]))["error"] == r.error

    restorer = Restorer(ModelSet.from_weights_dir(weights), source.restore_options())
    for name in (n.rsplit(".", 1)[0] for n in scans if n.startswith("scan_")):
        r = by[name]
        assert r.status == "done" and r.error is None
        base = f"s3://restored/out/{name}"
        assert {"restored.png", "mask.png", "review.png", "provenance.json"} <= set(r.outputs)
        assert all(u == f"{base}/{k}" and store.exists(u) for k, u in r.outputs.items())
        prov = ItemProvenance.from_json(store.read_bytes(f"{base}/provenance.json").decode())
        assert prov.status == "done" and prov.input.uri == r.uri and prov.input.name == name
        assert {a.uri for a in prov.outputs} <= set(r.outputs.values())
        assert [s.name for s in prov.stages][:3] == ["load", "scratch_detection", "global_restoration"]
        assert all(s.checkpoints for s in prov.stages if s.name == "global_restoration")
        # the same stage classes as the CLI: the same files, the same restored pixels
        seq = restorer.run(r.uri, store.read_bytes(r.uri), name=name)
        assert set(seq.files) == set(r.outputs)
        got, want = _pixels(store.read_bytes(r.outputs["restored.png"])), _pixels(seq.files["restored.png"])
        assert got.shape == want.shape and np.abs(got - want).max() <= 1
        assert (_pixels(store.read_bytes(r.outputs["mask.png"])) == _pixels(seq.files["mask.png"])).mean() > 0.99
    # the originals are untouched
    for name, data in scans.items():
        assert store.read_bytes(f"s3://scans/night/{name}") == data


def test_actor_crashes_lose_no_item(local_ray, weights, tmp_path):
    """A global-restoration actor dies (os._exit) once on one item and on every attempt of another:
    Ray restarts it, the first item and the items queued behind the crash finish, the poison item fails
    with the reason. Every input ends done or failed-with-reason."""
    src = tmp_path / "scans"
    src.mkdir()
    for name, data in small_scans(6, seed=1).items():
        (src / name).write_bytes(data)
    from oldphoto.pipeline import RestoreOptions

    source = StageSource(WeightsSource.parse(weights), RestoreOptions(faces=False))   # two pools: quicker
    assert source.pools() == ["scratch", "global"]
    marker = tmp_path / "crashed-once"
    cfg = DistributedConfig(fault_injection=f"exit-once:scan_02:{marker};exit-always:scan_04", fault_pool="global",
                            max_item_retries=1, global_=PoolConfig(max_tasks_in_flight=3))
    items = work_items(str(src))
    results = run_pipeline(items, str(tmp_path / "out"), source, cfg)
    assert marker.exists() and "scan_02" in marker.read_text()          # the crash did happen
    by = {r.name: r for r in results}
    assert sorted(by) == sorted(it.name for it in items) and len(results) == len(items)
    assert by["scan_04"].status == "failed" and "worker crashed" in by["scan_04"].error
    assert by["scan_04"].provenance.error == by["scan_04"].error
    for name in ("scan_00", "scan_01", "scan_02", "scan_03", "scan_05"):
        assert by[name].status == "done", (name, by[name].error)
        assert (tmp_path / "out" / name / "restored.png").is_file()
        assert (tmp_path / "out" / name / "provenance.json").is_file()
    assert not (tmp_path / "out" / "scan_04" / "restored.png").exists()
    # originals never modified
    assert sorted(p.name for p in src.iterdir()) == sorted(small_scans(6, seed=1))


def test_dataset_rows_are_plain_data_and_build_without_deprecations(local_ray, source, tmp_path):
    """The dataset is built without a Ray deprecation warning (the one for the retry keywords, which Ray 2.60
    has no other way to take, is silenced where they are passed: `_map_batches`), and its rows between the
    stages are plain columns: tensors and Arrow values, no Python objects."""
    import warnings

    from ray.data.extensions import ArrowPythonObjectType, ArrowVariableShapedTensorType
    from ray.util.annotations import RayDeprecationWarning

    from oldphoto.distributed.pipeline import _fetch_decode, build_dataset
    from oldphoto.distributed.rows import ROW_SCHEMA, TENSOR_COLUMNS

    (tmp_path / "in").mkdir()
    for name, data in small_scans(2, seed=4).items():
        (tmp_path / "in" / name).write_bytes(data)
    items = work_items(str(tmp_path / "in"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_dataset(items, str(tmp_path / "out"), source, DistributedConfig())
    assert not [w for w in caught if issubclass(w.category, RayDeprecationWarning) or "oldphoto" in w.filename], \
        [str(w.message) for w in caught]
    # what the fetch tasks hand to the first pool, as Ray stores it
    block = _fetch_decode({"uri": np.array([it.uri for it in items]), "name": np.array([it.name for it in items])},
                          source, str(tmp_path / "out"))
    types = dict(zip(block.schema.names, block.schema.types))
    assert all(isinstance(types[c], ArrowVariableShapedTensorType) for c in TENSOR_COLUMNS)
    assert all(types[f.name] == f.type for f in ROW_SCHEMA)
    assert not any(isinstance(t, ArrowPythonObjectType) for t in types.values())
    assert "state" not in types and block.num_rows == 2
