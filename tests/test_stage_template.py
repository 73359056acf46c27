"""The one stage-running template (oldphoto.stages.base.Stage): every step recorded the same way, names and
statuses as str enums whose values are the strings provenance.json and the catalog have always held."""
from __future__ import annotations

import json

from oldphoto.pipeline import ItemState, RestoreOptions
from oldphoto.provenance import STAGE_NAMES, StageName, StageStatus
from oldphoto.stages.base import Stage, run_stage


class Probe(Stage):
    steps = (StageName.GLOBAL_RESTORATION,)

    def __init__(self, fail_in: str | None = None):
        super().__init__(None, RestoreOptions())
        self.fail_in = fail_in

    def process(self, state: ItemState) -> None:
        if self.fail_in == "outside":
            raise RuntimeError("boom")
        with self.step(state, self.name):
            if self.fail_in == "step":
                raise ValueError("bad input")


def item() -> ItemState:
    return ItemState.new("a.png", None, RestoreOptions())


def test_steps_are_recorded_done_failed_or_skipped_through_one_template():
    ok = run_stage(Probe(), item())
    [rec] = ok.provenance.stages
    assert (rec.name, rec.status, rec.error) == ("global_restoration", "done", None) and not ok.failed
    assert type(rec.name) is str and type(rec.status) is str and rec.started and rec.finished
    bad = run_stage(Probe("step"), item())
    assert bad.error == "global_restoration: bad input" == bad.provenance.error
    assert [(r.name, r.status, r.error) for r in bad.provenance.stages] == [("global_restoration", "failed", bad.error)]
    outside = run_stage(Probe("outside"), item())
    assert outside.error == "global_restoration: RuntimeError: boom"
    assert [(r.status, r.error) for r in outside.provenance.stages] == [("failed", outside.error)]
    assert run_stage(Probe(), bad).provenance.stages == bad.provenance.stages        # failed items pass through
    skipped = item()
    Stage.skip(skipped, StageName.BLENDING, "no faces found")
    assert [(r.name, r.status, r.error) for r in skipped.provenance.stages] == [("blending", "skipped", "no faces found")]
    assert json.loads(bad.provenance.to_json())["stages"][0]["status"] == "failed"


def test_names_and_statuses_keep_their_strings():
    assert STAGE_NAMES == ("load", "scratch_detection", "global_restoration", "face_detection", "face_enhancement",
                           "blending", "write")
    assert [s.value for s in StageStatus] == ["done", "failed", "skipped"]
    lost = item()
    lost.fail(StageName.WORKER_CRASHED, "the actor died")       # a failure outside any step: no stage record
    assert lost.error == "worker crashed: the actor died" and lost.provenance.stages == []
