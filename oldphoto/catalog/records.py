"""What the catalog hands back (plain dataclasses), its error, the run fingerprint and the catalog's JSON."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Iterable

from oldphoto.provenance import ItemProvenance


class CatalogError(RuntimeError):
    """A catalog problem explained for the operator (bad URL, not initialised, unknown run or item)."""


def fingerprint(parameters: dict[str, Any] | None = None, checkpoints: Iterable[Any] = ()) -> str:
    """The sha256 of the restoration parameters and the weights used: two runs with the same fingerprint
    produce the same result for the same input bytes. `checkpoints`: CheckpointRef-like objects (.name,
    .sha256), (name, sha256) pairs, or sha256 strings."""
    ck = []
    for c in checkpoints:
        if isinstance(c, str):
            ck.append(["", c])
        elif isinstance(c, (tuple, list)):
            ck.append([str(c[0]), str(c[1])])
        else:
            ck.append([str(c.name), str(c.sha256)])
    blob = json.dumps({"parameters": parameters or {}, "checkpoints": sorted(ck)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class ItemInfo:
    id: int
    collection: str
    source_uri: str
    name: str
    sha256: str | None
    bytes: int | None
    width: int | None
    height: int | None
    mode: str | None
    format: str | None
    status: str
    attempts: int
    version: int
    last_error: str | None
    last_run_id: str | None
    created: datetime
    updated: datetime

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunInfo:
    id: str
    flow_run_id: str | None
    parameters: dict[str, Any]
    fingerprint: str
    oldphoto_version: str
    started: datetime
    finished: datetime | None
    n_items: int | None
    n_done: int | None
    n_failed: int | None
    n_skipped: int | None
    state: str | None = None          # running | finished | aborted
    reason: str | None = None
    host: str | None = None
    pid: int | None = None
    heartbeat: datetime | None = None


@dataclass
class Attempt:
    """What one run did to the item."""

    run_id: str
    flow_run_id: str | None
    status: str
    error: str | None
    input: dict[str, Any]
    fingerprint: str
    started: datetime | None
    finished: datetime | None
    seconds: float | None
    mask_coverage: float | None
    oldphoto_version: str | None
    recorded: datetime
    stages: list[dict[str, Any]] = field(default_factory=list)      # with "checkpoints": [...]
    artefacts: list[dict[str, Any]] = field(default_factory=list)
    faces: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    provenance: ItemProvenance | None = None                        # the record as recorded


@dataclass
class ItemHistory:
    item: ItemInfo
    attempts: list[Attempt]                                         # oldest first


def _dataclass_default(obj: Any) -> Any:
    """json.dumps hook: dataclasses (the provenance records) as their fields, encoded in one C pass - the
    same JSON as `ItemProvenance.to_json()` without `dataclasses.asdict`'s deep copies."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        d = getattr(obj, "__dict__", None)
        return d if d is not None else {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


_ENCODER = json.JSONEncoder(default=_dataclass_default)


def json_dumps(obj: Any) -> str:
    """The catalog's JSON serialiser (also given to SQLAlchemy for JSON columns)."""
    return _ENCODER.encode(obj)
