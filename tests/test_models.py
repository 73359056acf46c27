"""ModelSet: lazy per-role loading, checkpoints and fingerprints, missing-weights errors, random sets."""
from __future__ import annotations

import pickle
import shutil

import pytest
import torch

import oldphoto.weights
from oldphoto import models
from oldphoto.models import ROLE_NETWORK, ROLES, MissingWeightsError, ModelSet
from oldphoto.testing.random_weights import make_random_weights
from oldphoto.networks.registry import NETWORKS
from oldphoto.provenance import CheckpointRef
from oldphoto.weights import WeightsMismatchError, file_sha256


@pytest.fixture(scope="module")
def random_set(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    shas = make_random_weights(d, seed=0)
    return d, shas


@pytest.fixture(autouse=True)
def fresh_cache():
    models.clear_cache()
    yield
    models.clear_cache()


@pytest.mark.slow
def test_random_set_loads_fully_and_runs(random_set):
    d, shas = random_set
    assert sorted(shas) == sorted(ROLES)
    assert sorted(p.name for p in d.iterdir()) == sorted(f"{r}.safetensors" for r in ROLES)
    ms = ModelSet.from_weights_dir(d)
    assert ms.device == "cpu" and ms.missing() == []
    for role in ROLES:
        assert ms.has(role)
        net = ms.get(role)
        assert isinstance(net, NETWORKS[ROLE_NETWORK[role]][1]), role
        assert not net.training and not any(p.requires_grad for p in net.parameters()), role
        assert ms.checkpoint(role) == CheckpointRef(name=role, file=str(d / f"{role}.safetensors"), sha256=shas[role])
        assert shas[role] == file_sha256(d / f"{role}.safetensors")
    assert ms.config("face_256").load_size == 256 and ms.config("face_512").load_size == 512
    assert ms.get("face_512").cfg.load_size == 512
    # the tiny set is a consistent pipeline: encode -> map -> decode keeps the image shape
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    mask = torch.zeros(1, 1, 32, 48)
    mask[..., 10:12, :] = 1
    with torch.no_grad():
        z = ms.get("vae_a").encode(x)
        for mapping, vae_b in (("mapping_quality", "vae_b_quality"), ("mapping_scratch", "vae_b_scratch"),
                               ("mapping_hr", "vae_b_scratch")):
            y = ms.get(vae_b).decode(ms.get(mapping)(z, mask))
            assert y.shape == x.shape and torch.isfinite(y).all(), mapping
        assert ms.get("scratch_unet")(x[:, :1]).shape == (1, 1, 32, 48)


def test_random_weights_are_deterministic_per_seed(random_set, tmp_path):
    _, shas = random_set
    again = make_random_weights(tmp_path / "a", seed=0, roles=["vae_a", "mapping_hr"])
    assert again == {"vae_a": shas["vae_a"], "mapping_hr": shas["mapping_hr"]}
    other = make_random_weights(tmp_path / "b", seed=1, roles=["vae_a"])
    assert other["vae_a"] != shas["vae_a"]
    # roles of the same kind still get different weights
    assert len({shas["vae_a"], shas["vae_b_quality"], shas["vae_b_scratch"]}) == 3


def test_loading_is_lazy_and_once_per_process(random_set, monkeypatch):
    d, _ = random_set
    calls = []
    real = oldphoto.weights.load_weights

    def counting(path, *a, **kw):
        calls.append(path.name)
        return real(path, *a, **kw)

    monkeypatch.setattr(oldphoto.weights, "load_weights", counting)
    ms = ModelSet.from_weights_dir(d)
    assert ms.has("vae_a") and ms.checkpoint("vae_a").sha256 and ms.fingerprint()
    assert calls == []                                   # nothing loaded yet
    a = ms.get("vae_a")
    assert ms.get("vae_a") is a and calls == ["vae_a.safetensors"]
    other = ModelSet.from_weights_dir(d)                 # a second set naming the same file shares it
    assert other.get("vae_a") is a and calls == ["vae_a.safetensors"]
    ms.get("mapping_quality")
    assert calls == ["vae_a.safetensors", "mapping_quality.safetensors"]
    # pickling (Ray) ships the location only; the receiving process loads on demand
    clone = pickle.loads(pickle.dumps(ms))
    assert clone._models == {} and clone.root == ms.root
    models.clear_cache()
    assert clone.get("vae_a") is not a and len(calls) == 3


def test_fingerprint_is_stable_and_tracks_weights(random_set, tmp_path):
    d, _ = random_set
    ms = ModelSet.from_weights_dir(d)
    fp = ms.fingerprint(["vae_a", "mapping_quality", "vae_b_quality"])
    assert fp == ModelSet.from_weights_dir(d).fingerprint(["vae_b_quality", "mapping_quality", "vae_a"])
    assert fp != ms.fingerprint(["vae_a", "mapping_quality", "vae_b_scratch"])
    assert ms.fingerprint() == ms.fingerprint(ROLES)
    copy = tmp_path / "copy"
    shutil.copytree(d, copy)
    assert ModelSet.from_weights_dir(copy).fingerprint(["vae_a"]) == ms.fingerprint(["vae_a"])
    make_random_weights(copy, seed=7, roles=["vae_a"])
    assert ModelSet.from_weights_dir(copy).fingerprint(["vae_a"]) != ms.fingerprint(["vae_a"])


def test_missing_weights_error_names_roles_files_and_remedies(random_set, tmp_path):
    d, _ = random_set
    partial = tmp_path / "partial"
    partial.mkdir()
    for role in ("vae_a", "mapping_quality", "vae_b_quality"):
        shutil.copy(d / f"{role}.safetensors", partial)
    ms = ModelSet.from_weights_dir(partial)
    assert ms.missing(["vae_a", "mapping_quality"]) == []
    ms.require(["vae_a", "mapping_quality", "vae_b_quality"])
    with pytest.raises(MissingWeightsError) as e:
        ms.require()
    err = e.value
    msg = str(err)
    absent = [r for r in ROLES if r not in ("vae_a", "mapping_quality", "vae_b_quality")]
    assert err.roles == absent and err.folder == str(partial)
    assert isinstance(err, FileNotFoundError)
    for role in absent:
        assert f"{role}: {partial / (role + '.safetensors')}" in msg
    for role in ("vae_a", "mapping_quality", "vae_b_quality"):
        assert f"{role}:" not in msg
    assert str(partial) in msg
    assert "oldphoto train" in msg and "--official DIR" in msg and "--weights DIR" in msg
    with pytest.raises(MissingWeightsError, match="face_512"):
        ms.get("face_512")
    with pytest.raises(MissingWeightsError, match="scratch_unet"):
        ms.checkpoint("scratch_unet")
    with pytest.raises(KeyError, match="unknown model role"):
        ms.get("vae_c")


def test_missing_weights_error_from_role_list_and_official_source(tmp_path):
    err = MissingWeightsError(["face_512", "mapping_hr"])
    assert "face_512" in str(err) and "mapping_hr" in str(err) and "--official" in str(err)
    official = ModelSet.from_official(tmp_path)
    assert not official.has("scratch_unet")
    with pytest.raises(MissingWeightsError) as e:
        official.get("scratch_unet")
    msg = str(e.value)
    assert "official release" in msg
    assert str(tmp_path / "Global/checkpoints/detection/FT_Epoch_latest.pt") in msg


def test_role_file_holding_the_wrong_network_is_refused(random_set, tmp_path):
    d, _ = random_set
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    shutil.copy(d / "mapping_quality.safetensors", wrong / "vae_a.safetensors")
    with pytest.raises(WeightsMismatchError, match="'mapping' network, expected 'vae'"):
        ModelSet.from_weights_dir(wrong).get("vae_a")


# ------------------------------------------------------------------------------------------- WeightsSource
def test_weights_source_parses_describes_and_loads_through_the_one_cache(random_set, official_dir, monkeypatch):
    from oldphoto.pipeline import RestoreOptions, build_stages_from_source
    from oldphoto.weights_source import WEIGHTS_ENV, WeightsSource

    d, _ = random_set
    src = WeightsSource.parse(str(d))
    assert src == WeightsSource("dir", str(d)) == WeightsSource.parse(f"dir:{d}") == WeightsSource.parse(src.spec())
    assert WeightsSource.parse(None) == WeightsSource.parse("default") == WeightsSource.from_options()
    off = WeightsSource.parse(f"official:{official_dir}")
    assert off.kind == "official" and WeightsSource.parse(off.spec()) == off
    assert WeightsSource.from_options(official=official_dir) == off
    assert pickle.loads(pickle.dumps(src)) == src and len({src, WeightsSource.parse(str(d))}) == 1
    assert str(d) in src.describe() and "official" in off.describe()
    with pytest.raises(ValueError, match="not both"):
        WeightsSource.from_options(d, official_dir)
    monkeypatch.setenv(WEIGHTS_ENV, str(d))
    assert WeightsSource.from_env() == src and WeightsSource.from_env("default").kind == "default"
    ms = src.load("cpu")
    assert ms.root == d and ms.source == "weights" and off.load().source == "official"
    assert WeightsSource.parse("default").load().missing() == []          # the package ships every role
    # stages built from the source load lazily, and share each network with every other ModelSet of its files
    stage = build_stages_from_source(src, RestoreOptions(scratch="on", faces=False))[1]
    stage = pickle.loads(pickle.dumps(stage))
    assert stage.models.get("scratch_unet") is ms.get("scratch_unet")
