"""The single-machine restoration pipeline: the five stage objects run in sequence for each item.

    restorer = Restorer(ModelSet.from_weights_dir("weights/"), RestoreOptions(scratch="auto"))
    state = restorer.run("scans/a.jpg", data)       # never raises on bad input
    state.files   # {"restored.png": b"...", "mask.png": ..., "faces/...", "review.png", "provenance.json"}

`build_stages(models, options)` gives the stage list (Ray runs the same objects in separate actor pools;
`build_stages_from_source(WeightsSource, options)` builds picklable stages that load their models in the actor).
"""
from __future__ import annotations

from typing import Any

from oldphoto.stages.base import run_stage
from oldphoto.stages import (DecodeStage, EncodeStage, FaceStage, GlobalRestorationStage, ItemState,
                             RestoreOptions, ScratchDetectionStage, Stage)
from oldphoto.weights_source import WeightsSource

__all__ = ["ItemState", "RestoreOptions", "WeightsSource", "Restorer", "build_stages", "build_stages_from_source",
           "check_models"]

STAGE_CLASSES = (DecodeStage, ScratchDetectionStage, GlobalRestorationStage, FaceStage, EncodeStage)


def build_stages(models: Any, options: RestoreOptions) -> list[Stage]:
    return [cls(models, options) for cls in STAGE_CLASSES]


def build_stages_from_source(source: WeightsSource, options: RestoreOptions) -> list[Stage]:
    return [cls.from_source(source, options) for cls in STAGE_CLASSES]


def check_models(models: Any, options: RestoreOptions) -> None:
    """Raise MissingWeightsError (from oldphoto.models) naming every role this configuration needs but lacks."""
    models.require(options.required_roles())


class Restorer:
    """Runs the stages in sequence on one item at a time (models loaded once, held by the stages)."""

    def __init__(self, models: Any, options: RestoreOptions | None = None) -> None:
        self.models = models
        self.options = options or RestoreOptions()
        self.stages = build_stages(models, self.options)

    def run(self, uri: str, data: bytes | None, *, name: str | None = None, out_dir: str | None = None,
            run_id: str | None = None) -> ItemState:
        state = ItemState.new(uri, data, self.options, name=name, out_dir=out_dir, run_id=run_id)
        return self.process(state)

    def process(self, state: ItemState) -> ItemState:
        """Run every stage on a prepared state (a state that already failed only gets its provenance.json)."""
        for stage in self.stages:
            state = run_stage(stage, state)
        return state
