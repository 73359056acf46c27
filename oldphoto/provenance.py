"""The provenance record of one item: what went in, what was done, with which models, what came out.

One `ItemProvenance` is written per input as `provenance.json` beside its outputs, and the same record
is what the catalog stores (`oldphoto.catalog`). It is plain data (dataclasses <-> JSON), shared by the
local CLI, the Ray pipeline and the Prefect flows.
"""
from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1

ITEM_STATUSES = ("pending", "running", "done", "failed", "skipped")


class StageName(enum.StrEnum):
    """Where an item's work happens. The first seven are the recorded steps (a `StageRecord` each, a catalog
    stage row and a PREMIS event); the last two only name where an item failed outside a step (its error
    reads "<where>: <message>")."""

    LOAD = "load"
    SCRATCH_DETECTION = "scratch_detection"
    GLOBAL_RESTORATION = "global_restoration"
    FACE_DETECTION = "face_detection"
    FACE_ENHANCEMENT = "face_enhancement"
    BLENDING = "blending"
    WRITE = "write"
    RESTORE = "restore"                   # `oldphoto restore`: an unexpected error around the stages
    WORKER_CRASHED = "worker crashed"     # Ray: the item's actor died on every attempt

    @property
    def recorded(self) -> bool:
        return self not in (StageName.RESTORE, StageName.WORKER_CRASHED)


class StageStatus(enum.StrEnum):
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


STAGE_NAMES = tuple(n.value for n in StageName if n.recorded)
ARTEFACT_KINDS = ("restored", "mask", "face_before", "face_after", "review", "provenance")


@dataclass
class CheckpointRef:
    """A model file a stage used: logical network name, file name/URI and its sha256."""

    name: str
    file: str
    sha256: str


@dataclass
class InputRecord:
    uri: str
    name: str
    sha256: str | None = None
    bytes: int | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None          # PIL mode of the decoded file, e.g. "RGB", "L", "I;16", "CMYK"
    format: str | None = None        # PIL format, e.g. "JPEG", "PNG", "TIFF"


@dataclass
class StageRecord:
    name: str                        # a recorded StageName (stored as its plain string)
    status: str                      # a StageStatus: "done" | "failed" | "skipped"
    seconds: float = 0.0
    device: str = "cpu"
    checkpoints: list[CheckpointRef] = field(default_factory=list)
    error: str | None = None
    started: str | None = None       # ISO 8601 UTC, when the stage began and ended (real clock times)
    finished: str | None = None

    def __post_init__(self) -> None:   # enum members become their plain strings (JSON, catalog rows)
        if isinstance(self.name, enum.Enum):
            self.name = self.name.value
        if isinstance(self.status, enum.Enum):
            self.status = self.status.value


@dataclass
class ArtefactRecord:
    kind: str                        # one of ARTEFACT_KINDS
    uri: str
    sha256: str
    bytes: int
    extra: dict[str, Any] = field(default_factory=dict)   # e.g. {"coverage": 0.012} for masks, {"face": 1}


@dataclass
class FaceRecord:
    index: int                       # 1-based, detection order
    box: list[int]                   # [left, top, right, bottom] in input pixels
    score: float | None = None
    landmarks: list[list[float]] = field(default_factory=list)   # the 5 alignment points [[x, y], ...]
    detected_on: str | None = None   # "restored" (stage-1 output) | "input" (the scan only)
    applied: bool | None = None      # True: the enhanced face was blended in; False: the original face stayed
    reason: str | None = None        # why it was (not) applied
    agreement_db: float | None = None  # low-frequency PSNR, scan face vs enhanced face (imageops.faces)
    structure_kept: float | None = None  # stage 1's face structure over the scan's (imageops.faces.structure_kept)
    put_back: bool | None = None     # True: stage 1 had smeared the face away, the scan's face was put back


@dataclass
class ItemProvenance:
    input: InputRecord
    status: str = "pending"
    error: str | None = None
    run_id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    oldphoto_version: str = ""
    started: str | None = None       # ISO 8601 UTC
    finished: str | None = None
    stages: list[StageRecord] = field(default_factory=list)
    outputs: list[ArtefactRecord] = field(default_factory=list)
    faces: list[FaceRecord] = field(default_factory=list)
    mask_coverage: float | None = None
    warnings: list[str] = field(default_factory=list)   # one line each, e.g. "ICC profile ... dropped"
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ItemProvenance":
        d = dict(d)
        d["input"] = InputRecord(**d["input"])
        d["stages"] = [
            StageRecord(**{**s, "checkpoints": [CheckpointRef(**c) for c in s.get("checkpoints", [])]})
            for s in d.get("stages", [])
        ]
        d["outputs"] = [ArtefactRecord(**a) for a in d.get("outputs", [])]
        d["faces"] = [FaceRecord(**f) for f in d.get("faces", [])]
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "ItemProvenance":
        return cls.from_dict(json.loads(text))

    def checkpoints(self) -> list[CheckpointRef]:
        """Every distinct checkpoint used by any stage, in first-use order."""
        seen: dict[tuple[str, str], CheckpointRef] = {}
        for s in self.stages:
            for c in s.checkpoints:
                seen.setdefault((c.name, c.sha256), c)
        return list(seen.values())
