"""Stage "write": build the item's files (relative path → bytes) and finish its provenance record.

    restored.png           (restored.tif for TIFF input), the input's size, orientation (EXIF applied), bit depth,
                           ICC profile and EXIF; grey inputs stay grey unless `options.colour`
    mask.png               when the detector ran (0/255, the input's size)
    faces/face_NN_before.png, faces/face_NN_after.png   aligned face before / after enhancement
    review.png             input | restored | mask overlay
    provenance.json        ItemProvenance.to_json() (also written for failed items, with the error)

The files are not written here (the CLI, Ray and Prefect each write `state.files` with their storage);
`state.out_dir`, when set, is used for the URIs recorded in provenance.
"""
from __future__ import annotations

import io
import posixpath

import numpy as np
from PIL import Image

from oldphoto.digest import sha256_bytes
from oldphoto.imageops.io import check_readable, encode_image, to_grey
from oldphoto.imageops.review import review_sheet
from oldphoto.provenance import ArtefactRecord, StageName
from oldphoto.stages.base import ItemState, Stage, now_iso


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


class EncodeStage(Stage):
    steps = (StageName.WRITE,)

    def __init__(self, models=None, options=None, source=None) -> None:
        from oldphoto.stages.base import RestoreOptions

        super().__init__(models, options or RestoreOptions(), source)

    def __call__(self, state: ItemState) -> ItemState:
        if not state.failed:
            self.attempt(state, self.process)
        self.finish(state)          # a failed item still gets its provenance.json
        return state

    def _add(self, state: ItemState, rel: str, kind: str, data: bytes, **extra) -> None:
        state.files[rel] = data
        uri = posixpath.join(state.out_dir.replace("\\", "/"), rel) if state.out_dir else rel
        state.provenance.outputs.append(ArtefactRecord(kind=kind, uri=uri, sha256=sha256_bytes(data),
                                                       bytes=len(data), extra=extra))

    def process(self, state: ItemState) -> None:
        with self.step(state, self.name, device="cpu"):
            dec = state.decoded
            fmt = "TIFF" if dec.format == "TIFF" else "PNG"
            grey = dec.grey and not self.options.colour
            data = encode_image(state.restored, fmt, grey=grey, bit_depth=dec.bit_depth,
                                icc_profile=dec.icc_profile, exif=dec.exif, tiff_tags=dec.tiff_tags, dpi=dec.dpi)
            check_readable(data)
            self._add(state, "restored.tif" if fmt == "TIFF" else "restored.png", "restored", data,
                      width=dec.width, height=dec.height, bit_depth=dec.bit_depth, grey=grey,
                      path=state.provenance.parameters.get("global_path"))
            if state.mask is not None:
                self._add(state, "mask.png", "mask", _png(state.mask.astype(np.uint8) * 255),
                          coverage=state.provenance.mask_coverage, used=bool(state.use_scratch))
            for f in state.faces:
                self._add(state, f"faces/face_{f.index:02d}_before.png", "face_before", _png(f.aligned), face=f.index,
                          detected_on=f.detected_on)
                if f.enhanced is not None:
                    self._add(state, f"faces/face_{f.index:02d}_after.png", "face_after", _png(f.enhanced),
                              face=f.index)
            if self.options.review:
                # the sheet shows what was written: a grey scan's result in grey
                shown = np.repeat(to_grey(state.restored)[..., None], 3, axis=2) if grey else state.restored
                sheet = review_sheet(dec.pixels, shown, state.mask)
                self._add(state, "review.png", "review", _png(sheet))

    def finish(self, state: ItemState) -> None:
        prov = state.provenance
        if state.failed:
            prov.status = "failed"
            prov.error = state.error
            state.files = {}
            prov.outputs = []
        else:
            prov.status = "done"
        prov.finished = now_iso()
        state.files["provenance.json"] = prov.to_json().encode("utf-8")
