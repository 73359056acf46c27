"""Helpers for tests that run pipeline stages on networks built in the test (no weights files)."""
from __future__ import annotations

import numpy as np

from oldphoto.imageops.io import DecodedImage
from oldphoto.pipeline import ItemState, RestoreOptions


class Nets:
    """The part of a ModelSet the stages use (`get`, `checkpoint`), over modules built in the test."""

    def __init__(self, nets: dict):
        self.nets = nets

    def get(self, role):
        return self.nets[role]

    def checkpoint(self, role):
        return None


def decoded_state(pixels: np.ndarray, opts: RestoreOptions, name: str = "x",
                  mask: np.ndarray | None = None) -> ItemState:
    """An item already decoded to `pixels` (H×W×3 float in [0, 1]), with a scratch mask if given."""
    st = ItemState.new(f"{name}.png", None, opts)
    st.decoded = DecodedImage(pixels=pixels, grey=False, bit_depth=8, format="PNG", mode="RGB")
    if mask is not None:
        st.mask, st.use_scratch = mask, True
    return st
