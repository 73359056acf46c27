"""What every stage shares: the options, the per-item state, the model source and the stage base class.

A stage is `__call__(state) -> state` (one item) plus `batch(states) -> states` (several items, batched where
shapes allow). Stages never raise on bad input: the failure is put on the state (`state.error`) and recorded in
provenance; later stages pass failed states through untouched. Stages hold their models (loaded once per
process) and are picklable: a stage built with `from_source(WeightsSource, options)` drops its models when
pickled and reloads them lazily in the receiving process (a Ray actor).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Iterator, Literal, get_type_hints

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from oldphoto import __version__
from oldphoto.imageops.io import DEFAULT_MAX_PIXELS, DecodedImage
from oldphoto.networks.unet import OFFICIAL_THRESHOLD
from oldphoto.provenance import CheckpointRef, InputRecord, ItemProvenance, StageName, StageRecord, StageStatus
from oldphoto.weights_source import WeightsSource

log = logging.getLogger(__name__)

# The detector's operating point: the pixel threshold on its sigmoid, and the share of detected pixels from which
# `--scratch auto` takes the scratch path (below it, isolated false positives would only punch holes into a photo
# without scratches, so the quality path is used). These defaults (the official threshold 0.4; 0.1 %: one
# 2-pixel-wide scratch across a 2000-pixel photo) apply to official checkpoints; our weights carry their own,
# chosen on val (`scripts/choose_scratch_settings.py`) and stored in the detector file's metadata
# ("operating_point"); RestoreOptions can override both.
AUTO_SCRATCH_MIN_COVERAGE = 0.001
SCRATCH_THRESHOLD = OFFICIAL_THRESHOLD
# An enhanced face is applied only when its low-frequency PSNR against the scan's own face
# (imageops.faces.face_agreement) reaches this (dB); chosen on val (MODEL_CARD.md).
FACE_MIN_AGREEMENT_DB = 26.0
FACE_MIN_STRUCTURE = 0.8          # chosen on val by scripts/choose_face_putback.py (2026-12-02: the 45 face-val
                                  # faces keep 0.86-1.0 of their structure, so none is put back up to 0.8)


Positive = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


@dataclass
class RestoreOptions:
    """Everything that changes what a restoration does (all recorded in provenance `parameters`).

    Checked at construction against the field annotations (pydantic, lax mode: "512" -> 512, "true" -> True,
    from Prefect parameters, review forms and JSON alike): a wrong type, an unknown choice or a value out of
    range raises ValueError naming the field. The coerced values replace the given ones, except an int given
    for a float field (face_strength=1 stays 1), so options of the right types keep their `to_dict()` and
    run fingerprint byte for byte."""

    scratch: Literal["auto", "on", "off"] = "auto"
    hr: bool = False                      # 512 faces; with scratches, the patch-attention mapping (mapping_hr)
    device: str = "cpu"
    faces: bool = True
    colour: bool = False                  # write grey inputs as RGB instead of keeping them grey
    tile: Positive = 512                  # scratch paths: attention spans the whole image up to tile² pixels,
                                          # tiles of this side above (stages/restore_global.py)
    tile_overlap: Annotated[int, Field(ge=0)] = 32   # blend band between those tiles
    tile_halo: Annotated[int, Field(ge=0)] = 32      # discarded context around each of those tiles
    untiled_max_mb: Positive = 4096       # global restoration runs untiled while its estimated memory fits;
                                          # above, exact tiles (quality path) that fit it
    global_batch: Positive = 4            # same-size untiled items per forward pass (GlobalRestorationStage.batch)
    precision: Literal["fp32", "bf16"] = "fp32"   # global restoration arithmetic: "fp32" (the official result)
                                          # or "bf16" (autocast: faster on AVX512-BF16 CPUs and GPUs, visibly
                                          # different)
    detector_scales: Annotated[int, Field(ge=1, le=2)] = 2   # 2: scans larger than the working size are also
                                          # detected at twice it (oldphoto.stages.scratch.scratch_probability);
                                          # 1: the official single scale
    detector_mirror: bool = True          # the detector also sees the scan mirrored 3 ways, logits averaged
                                          # (oldphoto.stages.scratch.scratch_probability; False = one pass)
    detector_tile: Positive = 1024        # detector tiles (at its working size; normal photos are one tile)
    scratch_threshold: Fraction | None = None          # None: the detector's own operating point (see above)
    auto_scratch_min_coverage: Fraction | None = None  # None: the detector's own operating point
    max_pixels: Positive = DEFAULT_MAX_PIXELS
    face_batch: Positive = 8              # faces per enhancement forward pass
    face_strength: Fraction | None = None  # blend strength of an enhanced face, 0..1 (None: the face weights'
                                          # operating point, else 1)
    face_min_agreement: float | None = None  # dB; an enhanced face that agrees less with the scan's face at low
                                          # frequency is not applied (None: the face weights' operating point,
                                          # else FACE_MIN_AGREEMENT_DB); setting it also overrides an operating
                                          # point that keeps every original face
    face_min_structure: Fraction | None = None  # a face (not enhanced) whose structure stage 1 kept less than
                                          # this (imageops.faces.structure_kept) gets the scan's face back (None:
                                          # FACE_MIN_STRUCTURE, chosen on val; 0 = never)
    face_guard: bool = True               # inside faces found on the scan keep only scratch-like mask parts
                                          # (oldphoto.imageops.mask.guard_faces; False = the official mask)
    blob_guard: bool = True               # keep only scratch-like mask parts larger than a dust speck anywhere
                                          # (oldphoto.imageops.mask.guard_blobs; False = the detector's own mask)
    review: bool = True
    tone_match: bool = True               # keep the scan's local tone/colour after global restoration
                                          # (oldphoto.imageops.tone; False = the official stage-1 output)
    structure_return: bool = True         # with tone_match: give back the scan's structure stage 1 smoothed
                                          # away where the scan shows it was not noise
                                          # (oldphoto.imageops.structure; not official)
    colour_correct: bool = True           # with tone_match: global tone/colour correction when the weights have
                                          # the `colour` regressor (oldphoto.imageops.colour; not official)
    colour_strength: Fraction | None = None   # its strength 0..1 (None: the regressor's operating point)
    refine: bool = True                   # the detail refiner after stage 1 when the weights have it
                                          # (oldphoto.networks.refiner; not official)
    refine_strength: Fraction | None = None   # its strength 0..1 (None: the refiner's operating point)

    def __post_init__(self) -> None:
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        try:
            checked = _options_model().model_validate(given)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']} (got {err['input']!r})"
                                 for err in e.errors())
            raise ValueError(f"invalid restore options: {problems}") from None
        for name, value in given.items():
            new = getattr(checked, name)
            if type(value) is int and type(new) is float and new == value:
                continue            # an int given for a float stays as given (its JSON, hence the fingerprint)
            if type(new) is not type(value) or new != value:
                setattr(self, name, new)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def returns_structure(self) -> bool:
        """Structure return can run: it works inside the tone transfer, so it needs `tone_match` as well."""
        return self.tone_match and self.structure_return

    @property
    def face_role(self) -> str:
        return "face_512" if self.hr else "face_256"

    @property
    def scratch_mapping_role(self) -> str:
        return "mapping_hr" if self.hr else "mapping_scratch"

    def required_roles(self) -> list[str]:
        """The ModelSet roles this configuration can use (checked before a run starts)."""
        roles = ["vae_a"]
        if self.scratch in ("auto", "off"):
            roles += ["mapping_quality", "vae_b_quality"]
        if self.scratch in ("auto", "on"):
            roles += ["scratch_unet", self.scratch_mapping_role, "vae_b_scratch"]
        if self.faces:
            roles.append(self.face_role)
        return roles

    def optional_roles(self) -> list[str]:
        """Roles this configuration uses when the weights have them (not required): the colour regressor, the
        detail refiner."""
        return (["colour"] if self.colour_correct and self.tone_match else []) + (["refiner"] if self.refine else [])


@functools.cache
def _options_model() -> type[BaseModel]:
    """The pydantic model that checks RestoreOptions: its fields, their annotations, all required."""
    hints = get_type_hints(RestoreOptions, include_extras=True)
    fields: dict[str, Any] = {f.name: (hints[f.name], ...) for f in dataclasses.fields(RestoreOptions)}
    return create_model("RestoreOptions", __config__=ConfigDict(extra="forbid"), **fields)


@dataclass
class FaceResult:
    index: int                            # 1-based, detection order
    box: tuple[int, int, int, int]
    points5: np.ndarray
    score: float | None
    tform: Any                            # skimage SimilarityTransform (aligned -> image coordinates)
    aligned: np.ndarray                   # S×S×3 uint8 (before), from the stage-1 output
    detected_on: str = "restored"         # "restored" | "input" (found on the scan only)
    enhanced: np.ndarray | None = None    # S×S×3 uint8 (after)


@dataclass
class ItemState:
    """One item as it goes through the stages."""

    uri: str
    name: str
    data: bytes | None
    provenance: ItemProvenance
    decoded: DecodedImage | None = None
    mask: np.ndarray | None = None        # H×W bool at the input's (upright) size, 1 = scratch
    suspect: np.ndarray | None = None     # H×W bool: possible defects (detector probability well below its
                                          # threshold; stages.scratch.suspected): no structure return there
    use_scratch: bool = False
    restored: np.ndarray | None = None    # H×W×3 float32 [0,1]
    faces: list[FaceResult] = field(default_factory=list)
    scan_faces: list[Any] | None = None   # imageops.faces.DetectedFace found on the scan by the detection stage
    face_size: int = 0
    files: dict[str, bytes] = field(default_factory=dict)
    out_dir: str | None = None            # where the files will go (for the URIs recorded in provenance)
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    @classmethod
    def new(cls, uri: str, data: bytes | None, options: RestoreOptions, name: str | None = None,
            out_dir: str | None = None, run_id: str | None = None) -> "ItemState":
        name = name or default_name(uri)
        prov = ItemProvenance(input=InputRecord(uri=uri, name=name), status="running", run_id=run_id,
                              parameters=options.to_dict(), oldphoto_version=__version__, started=now_iso())
        return cls(uri=uri, name=name, data=data, provenance=prov, out_dir=out_dir)

    def fail(self, where: StageName | str, message: str) -> None:
        """Mark the item failed: error "<where>: <message>" (one line). Stages fail items through their
        template (`Stage.step`, `add_record`), which also records the step."""
        message = " ".join(str(message).split()) or "unknown error"
        self.error = f"{StageName(where).value}: {message}"
        self.provenance.status = "failed"
        self.provenance.error = self.error


def default_name(uri: str) -> str:
    base = uri.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base[1:] else base
    return stem or "item"


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the millisecond (provenance and PREMIS event times)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


# ------------------------------------------------------------------------------------------- records
def error_message(exc: BaseException) -> str:
    """An exception as an item's error: a ValueError (bad input) by its message, anything else with its type."""
    return str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"


def add_record(state: ItemState, rec: StageRecord, error: str | None = None, *, once: bool = True) -> None:
    """The one way a stage record gets onto an item. With `error` the record is failed and so is the item
    ("<stage>: <error>"); with `once`, an item that already failed keeps its first failure and gets no second
    record."""
    if error is not None:
        if once and state.failed:
            return
        state.fail(rec.name, error)
        rec.status, rec.error = StageStatus.FAILED.value, state.error
    state.provenance.stages.append(rec)


# ------------------------------------------------------------------------------------------- stage base
class Stage:
    """Base class: holds models + options; subclasses implement `process(state)` and name their `steps`.

    The template every step goes through: `step()` times a block and records it done, or failed with its error
    (the item fails, the exception stops there); `skip()` records a skipped step; `fail()` records an exception
    that escaped outside a step under the stage's first step; batched steps build their record and hand it to
    `add_record`. `__call__` runs `process` on a live item and passes failed items through."""

    steps: tuple[StageName, ...] = ()     # the provenance records this stage writes, in order
    name: StageName                       # its first step (set from `steps`)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.steps:
            cls.name = cls.steps[0]

    def __init__(self, models: Any, options: RestoreOptions, source: WeightsSource | None = None) -> None:
        self._models = models
        self.options = options
        self.source = source

    @classmethod
    def from_source(cls, source: WeightsSource, options: RestoreOptions) -> "Stage":
        """A stage that loads its models from `source` (on `options.device`) on first use."""
        return cls(None, options, source=source)

    @property
    def models(self) -> Any:
        if self._models is None and self.source is not None:
            self._models = self.source.load(self.options.device)
        return self._models

    def __getstate__(self) -> dict:
        d = self.__dict__.copy()
        if d.get("source") is not None:
            d["_models"] = None
        return d

    def __call__(self, state: ItemState) -> ItemState:
        if not state.failed:
            self.attempt(state, self.process)
        return state

    def batch(self, states: list[ItemState]) -> list[ItemState]:
        return [self(s) for s in states]

    def process(self, state: ItemState) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def device(self) -> str:
        return self.options.device

    def checkpoint(self, role: str) -> CheckpointRef | None:
        try:
            return self.models.checkpoint(role)
        except Exception:
            return None

    def checkpoints(self, roles: tuple[str, ...] = ()) -> list[CheckpointRef]:
        return [c for c in (self.checkpoint(r) for r in roles) if c is not None]

    # -- the template
    def attempt(self, state: ItemState, fn: Callable[[ItemState], None]) -> None:
        """fn(state); an exception that escapes it fails the item (a stage never raises on bad input)."""
        try:
            fn(state)
        except Exception as e:
            self.fail(state, e)

    def fail(self, state: ItemState, error: BaseException | str) -> None:
        """Record a failure outside a step, under this stage's first step (nothing if the item already failed)."""
        message = error if isinstance(error, str) else error_message(error)
        add_record(state, StageRecord(name=self.name, status=StageStatus.FAILED, device=self.device), message)

    @contextmanager
    def step(self, state: ItemState, name: StageName, roles: tuple[str, ...] = (),
             extra_checkpoints: tuple[CheckpointRef, ...] = (), device: str | None = None) -> Iterator[StageRecord]:
        """Time the block and record step `name`: done, or failed with the error when the block raises (the
        exception ends there; code after the block still runs, so a step is a method's whole body)."""
        rec = StageRecord(name=name, status=StageStatus.DONE, device=device or self.device, started=now_iso())
        t0 = time.perf_counter()
        error = None
        try:
            yield rec
        except Exception as e:
            error = error_message(e)
        rec.seconds = round(time.perf_counter() - t0, 4)
        rec.finished = now_iso()
        rec.checkpoints = self.checkpoints(roles) + list(extra_checkpoints)
        add_record(state, rec, error)

    @staticmethod
    def skip(state: ItemState, name: StageName, reason: str = "") -> None:
        now = now_iso()
        add_record(state, StageRecord(name=name, status=StageStatus.SKIPPED, error=reason or None, started=now,
                                      finished=now))

    def record_group(self, states: list[ItemState], name: StageName, seconds: list[float], error: str | None,
                     roles: tuple[str, ...] = ()) -> None:
        """Records of a step run once for several items (a shared forward pass): each item's share of the time,
        the checkpoints, and the group's error if it failed. Clock times are filled in by `run_stage`."""
        ckpts = self.checkpoints(roles)
        for s, sec in zip(states, seconds):
            add_record(s, StageRecord(name=name, status=StageStatus.DONE, seconds=round(sec, 4), device=self.device,
                                      checkpoints=list(ckpts)), error)


def run_stage(stage: Any, state: ItemState) -> ItemState:
    """Run one stage on one item (what `oldphoto restore` and the Ray pools both do). A stage that raises
    anyway fails the item through the same template (`Stage.fail`). Stage records appended without clock times
    (batched stages time a whole group) get real ones: from the end of the record before (or the call's start)
    for their measured seconds, never past the call's end."""
    from oldphoto.catalog.tables import parse_time

    n, t0 = len(state.provenance.stages), _dt.datetime.now(_dt.timezone.utc)
    try:
        state = stage(state)
    except Exception as exc:  # a stage must not raise; if one does, it is this item's error, not the run's
        log.warning("stage %s raised on %s: %s", stage.name, state.uri, exc)
        stage.fail(state, exc)
    t1 = _dt.datetime.now(_dt.timezone.utc)
    prev = t0
    for rec in state.provenance.stages[n:]:
        if rec.started is None or rec.finished is None:
            start = parse_time(rec.started) or prev
            end = min(start + _dt.timedelta(seconds=float(rec.seconds or 0.0)), t1)
            rec.started, rec.finished = start.isoformat(timespec="milliseconds"), end.isoformat(timespec="milliseconds")
        prev = max(prev, parse_time(rec.finished))
    return state
