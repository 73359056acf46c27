"""The rows of the Ray pipeline: an item's `ItemState` as plain columns, and back.

Ray Data moves rows between the pipeline's tasks and actor pools as Arrow blocks. Each row is one item, in
columns of plain data (no Python objects, no pickling of ours):

- the image arrays as tensor columns of Ray's `ArrowVariableShapedTensorType` (images differ in size; Ray
  hands them to the next `map_batches` as numpy arrays again): `pixels`
  (the decoded scan, H×W×3 float32 in [0, 1], kept float: 16-bit scans keep their precision, as in
  `oldphoto restore`), `mask` and `suspect` (H×W bool), `restored` (H×W×3 float32), `face_aligned` / `face_enhanced`
  (N×S×S×3 uint8, one slice per face). An array the state does not have yet is a 0-size array (a real image
  never is);
- scalars and strings (`uri`, `name`, `out_dir`, `error`, `use_scratch`, `face_size`);
- small structured fields as Arrow structs and lists of `ROW_SCHEMA`: `decoded` (the decoded image's
  metadata; null before decoding), `scan_faces` (the faces the detection stage found: boxes, landmarks),
  `faces` (box, points, score, alignment matrix of each face), `files` (name, bytes);
- `provenance` as its own JSON text (`ItemProvenance.to_json`, the exact text of provenance.json): it is an
  open record, not a fixed schema: `parameters` gains keys in the face stage and artefact `extra` differs
  per kind, and Arrow structs would give every row the union of all keys (missing ones as nulls), so the
  record written at the end would not be the one the stages built.

The input's bytes (`ItemState.data`) are not in the rows: only DecodeStage reads them, in the fetch task, and
what it records of them (size, sha256) is in the provenance. TIFF tags travel with their text values only,
the only ones the encoder writes back. Arrays come out of Arrow read-only; `state_from_row` copies only
those (a stage may change an array in place: the face stage blends into `restored`).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

TENSOR_COLUMNS: dict[str, tuple[type, int]] = {      # column -> (dtype, ndim)
    "pixels": (np.float32, 3),
    "mask": (np.bool_, 2),
    "suspect": (np.bool_, 2),
    "restored": (np.float32, 3),
    "face_aligned": (np.uint8, 4),
    "face_enhanced": (np.uint8, 4),
}

_FLOATS = pa.list_(pa.float64())
_INTS = pa.list_(pa.int64())
DECODED_TYPE = pa.struct([
    ("grey", pa.bool_()), ("bit_depth", pa.int64()), ("format", pa.string()), ("mode", pa.string()),
    ("icc_profile", pa.binary()), ("exif", pa.binary()), ("orientation", pa.int64()),
    ("tiff_tags", pa.list_(pa.struct([("tag", pa.int64()), ("value", pa.string())]))),
    ("dpi", _FLOATS), ("warnings", pa.list_(pa.string())),
])
SCAN_FACE_TYPE = pa.struct([("box", _INTS), ("landmarks68", _FLOATS), ("score", pa.float64()),
                            ("points5", _FLOATS)])
FACE_TYPE = pa.struct([("index", pa.int64()), ("box", _INTS), ("points5", _FLOATS), ("score", pa.float64()),
                       ("tform", _FLOATS), ("detected_on", pa.string()), ("enhanced", pa.bool_())])
ROW_SCHEMA = pa.schema([
    ("uri", pa.string()), ("name", pa.string()), ("out_dir", pa.string()), ("error", pa.string()),
    ("provenance", pa.string()), ("decoded", DECODED_TYPE), ("use_scratch", pa.bool_()),
    ("scan_faces", pa.list_(SCAN_FACE_TYPE)), ("face_size", pa.int64()), ("faces", pa.list_(FACE_TYPE)),
    ("files", pa.list_(pa.struct([("name", pa.string()), ("data", pa.binary())]))),
])


# ----------------------------------------------------------------------------------------------- state -> row
def _decoded_row(dec: Any) -> dict[str, Any] | None:
    if dec is None:
        return None
    return {"grey": bool(dec.grey), "bit_depth": int(dec.bit_depth), "format": dec.format, "mode": dec.mode,
            "icc_profile": dec.icc_profile, "exif": dec.exif, "orientation": int(dec.orientation),
            "tiff_tags": None if dec.tiff_tags is None else [
                {"tag": int(t), "value": v} for t, v in dec.tiff_tags.items() if isinstance(v, str)],
            "dpi": None if dec.dpi is None else [float(x) for x in dec.dpi],
            "warnings": list(dec.warnings)}


def _scan_faces_row(scan_faces: Any) -> list[dict[str, Any]] | None:
    if scan_faces is None:
        return None
    return [{"box": [int(x) for x in f.box], "landmarks68": _flat(f.landmarks68), "score": _opt_float(f.score),
             "points5": _flat(f.points5)} for f in scan_faces]


def _face_tensors(faces: list[Any], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(aligned, enhanced) faces stacked; a face not enhanced has zeros (its row says `enhanced` False)."""
    if not faces:
        empty = np.zeros((0, size, size, 3), np.uint8)
        return empty, empty
    return (np.stack([f.aligned for f in faces]),
            np.stack([f.enhanced if f.enhanced is not None else np.zeros_like(f.aligned) for f in faces]))


def _or_empty(value: Any, column: str) -> np.ndarray:
    return value if value is not None else _empty(column)


def state_to_row(state: Any) -> dict[str, Any]:
    """The row of an `ItemState`: plain values for `ROW_SCHEMA`, numpy arrays for `TENSOR_COLUMNS`."""
    dec = state.decoded
    faces = state.faces
    size = int(state.face_size)
    aligned, enhanced = _face_tensors(faces, size)
    return {
        "uri": state.uri, "name": state.name, "out_dir": state.out_dir, "error": state.error,
        "provenance": state.provenance.to_json(), "decoded": _decoded_row(dec),
        "use_scratch": bool(state.use_scratch), "scan_faces": _scan_faces_row(state.scan_faces), "face_size": size,
        "faces": [{"index": int(f.index), "box": [int(x) for x in f.box], "points5": _flat(f.points5),
                   "score": _opt_float(f.score), "tform": _flat(f.tform.params), "detected_on": f.detected_on,
                   "enhanced": f.enhanced is not None} for f in faces],
        "files": [{"name": k, "data": v} for k, v in state.files.items()],
        "pixels": _or_empty(None if dec is None else dec.pixels, "pixels"),
        "mask": _or_empty(state.mask, "mask"),
        "suspect": _or_empty(state.suspect, "suspect"),
        "restored": _or_empty(state.restored, "restored"),
        "face_aligned": aligned, "face_enhanced": enhanced,
    }


def rows_to_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """A block of rows (what the pipeline's `map_batches` functions return): `ROW_SCHEMA`'s columns with their
    Arrow types, and the tensor columns, always variable-shaped (`ArrowVariableShapedTensorArray.from_numpy`:
    one copy of the arrays into the block; every block has the same column types, whatever its images' sizes)."""
    from ray.data.extensions import ArrowVariableShapedTensorArray

    columns = {f.name: pa.array([r[f.name] for r in rows], type=f.type) for f in ROW_SCHEMA}
    for name, (dtype, _) in TENSOR_COLUMNS.items():
        columns[name] = ArrowVariableShapedTensorArray.from_numpy([np.asarray(r[name], dtype=dtype) for r in rows])
    return pa.table(columns)


def states_to_table(states: Sequence[Any]) -> pa.Table:
    return rows_to_table([state_to_row(s) for s in states])


# ----------------------------------------------------------------------------------------------- row -> state
def _decoded_from_row(row: dict[str, Any]) -> Any:
    from oldphoto.imageops.io import DecodedImage

    d = row["decoded"]
    if d is None:
        return None
    tags = d["tiff_tags"]
    return DecodedImage(
        pixels=_array(row["pixels"], "pixels"), grey=bool(d["grey"]), bit_depth=int(d["bit_depth"]),
        format=d["format"], mode=d["mode"], icc_profile=_opt_bytes(d["icc_profile"]), exif=_opt_bytes(d["exif"]),
        orientation=int(d["orientation"]),
        tiff_tags=None if tags is None else {int(t["tag"]): str(t["value"]) for t in tags},
        dpi=None if d["dpi"] is None else tuple(float(x) for x in d["dpi"]),
        warnings=[str(w) for w in d["warnings"]])


def _scan_faces_from_row(scan: Any) -> list[Any] | None:
    from oldphoto.imageops.faces import DetectedFace

    if scan is None:
        return None
    return [DetectedFace(box=tuple(int(x) for x in f["box"]), landmarks68=_points(f["landmarks68"]),
                         score=_opt_float(f["score"]), points5=_points(f["points5"])) for f in scan]


def _faces_from_row(row: dict[str, Any]) -> list[Any]:
    from skimage.transform import SimilarityTransform

    from oldphoto.stages.base import FaceResult

    aligned, enhanced = _array(row["face_aligned"], "face_aligned"), _array(row["face_enhanced"], "face_enhanced")
    return [FaceResult(index=int(f["index"]), box=tuple(int(x) for x in f["box"]), points5=_points(f["points5"]),
                       score=_opt_float(f["score"]),
                       tform=SimilarityTransform(matrix=np.asarray(f["tform"], np.float64).reshape(3, 3)),
                       aligned=aligned[k], detected_on=str(f["detected_on"]),
                       enhanced=enhanced[k] if f["enhanced"] else None)
            for k, f in enumerate(row["faces"])]


def _opt_str(x: Any) -> str | None:
    return None if x is None else str(x)


def state_from_row(row: dict[str, Any]) -> Any:
    """The `ItemState` of a row (a row of a numpy batch, of `iter_rows`, or of `state_to_row`)."""
    from oldphoto.provenance import ItemProvenance
    from oldphoto.stages.base import ItemState

    return ItemState(
        uri=str(row["uri"]), name=str(row["name"]), data=None,
        provenance=ItemProvenance.from_json(row["provenance"]), decoded=_decoded_from_row(row),
        mask=_array(row["mask"], "mask", absent=True), suspect=_array(row["suspect"], "suspect", absent=True),
        use_scratch=bool(row["use_scratch"]),
        restored=_array(row["restored"], "restored", absent=True), faces=_faces_from_row(row),
        scan_faces=_scan_faces_from_row(row["scan_faces"]), face_size=int(row["face_size"]),
        files={str(f["name"]): bytes(f["data"]) for f in row["files"]},
        out_dir=_opt_str(row["out_dir"]), error=_opt_str(row["error"]))


def batch_rows(batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The rows of a `map_batches` batch in numpy format (a dict of equally long columns)."""
    n = len(next(iter(batch.values())))
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def batch_states(batch: dict[str, np.ndarray]) -> list[Any]:
    return [state_from_row(r) for r in batch_rows(batch)]


# ----------------------------------------------------------------------------------------------- helpers
def _empty(column: str) -> np.ndarray:
    dtype, ndim = TENSOR_COLUMNS[column]
    return np.zeros((0,) * ndim if ndim < 3 else (0,) * (ndim - 1) + (3,), dtype)


def _array(value: Any, column: str, absent: bool = False) -> np.ndarray | None:
    """A tensor cell as the state's array: None for the 0-size placeholder (where `absent`), else the
    array itself, copied only when it is read-only (a view of an Arrow block)."""
    arr = np.asarray(value, dtype=TENSOR_COLUMNS[column][0])
    if absent and arr.size == 0:
        return None
    return arr if arr.flags.writeable else arr.copy()


def _flat(a: Any) -> list[float]:
    return [float(x) for x in np.asarray(a, np.float64).ravel()]


def _points(values: Any) -> np.ndarray:
    return np.asarray(values, np.float64).reshape(-1, 2)


def _opt_float(x: Any) -> float | None:
    return None if x is None else float(x)


def _opt_bytes(x: Any) -> bytes | None:
    return None if x is None else bytes(x)
