"""oldphoto's weights format (oldphoto.weights) and the network registry's config round trip."""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from oldphoto.networks import registry
from oldphoto.weights import (
    WeightsFormatError,
    WeightsMismatchError,
    file_sha256,
    load_weights,
    payload_sha256,
    read_info,
    save_weights,
)


@dataclass
class ToyConfig:
    channels: int = 4
    kernel: int = 3
    sizes: tuple[int, ...] = (1, 2)
    scale: float = 1.0

    @classmethod
    def official(cls) -> "ToyConfig":
        return cls()


class ToyNet(nn.Module):
    """Conv + BN (float buffers and an int64 num_batches_tracked) + a plain float buffer."""

    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.conv = nn.Conv2d(3, cfg.channels, cfg.kernel, padding=cfg.kernel // 2)
        self.bn = nn.BatchNorm2d(cfg.channels)
        self.register_buffer("offset", torch.zeros(cfg.channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)) * self.cfg.scale + self.offset[None, :, None, None]


@pytest.fixture(scope="module", autouse=True)
def toy_kind():
    registry.register("toy_test", ToyConfig, ToyNet, replace=True)
    yield "toy_test"


def _toy(seed: int = 0, cfg: ToyConfig | None = None) -> tuple[ToyNet, ToyConfig]:
    torch.manual_seed(seed)
    cfg = cfg or ToyConfig()
    net = ToyNet(cfg)
    with torch.no_grad():   # non-trivial buffers, as after training
        net.bn.running_mean.normal_()
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.num_batches_tracked.fill_(123)
        net.offset.normal_()
    return net, cfg


def test_round_trip_is_exact_and_records_metadata(tmp_path):
    net, cfg = _toy()
    prov = {"data": "synthetic", "steps": 10, "hardware": "cpu", "wall_time_s": 1.5, "metrics": {"psnr": 20.1}}
    path = tmp_path / "toy.safetensors"
    sha = save_weights(path, net, "toy_test", cfg, provenance=prov)
    assert sha == file_sha256(path)

    loaded, info = load_weights(path, expect_network="toy_test", expect_config=cfg)
    assert isinstance(loaded, ToyNet) and not loaded.training
    ref = net.state_dict()
    got = loaded.state_dict()
    assert list(got) == list(ref)
    for k in ref:
        assert got[k].dtype == ref[k].dtype, k
        assert torch.equal(got[k], ref[k]), k
    assert info.network == "toy_test"
    assert info.config == cfg and info.config_dict == registry.config_to_dict(cfg)
    assert info.provenance == prov
    assert info.dtype == "float32" and info.format_version == 1
    assert info.file_sha256 == sha
    assert info.payload_sha256 == payload_sha256(ref)
    assert info.num_parameters == sum(p.numel() for p in net.parameters())
    x = torch.randn(2, 3, 8, 8)
    net.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    # the header can be read without building the network
    assert read_info(path).config == cfg


def test_saving_is_deterministic(tmp_path):
    net, cfg = _toy()
    a = save_weights(tmp_path / "a.safetensors", net, "toy_test", cfg, provenance={"steps": 1})
    b = save_weights(tmp_path / "b.safetensors", net, "toy_test", cfg, provenance={"steps": 1})
    assert a == b
    other, _ = _toy(seed=1)
    assert save_weights(tmp_path / "c.safetensors", other, "toy_test", cfg, provenance={"steps": 1}) != a


def test_fp16_storage_loads_back_as_fp32(tmp_path):
    net, cfg = _toy()
    cfg_big = ToyConfig(channels=32)
    big, _ = _toy(cfg=cfg_big)
    p32 = tmp_path / "w32.safetensors"
    p16 = tmp_path / "w16.safetensors"
    save_weights(p32, big, "toy_test", cfg_big)
    save_weights(p16, big, "toy_test", cfg_big, fp16=True)
    assert p16.stat().st_size < 0.6 * p32.stat().st_size

    loaded, info = load_weights(p16)
    assert info.dtype == "float16"
    for k, ref in big.state_dict().items():
        got = loaded.state_dict()[k]
        if ref.is_floating_point():
            assert got.dtype == torch.float32, k
            assert torch.equal(got, ref.half().float()), k
        else:
            assert got.dtype == ref.dtype and torch.equal(got, ref), k


def test_fp16_refuses_values_out_of_range(tmp_path):
    net, cfg = _toy()
    with torch.no_grad():
        net.offset[0] = 1e6
    with pytest.raises(ValueError, match="offset.*float16"):
        save_weights(tmp_path / "x.safetensors", net, "toy_test", cfg, fp16=True)


def _data_start(path) -> int:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    return 8 + n


def test_tampered_payload_is_detected(tmp_path):
    net, cfg = _toy()
    path = tmp_path / "toy.safetensors"
    save_weights(path, net, "toy_test", cfg)
    data = bytearray(path.read_bytes())
    pos = _data_start(path) + (len(data) - _data_start(path)) // 2
    data[pos] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsFormatError, match="sha256") as e:
        load_weights(path)
    assert str(path) in str(e.value)


def test_header_tampering_and_foreign_files_are_rejected(tmp_path):
    from safetensors.torch import save_file

    net, cfg = _toy()
    path = tmp_path / "toy.safetensors"
    save_weights(path, net, "toy_test", cfg)
    # claim another payload digest in the header (same length, so the file stays parseable)
    raw = path.read_bytes()
    n = _data_start(path) - 8
    header = json.loads(raw[8 : 8 + n])
    digest = header["__metadata__"]["payload_sha256"]
    forged = raw.replace(digest.encode(), ("0" * len(digest)).encode())
    path.write_bytes(forged)
    with pytest.raises(WeightsFormatError, match="does not match"):
        load_weights(path)

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(WeightsFormatError, match="not an oldphoto weights file"):
        load_weights(foreign)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(WeightsFormatError, match="garbage.safetensors"):
        load_weights(garbage)

    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "absent.safetensors")


def test_expected_network_and_config_mismatch(tmp_path):
    net, cfg = _toy()
    path = tmp_path / "toy.safetensors"
    save_weights(path, net, "toy_test", cfg)
    with pytest.raises(WeightsMismatchError, match="'toy_test' network, expected 'vae'"):
        load_weights(path, expect_network="vae")
    with pytest.raises(WeightsMismatchError, match=r"channels: file has 4, expected 8"):
        load_weights(path, expect_config=ToyConfig(channels=8))
    with pytest.raises(WeightsMismatchError, match=r"sizes"):
        load_weights(path, expect_config={"sizes": [1, 2, 3]})
    # a dict equal to the stored config is accepted
    load_weights(path, expect_config={"channels": 4, "kernel": 3, "sizes": [1, 2], "scale": 1.0})


def test_tensors_not_fitting_the_stored_config(tmp_path):
    net, _ = _toy(cfg=ToyConfig(channels=6))
    path = tmp_path / "lying.safetensors"
    save_weights(path, net, "toy_test", ToyConfig(channels=4))   # header claims 4 channels
    with pytest.raises(WeightsMismatchError, match=r"conv.weight \(network expects \[4, 3, 3, 3\], file has \[6, 3, 3, 3\]\)"):
        load_weights(path)


def test_config_dict_round_trip_restores_types():
    cfg = ToyConfig(channels=5, sizes=(3, 4, 5), scale=2.0)
    d = registry.config_to_dict(cfg)
    assert d == {"channels": 5, "kernel": 3, "sizes": [3, 4, 5], "scale": 2.0}
    back = registry.config_from_dict("toy_test", json.loads(json.dumps(d)))
    assert back == cfg and isinstance(back.sizes, tuple)
    assert registry.config_from_dict(ToyConfig, {"scale": 3}).scale == 3.0   # JSON int -> float field
    assert registry.config_from_dict(ToyConfig, {}) == ToyConfig()            # defaults for absent fields
    with pytest.raises(ValueError, match="unknown field.*bogus"):
        registry.config_from_dict(ToyConfig, {"bogus": 1})


def test_registry_builds_every_builtin_kind_from_dict():
    """Each built-in kind resolves to its classes and round-trips its tiny config through JSON."""
    assert set(registry.NETWORKS) >= {
        "vae", "mapping", "mapping_nonlocal", "mapping_patch_attention", "scratch_unet", "spade_face"
    }
    for kind in ("vae", "mapping", "mapping_nonlocal", "mapping_patch_attention", "scratch_unet", "spade_face"):
        config_cls, net_cls = registry.NETWORKS[kind]
        cfg = config_cls.tiny()
        d = json.loads(json.dumps(registry.config_to_dict(cfg)))
        assert registry.config_from_dict(kind, d) == cfg
        assert isinstance(registry.build(kind, d), net_cls)
        assert registry.kind_of(cfg) == kind
    with pytest.raises(KeyError, match="unknown network kind 'nope'"):
        registry.build("nope")
    with pytest.raises(TypeError, match="needs a VAEConfig"):
        registry.build("vae", ToyConfig())


def test_builtin_network_round_trip_fp16(tmp_path):
    config_cls, _ = registry.NETWORKS["mapping_patch_attention"]
    cfg = config_cls.tiny()
    torch.manual_seed(0)
    net = registry.build("mapping_patch_attention", cfg)
    path = tmp_path / "m.safetensors"
    save_weights(path, net, "mapping_patch_attention", cfg, fp16=True)
    loaded, info = load_weights(path, expect_network="mapping_patch_attention", expect_config=cfg)
    assert info.config == cfg and isinstance(info.config.patch_sizes, tuple)
    z = torch.randn(1, cfg.latent_channels, 16, 16)
    mask = torch.zeros(1, 1, 64, 64)
    net.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(z, mask), net(z, mask), atol=2e-2)
