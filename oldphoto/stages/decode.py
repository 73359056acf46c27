"""Stage "load": bytes → upright float RGB + metadata, with the input's checksum and size in provenance.

The decode policy (pixel limit, metadata kept or dropped, float and multi-frame files) is
`oldphoto.imageops.io`'s; what it drops or leaves out goes to provenance `warnings`."""
from __future__ import annotations

from oldphoto.imageops.io import ImageDecodeError, decode_image
from oldphoto.digest import sha256_bytes
from oldphoto.provenance import StageName
from oldphoto.stages.base import ItemState, Stage


class DecodeStage(Stage):
    """Decode `state.data` (never modified) into `state.decoded`; unreadable files fail with a one-line reason."""

    steps = (StageName.LOAD,)

    def __init__(self, models=None, options=None, source=None) -> None:
        from oldphoto.stages.base import RestoreOptions

        super().__init__(models, options or RestoreOptions(), source)

    def process(self, state: ItemState) -> None:
        rec_input = state.provenance.input
        with self.step(state, self.name, device="cpu"):
            if state.data is None:
                raise ValueError("no data (the file could not be read)")
            rec_input.sha256 = sha256_bytes(state.data)
            rec_input.bytes = len(state.data)
            try:
                dec = decode_image(state.data, max_pixels=self.options.max_pixels)
            except ImageDecodeError as e:
                raise ValueError(str(e)) from None
            state.decoded = dec
            state.provenance.warnings.extend(dec.warnings)
            rec_input.width, rec_input.height = dec.width, dec.height
            rec_input.mode, rec_input.format = dec.mode, dec.format
            state.data = None           # the bytes are hashed; do not carry them (and their memory) further
