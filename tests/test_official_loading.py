"""Official checkpoints load exactly: seeded stand-in weights reproduce the official goldens, the key
layout and parameter counts equal the manifests, and a release folder loads with clear errors."""
from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import torch

from oldphoto import models
from oldphoto.compat.official import (
    MANIFEST_NAMES,
    OFFICIAL_FILES,
    OFFICIAL_ROLES,
    OfficialCheckpointError,
    OfficialFileMissingError,
    find_official_file,
    load,
    load_release,
)
from oldphoto.testing.seeded import load_manifest, seeded_state_dict
from oldphoto.weights import payload_sha256

TOL = 1e-4

# weight seeds of the goldens (tests/data/official/README.md)
SEEDS = {
    "vae_a": 11, "vae_b": 12, "mapping_quality": 13, "mapping_scratch": 13, "mapping_Patch_Attention": 13,
    "scratch_unet": 14, "face_spade_256": 15, "face_spade_512": 16,
}


@pytest.fixture(scope="module", autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(min(n, 2))
    yield
    torch.set_num_threads(n)


def manifest(official_dir, name):
    return load_manifest(official_dir / "manifests" / f"{name}.json")


def seeded(official_dir, name, seed=None):
    return seeded_state_dict(manifest(official_dir, name), SEEDS[name] if seed is None else seed)


def golden(official_dir, name):
    with np.load(official_dir / "golden" / f"{name}.npz") as d:
        return {k: torch.from_numpy(d[k]) for k in d.files}


def assert_layout(module, man):
    """Same state-dict keys in the same order with the same shapes and dtypes, same parameter count."""
    got = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in module.state_dict().items()]
    assert got == [tuple(e) for e in man["state_dict"]]
    assert sum(p.numel() for p in module.parameters()) == man["num_parameters"]
    assert not module.training


def assert_close(got, want, what):
    assert got.shape == want.shape, what
    diff = (got - want).abs().max().item()
    assert diff <= TOL, f"{what}: max abs difference {diff:.3g} > {TOL}"


@pytest.fixture(scope="module")
def vaes(official_dir):
    return tuple(load(n, seeded(official_dir, n)) for n in ("vae_a", "vae_b"))


def test_manifest_names_cover_every_manifest(official_dir):
    assert sorted(MANIFEST_NAMES) == sorted(p.stem for p in (official_dir / "manifests").glob("*.json"))


def test_vae_layout(official_dir, vaes):
    for name, module in zip(("vae_a", "vae_b"), vaes):
        assert_layout(module, manifest(official_dir, name))
        ref = seeded(official_dir, name)
        assert all(torch.equal(v, ref[k]) for k, v in module.state_dict().items())


@pytest.mark.parametrize(
    "golden_name,mapping",
    [("stage1_quality", "mapping_quality"), ("stage1_scratch", "mapping_scratch"),
     ("stage1_hr", "mapping_Patch_Attention")],
)
@pytest.mark.slow
def test_stage1_goldens(official_dir, vaes, golden_name, mapping):
    vae_a, vae_b = vaes
    net = load(mapping, seeded(official_dir, mapping))
    assert_layout(net, manifest(official_dir, mapping))
    g = golden(official_dir, golden_name)
    with torch.no_grad():
        z = vae_a.encode(g["image"])
        zm = net(z, g["mask"])
        y = vae_b.decode(zm)
    assert_close(z, g["latent_a"], f"{golden_name} latent_a")
    assert_close(zm, g["latent_mapped"], f"{golden_name} latent_mapped")
    assert_close(y, g["output"], f"{golden_name} output")


def test_scratch_unet_golden(official_dir):
    net = load("scratch_unet", seeded(official_dir, "scratch_unet"))
    assert_layout(net, manifest(official_dir, "scratch_unet"))
    g = golden(official_dir, "scratch_unet")
    with torch.no_grad():
        assert_close(net(g["image"]), g["logits"], "scratch_unet logits")


@pytest.mark.parametrize("size", [256, 512])
@pytest.mark.slow
def test_face_goldens(official_dir, size):
    name = f"face_spade_{size}"
    net = load(name, seeded(official_dir, name))
    assert_layout(net, manifest(official_dir, name))
    assert net.cfg.load_size == size
    g = golden(official_dir, name)
    with torch.no_grad():
        assert_close(net(g["face"]), g["output"], f"{name} output")


def test_load_checks_keys_and_shapes(official_dir):
    sd = seeded(official_dir, "vae_a")
    # a uniform DataParallel prefix is accepted
    prefixed = load("vae_a", {f"module.{k}": v for k, v in sd.items()})
    assert torch.equal(prefixed.state_dict()["encoder.1.weight"], sd["encoder.1.weight"])

    bad = dict(sd)
    bad["encoder.extra.weight"] = torch.zeros(1)
    del bad["decoder.11.bias"]
    bad["encoder.4.weight"] = torch.zeros(64, 64, 3, 3)
    with pytest.raises(OfficialCheckpointError) as e:
        load("vae_a", bad, file="somewhere/latest_net_G.pth")
    msg = str(e.value)
    assert msg.startswith("somewhere/latest_net_G.pth: ")
    assert "missing key(s): decoder.11.bias" in msg
    assert "unexpected key(s): encoder.extra.weight" in msg
    assert "encoder.4.weight (network expects [64, 64, 4, 4], file has [64, 64, 3, 3])" in msg
    assert e.value.missing == ["decoder.11.bias"] and e.value.unexpected == ["encoder.extra.weight"]
    assert e.value.file == "somewhere/latest_net_G.pth"
    with pytest.raises(OfficialCheckpointError, match="unknown official network 'vae_c'"):
        load("vae_c", sd)


# ------------------------------------------------------------------------------------------ release


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)


@pytest.fixture(scope="module")
def release(tmp_path_factory, official_dir):
    """A complete official-layout release folder with seeded weights; role -> payload digest."""
    root = tmp_path_factory.mktemp("release")
    digests = {}
    for role, r in OFFICIAL_ROLES.items():
        sd = seeded(official_dir, r.manifest)
        digests[role] = payload_sha256(sd)
        _write(root / r.path, {"model_state": sd, "epoch": 10} if r.state_key else sd)
        del sd
    yield root, digests
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_load_release_round_trips_every_role(release):
    root, digests = release
    groups = [["vae_a", "vae_b_quality", "vae_b_scratch", "mapping_quality", "mapping_scratch", "mapping_hr"],
              ["scratch_unet"], ["face_256"], ["face_512"]]
    assert sorted(sum(groups, [])) == sorted(OFFICIAL_FILES)
    for group in groups:               # one group at a time keeps memory low
        out = load_release(root, roles=group)
        assert list(out) == group
        for role, (module, ref) in out.items():
            path = root / OFFICIAL_FILES[role]
            assert ref.name == role and ref.file == str(path)
            assert ref.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
            assert not module.training
            assert payload_sha256(module.state_dict()) == digests[role], role
        del out


@pytest.mark.slow
def test_model_set_from_official_release(release):
    root, digests = release
    models.clear_cache()
    try:
        ms = models.ModelSet.from_official(root)
        assert ms.missing() == []
        unet = ms.get("scratch_unet")          # the U-Net's state dict sits under "model_state"
        assert payload_sha256(unet.state_dict()) == digests["scratch_unet"]
        path = root / OFFICIAL_FILES["vae_b_scratch"]
        assert ms.checkpoint("vae_b_scratch").sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert ms.config("face_512").load_size == 512
    finally:
        models.clear_cache()


@pytest.mark.slow
def test_release_layouts_are_found(release, tmp_path):
    root, digests = release
    src = root / OFFICIAL_FILES["vae_a"]
    # the two zips unzipped into separate folders: <dir>/global/checkpoints/..., <dir>/face/checkpoints/...
    sep = tmp_path / "separate"
    dst = sep / "global_checkpoints" / OFFICIAL_FILES["vae_a"].removeprefix("Global/")
    dst.parent.mkdir(parents=True)
    shutil.copy(src, dst)
    assert find_official_file(sep, "vae_a") == dst
    (module, ref), = load_release(sep, roles=["vae_a"]).values()
    assert payload_sha256(module.state_dict()) == digests["vae_a"] and ref.file == str(dst)
    # root holding the unzipped folder one level down, or being the Global folder itself
    assert find_official_file(tmp_path / "separate", "vae_a") == dst
    assert find_official_file(root / "Global", "vae_a") == root / "Global" / OFFICIAL_FILES["vae_a"][7:]
    assert find_official_file(tmp_path / "nothing", "face_512") is None


@pytest.mark.slow
def test_release_errors_name_file_and_keys(release, tmp_path, official_dir):
    root, _ = release
    # missing file
    partial = tmp_path / "partial"
    shutil.copytree(root / "Global/checkpoints/restoration/VAE_A_quality",
                    partial / "Global/checkpoints/restoration/VAE_A_quality")
    with pytest.raises(OfficialFileMissingError) as e:
        load_release(partial, roles=["vae_a", "mapping_quality", "face_512"])
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    assert str(partial / OFFICIAL_FILES["mapping_quality"]) in msg and "latent mapping, no-scratch" in msg
    assert str(partial / OFFICIAL_FILES["face_512"]) in msg and "512 px" in msg
    assert "VAE_A_quality" not in msg
    with pytest.raises(OfficialFileMissingError, match="not found"):
        load_release(tmp_path / "no_such_dir", roles=["vae_a"])

    vae_path = partial / OFFICIAL_FILES["vae_a"]
    sd = seeded(official_dir, "vae_a")
    # renamed key
    renamed = {("encoder.4.w" if k == "encoder.4.weight" else k): v for k, v in sd.items()}
    torch.save(renamed, vae_path)
    with pytest.raises(OfficialCheckpointError) as e:
        load_release(partial, roles=["vae_a"])
    msg = str(e.value)
    assert str(vae_path) in msg and e.value.file == str(vae_path)
    assert "missing key(s): encoder.4.weight" in msg and "unexpected key(s): encoder.4.w" in msg
    # wrong shape
    reshaped = dict(sd, **{"decoder.11.weight": torch.zeros(3, 64, 5, 5)})
    torch.save(reshaped, vae_path)
    with pytest.raises(OfficialCheckpointError) as e:
        load_release(partial, roles=["vae_a"])
    msg = str(e.value)
    assert str(vae_path) in msg
    assert "decoder.11.weight (network expects [3, 64, 7, 7], file has [3, 64, 5, 5])" in msg
    assert e.value.mismatched == [("decoder.11.weight", (3, 64, 7, 7), (3, 64, 5, 5))]
    # not a checkpoint at all
    vae_path.write_bytes(b"this is not a torch file")
    with pytest.raises(OfficialCheckpointError, match="cannot read official checkpoint"):
        load_release(partial, roles=["vae_a"])
    # the U-Net file must hold its state dict under "model_state"
    unet_path = partial / OFFICIAL_FILES["scratch_unet"]
    _write(unet_path, {"epoch": 3})
    with pytest.raises(OfficialCheckpointError, match="model_state") as e:
        load_release(partial, roles=["scratch_unet"])
    assert str(unet_path) in str(e.value)
