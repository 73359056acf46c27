"""Curator review without a browser: the review queries (score order, filters, pages, reviewed per result),
decisions and the reprocess queue on SQLite and on a real throw-away PostgreSQL; reviewer secrets, sessions and
CSRF tokens; the access rules of the served app over real HTTP (uvicorn on 127.0.0.1)."""
from __future__ import annotations

import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import free_port, serve  # noqa: E402

from oldphoto.catalog import Catalog  # noqa: E402
from oldphoto.catalog import review as rq  # noqa: E402
from oldphoto.provenance import (STAGE_NAMES, ArtefactRecord, CheckpointRef, FaceRecord, InputRecord,  # noqa: E402
                                 ItemProvenance, StageRecord)
from oldphoto.review import auth  # noqa: E402

SCRATCH_CKS = [CheckpointRef("vae_a", "vae_a.safetensors", "a" * 64),
               CheckpointRef("vae_b_scratch", "vae_b_scratch.safetensors", "b" * 64)]
QUALITY_CKS = [CheckpointRef("vae_a", "vae_a.safetensors", "a" * 64),
               CheckpointRef("vae_b_quality", "vae_b_quality.safetensors", "d" * 64)]


def prov(name: str, coverage: float | None = None, kept: int = 0, replaced: int = 0, failed: bool = False,
         scratch: bool = False) -> ItemProvenance:
    stages = [StageRecord(n, "done", 0.1, "cpu", (SCRATCH_CKS if scratch else QUALITY_CKS)
                          if n == "global_restoration" else []) for n in STAGE_NAMES]
    if failed:
        stages = stages[:2] + [StageRecord("global_restoration", "failed", 0.1, "cpu", [], "out of memory")]
    faces = [FaceRecord(k + 1, [0, 0, 10, 10], 0.9, [], "restored", applied=k >= kept, reason="r")
             for k in range(kept + replaced)]
    out = f"file:///out/{name}"
    return ItemProvenance(
        input=InputRecord(f"file:///scans/{name}.png", name, uuid.uuid4().hex * 2, 100, 10, 10, "RGB", "PNG"),
        status="failed" if failed else "done", error="out of memory" if failed else None, stages=stages,
        outputs=[] if failed else [ArtefactRecord("restored", f"{out}/restored.png", "1" * 64, 10)],
        faces=[] if failed else faces, mask_coverage=None if failed else coverage)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def cat(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    else:
        url = request.getfixturevalue("pg_server").create_schema(f"r_{uuid.uuid4().hex[:12]}")
    c = Catalog(url)
    c.upgrade()
    yield c
    c.close()


@pytest.fixture
def run(cat):
    run_id = cat.start_run({"destination": "/out"})
    cat.record_many([prov("plain", 0.0), prov("scratched", 0.03, scratch=True), prov("light", 0.005, scratch=True),
                     prov("kept2", 0.0, kept=2), prov("kept1", 0.0, kept=1, replaced=1),
                     prov("replaced", 0.0, replaced=1), prov("broken", failed=True)], run_id)
    cat.finish_run(run_id)
    return run_id


def names(page: rq.GridPage) -> list[str]:
    return [r.name for r in page.rows]


def test_score_order_and_filters(cat, run):
    page = rq.grid(cat, rq.GridFilter(run_id=run))
    assert page.total == 7
    # failed 100; coverage 3 % -> 40; two faces kept -> 30; one kept -> 15; 0.5 % -> 10; nothing noticed -> 0
    assert names(page)[:5] == ["broken", "scratched", "kept2", "kept1", "light"]
    scores = {r.name: r.score for r in page.rows}
    assert scores["broken"] == pytest.approx(100) and scores["scratched"] == pytest.approx(40)
    assert scores["kept2"] == pytest.approx(30) and scores["light"] == pytest.approx(10) and scores["plain"] == 0
    assert scores == {n: pytest.approx(rq.score_of("failed" if n == "broken" else "done", r.mask_coverage,
                                                   r.faces_kept, None)) for n, r in {x.name: x for x in page.rows}.items()}
    f = lambda **k: set(names(rq.grid(cat, rq.GridFilter(run_id=run, **k))))  # noqa: E731
    assert f(status="failed") == {"broken"}
    assert f(scratch="yes") == {"scratched", "light"}
    assert f(scratch="no") == {"plain", "kept2", "kept1", "replaced", "broken"}
    assert f(coverage_min=0.01) == {"scratched"}
    assert f(coverage_min=0.001, coverage_max=0.01) == {"light"}
    assert f(faces="any") == {"kept2", "kept1", "replaced"}
    assert f(faces="kept") == {"kept2", "kept1"}
    assert f(faces="replaced") == {"kept1", "replaced"}
    assert f(faces="none") == {"plain", "scratched", "light", "broken"}
    assert names(rq.grid(cat, rq.GridFilter(run_id=run, sort="name")))[:2] == ["broken", "kept1"]
    assert names(rq.grid(cat, rq.GridFilter(run_id=run, sort="coverage")))[:2] == ["scratched", "light"]
    # server-side pages
    p2 = rq.grid(cat, rq.GridFilter(run_id=run, per_page=3, page=2))
    assert p2.total == 7 and p2.pages == 3 and names(p2) == names(page)[3:6]
    with pytest.raises(rq.ReviewError):
        rq.grid(cat, rq.GridFilter(sort="random"))


def test_decisions_are_per_result_and_queue_reprocess(cat, run):
    rows = {r.name: r for r in rq.grid(cat, rq.GridFilter(run_id=run)).rows}
    with pytest.raises(rq.ReviewError, match="note"):
        rq.record_decision(cat, rows["plain"].item_id, None, "rejected", "alice", "  ")
    with pytest.raises(rq.ReviewError, match="not allowed"):
        rq.record_decision(cat, rows["plain"].item_id, None, "reprocess", "alice", options={"tile": 64})
    with pytest.raises(rq.ReviewError, match="decision"):
        rq.record_decision(cat, rows["plain"].item_id, None, "maybe", "alice")
    with pytest.raises(rq.ReviewError, match="no result"):      # a result of another item
        rq.record_decision(cat, rows["plain"].item_id, rows["kept1"].result_id, "approved", "alice")
    assert cat.table_counts()["review_decisions"] == 0

    d = rq.record_decision(cat, rows["plain"].item_id, None, "approved", "alice")
    assert (d.result_id, d.run_id, d.queue_state) == (rows["plain"].result_id, run, None)
    q = rq.record_decision(cat, rows["scratched"].item_id, None, "reprocess", "bob", "try without",
                           {"scratch": "off", "faces": False})
    assert q.queue_state == "queued"
    assert set(names(rq.grid(cat, rq.GridFilter(run_id=run, reviewed="yes")))) == {"plain", "scratched"}
    assert names(rq.grid(cat, rq.GridFilter(run_id=run, reviewed="reprocess"))) == ["scratched"]
    assert len(names(rq.grid(cat, rq.GridFilter(run_id=run, reviewed="no")))) == 5
    (ev,) = [e for e in cat.item_history(rows["scratched"].item_id).attempts[0].events if e["event_type"] == "appraisal"]
    assert (ev["agent_name"], ev["agent_type"], ev["outcome"]) == ("bob", "person", "reprocess")
    assert "try without" in ev["outcome_detail"] and '"scratch": "off"' in ev["outcome_detail"]
    assert ev["identifier"] == q.event_identifier

    # taking a request is exclusive; done records the run
    assert rq.set_queue_state(cat, [q.id], "taken", run_id="r2", expect="queued") == 1
    assert rq.set_queue_state(cat, [q.id], "taken", run_id="r3", expect="queued") == 0
    assert rq.reprocess_queue(cat) == [] and rq.reprocess_queue(cat, "taken")[0]["queue_run_id"] == "r2"

    # a new run re-records "plain": its latest result is not reviewed, the old decision stays on the old result
    run2 = cat.start_run({"destination": "/out"}, fingerprint="f2")
    cat.record(prov("plain", 0.0), run2)
    latest = {r.name: r for r in rq.grid(cat, rq.GridFilter()).rows}
    assert latest["plain"].run_id == run2 and latest["plain"].decision is None
    review = rq.item_review(cat, rows["plain"].item_id)
    assert review.run_id == run2 and [x.result_id for x in review.decisions] == [rows["plain"].result_id]

    runs = {r.id: r for r in rq.runs_overview(cat)}
    assert runs[run].reviewed == 2 and runs[run].n_items == 7 and runs[run2].reviewed == 0
    assert any(w.startswith("vae_a") for w in runs[run].weights)


def test_reviewer_secrets_sessions_and_csrf(monkeypatch):
    spec = auth.hash_password("s3cret", iterations=1000)
    assert spec.startswith("pbkdf2_sha256$1000$") and "s3cret" not in spec
    assert auth.verify(spec, "s3cret") and not auth.verify(spec, "s3cret ")
    import hashlib

    token = "x" * 40
    reviewers = auth.parse_reviewers(f" alice:{spec} ; bob:sha256${hashlib.sha256(token.encode()).hexdigest()}; ")
    assert set(reviewers) == {"alice", "bob"}
    with pytest.raises(auth.AuthError, match="never given in clear"):
        auth.parse_reviewers("carol:hunter2")
    s = auth.Sessions(key=b"k" * 32, reviewers=reviewers)
    assert s.login("alice", "s3cret") and s.login("bob", token) and not s.login("bob", "s3cret")
    assert not s.login("mallory", "s3cret")
    sess, cookie = s.new("alice")
    assert s.decode(cookie) == sess
    name, nonce, exp, sig = cookie.split(".")
    forged = ".".join([auth.base64.urlsafe_b64encode(b"bob").decode().rstrip("="), nonce, exp, sig])
    assert s.decode(forged) is None                                 # the signature covers the name
    assert auth.Sessions(key=b"other" * 8, reviewers=reviewers).decode(cookie) is None
    assert s.check_csrf(sess, s.csrf(sess)) and not s.check_csrf(sess, "x") and not s.check_csrf(sess, None)
    other, _ = s.new("alice")
    assert not s.check_csrf(other, s.csrf(sess))                    # a token is bound to its session
    monkeypatch.setenv(auth.ENV_REVIEWERS, f"alice:{spec}")
    assert set(auth.Sessions().reviewers) == {"alice"}


def _get(url: str, host: str | None = None) -> tuple[int, str]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=30) as r:
            return r.status, r.headers.get("location") or ""
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("location") or ""


def test_access_rules_over_http(tmp_path):
    from oldphoto.review.app import create_app

    cat = Catalog(f"sqlite:///{tmp_path / 'c.sqlite'}")
    cat.upgrade()
    reviewers = {"alice": auth.hash_password("pw", 1000)}
    with pytest.raises(ValueError, match="OLDPHOTO_REVIEWERS"):
        create_app(cat, host="192.0.2.1", sessions=auth.Sessions(reviewers={}))
    run = cat.start_run({"destination": "/out"})
    cat.record(prov("plain", 0.0), run)
    item_id = rq.grid(cat, rq.GridFilter()).rows[0].item_id
    # local: read without credentials (no decision forms); a foreign Host header (DNS rebinding) is refused
    port = free_port()
    with serve(create_app(cat, host="127.0.0.1", port=port, sessions=auth.Sessions(reviewers=reviewers)), port) as base:
        assert _get(base + "/items")[0] == 200 and _get(base + "/runs")[0] == 200
        assert _get(base + "/items", host=f"evil.example:{port}")[0] == 400
        with urllib.request.urlopen(f"{base}/item/{item_id}?back=javascript:alert(1)", timeout=30) as r:
            html = r.read().decode()
        assert 'href="/runs" id="back"' in html and "javascript:" not in html
        assert 'id="approve"' not in html and "Log in" in html
        assert _get(f"{base}/item/{item_id}?result=999")[0] == 400
        assert _get(f"{base}/img/999/thumb")[0] == 400 and _get(f"{base}/img/1/passwd")[0] == 404
    # any other address: every page needs a login
    port = free_port()
    with serve(create_app(cat, host="0.0.0.0", port=port, sessions=auth.Sessions(reviewers=reviewers)), port) as base:
        status, location = _get(base + "/items")
        assert status == 303 and location.startswith("/login?next=/items")
        assert _get(base + "/login")[0] == 200
    cat.close()
