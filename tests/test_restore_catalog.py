"""A restore run's provenance in the catalog matches its provenance.json, field by field."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from oldphoto.catalog import Catalog
from oldphoto.cli import app
from oldphoto.testing.random_weights import make_random_weights
from oldphoto.provenance import ItemProvenance

pytestmark = pytest.mark.timeout(600)


def test_catalog_provenance_matches_provenance_json(tmp_path: Path):
    from matplotlib import cbook

    weights = tmp_path / "w"
    make_random_weights(weights, seed=1, tiny=True)
    scans = tmp_path / "scans"
    scans.mkdir()
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        Image.open(f).convert("RGB").resize((256, 300)).save(scans / "grace.jpg", quality=92)
    (scans / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    url = f"sqlite:///{tmp_path / 'cat.sqlite'}"
    result = CliRunner().invoke(app, ["restore", str(scans), "--out", str(out), "--weights", str(weights),
                                      "--scratch", "on", "--catalog", url])
    assert result.exit_code == 1, result.output          # one of the two inputs is broken

    cat = Catalog(url)
    for name, status in (("grace", "done"), ("broken", "failed")):
        on_disk = ItemProvenance.from_json((out / name / "provenance.json").read_text())
        assert on_disk.status == status
        history = cat.item_history(on_disk.input.uri)
        assert len(history.attempts) == 1
        att = history.attempts[0]
        # the record as stored is the record as written
        assert att.provenance is not None and att.provenance.to_dict() == on_disk.to_dict()
        # and the catalog's own tables say the same
        assert history.item.sha256 == on_disk.input.sha256 and history.item.status == status
        assert att.status == status and att.error == on_disk.error and att.run_id == on_disk.run_id
        assert att.oldphoto_version == on_disk.oldphoto_version
        if on_disk.mask_coverage is None:
            assert att.mask_coverage is None
        else:
            assert att.mask_coverage == pytest.approx(on_disk.mask_coverage)
        assert [(s["stage"], s["status"]) for s in att.stages] == [(s.name, s.status) for s in on_disk.stages]
        for row, rec in zip(att.stages, on_disk.stages):
            assert row["seconds"] == pytest.approx(rec.seconds)
            assert [(c["name"], c["sha256"]) for c in row["checkpoints"]] == \
                   [(c.name, c.sha256) for c in rec.checkpoints]
        assert sorted((a["kind"], a["uri"], a["sha256"]) for a in att.artefacts) == \
               sorted((a.kind, a.uri, a.sha256) for a in on_disk.outputs)
        assert len(att.faces) == len(on_disk.faces)
        for row, rec in zip(att.faces, on_disk.faces):
            assert row["face_index"] == rec.index
            assert [row["left"], row["top"], row["right"], row["bottom"]] == rec.box
            assert np.allclose(row["landmarks"], rec.landmarks)

    grace = ItemProvenance.from_json((out / "grace" / "provenance.json").read_text())
    assert grace.checkpoints(), "a done item names the checkpoints it used"
    assert len(grace.faces) >= 1, "dlib finds Grace Hopper's face"
    # stage times are real clock times, in order, within the item's start and end; PREMIS events carry them
    from oldphoto.catalog.tables import parse_time

    times = [(parse_time(s.started), parse_time(s.finished)) for s in grace.stages if s.started]
    assert len(times) >= 4 and all(a <= b for a, b in times)
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(times, times[1:]))
    assert parse_time(grace.started) <= times[0][0] and times[-1][1] <= parse_time(grace.finished)
    events = cat.item_history(grace.input.uri).attempts[0].events
    ends = {parse_time(s.finished) for s in grace.stages if s.finished}
    assert all(e["date_time"] in ends for e in events if e["event_type"] != "message digest calculation")
    # the PREMIS record carries the same checkpoints as the provenance
    premis = cat.premis_xml(grace.input.uri)
    assert "<premis:originalName>grace.jpg</premis:originalName>" in premis
    # the tone transfer (on by default) changes pixels: its own event, with its parameters
    tone = [e for e in events if e["event_type"] == "modification"]
    assert len(tone) == 1 and "tone transfer" in tone[0]["detail"] and "sigma" in tone[0]["outcome_detail"]
    for ck in grace.checkpoints():
        assert ck.sha256 in premis
