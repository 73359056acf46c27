"""The restoration stages, one module each; every runner (CLI, Ray, Prefect) uses these same classes.

    DecodeStage → ScratchDetectionStage → GlobalRestorationStage → FaceStage → EncodeStage

Importing them fixes glibc's mmap threshold (`oldphoto.stages.heap`), so freed full-size buffers leave memory.
"""
from oldphoto.stages.heap import fix_mmap_threshold

fix_mmap_threshold()

from oldphoto.stages.base import (AUTO_SCRATCH_MIN_COVERAGE, SCRATCH_THRESHOLD, FaceResult, ItemState,
                                  RestoreOptions, Stage)
from oldphoto.stages.decode import DecodeStage
from oldphoto.stages.encode import EncodeStage
from oldphoto.stages.faces import FaceStage
from oldphoto.stages.restore_global import GlobalRestorationStage
from oldphoto.stages.scratch import ScratchDetectionStage

__all__ = ["AUTO_SCRATCH_MIN_COVERAGE", "SCRATCH_THRESHOLD", "DecodeStage", "EncodeStage", "FaceResult",
           "FaceStage", "GlobalRestorationStage", "ItemState", "RestoreOptions",
           "ScratchDetectionStage", "Stage"]
