"""Curator review in a real headless Chromium: three sample scans restored by the real `oldphoto restore` (shipped
weights, SQLite catalog), the review app served by uvicorn on 127.0.0.1, and a browser that opens the run,
filters, opens items, moves the slider, logs in, approves one, rejects one with a note and asks for a reprocess
of the third; then the catalog, the PREMIS record and the Parquet export show the decisions, and the queued
reprocess is run with the reviewer's options. Skipped when chromium / chromium-driver are not installed."""
from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import chromium, chromium_paths, free_port, serve  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCANS = REPO / "samples" / "scans"
SAMPLES = {"grace_hopper_portrait.jpg": "hopper.png", "chelsea the cat.jpg": "cat.png", "coffee_cup.jpg": "cup.png"}
SIDE = 192

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(chromium_paths() is None, reason="needs chromium and chromium-driver (apt-get)")]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("OLDPHOTO_CATALOG", None)
    return subprocess.run([sys.executable, "-c", "from oldphoto.cli import main; main()", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def restored(tmp_path_factory):
    """Three small scans restored by `oldphoto restore` into DEST, recorded in a SQLite catalog."""
    from PIL import Image

    root = tmp_path_factory.mktemp("review")
    src, dest = root / "scans", root / "dest"
    src.mkdir()
    for name, out in SAMPLES.items():
        im = Image.open(SCANS / name)
        im.thumbnail((SIDE, SIDE))
        im.save(src / out)
    url = f"sqlite:///{root / 'catalog.sqlite'}"
    r = _cli("restore", str(src), "--out", str(dest), "--catalog", url)
    assert r.returncode == 0, r.stdout + r.stderr
    return root, dest, url


def _wait(driver, cond, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(cond)


def _cards(driver) -> dict[str, str]:
    from selenium.webdriver.common.by import By

    return {c.get_attribute("data-name"): c.get_attribute("href") for c in driver.find_elements(By.CSS_SELECTOR, ".card")}


def _post(url: str, body: str, cookie: str | None) -> int:
    req = urllib.request.Request(url, data=body.encode(), method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded",
                                          **({"Cookie": cookie} if cookie else {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def test_curator_reviews_a_run_in_chromium(restored, tmp_path):
    import pyarrow.parquet as pq
    from lxml import etree
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select

    from oldphoto.catalog import Catalog
    from oldphoto.catalog import review as rq
    from premis_check import validate_premis
    from oldphoto.review.app import create_app
    from oldphoto.review.auth import COOKIE, Sessions, hash_password

    root, dest, url = restored
    cat = Catalog(url)
    (run,) = cat.runs()
    truth = {r.name: r for r in rq.grid(cat, rq.GridFilter(run_id=run.id, sort="name")).rows}
    assert set(truth) == {"hopper", "cat", "cup"} and all(r.status == "done" for r in truth.values())
    with_faces = {n for n, r in truth.items() if r.n_faces > 0}
    scratch = {n for n, r in truth.items() if r.scratch_path}
    assert with_faces, "the portrait should have a face"

    # a bound to 0.0.0.0 without reviewers refuses to start (read-only without credentials only on localhost)
    with pytest.raises(ValueError, match="OLDPHOTO_REVIEWERS"):
        create_app(cat, host="0.0.0.0", sessions=Sessions(reviewers={}))

    sessions = Sessions(reviewers={"alice": hash_password("correct horse", 2000)})
    port = free_port()
    app = create_app(cat, host="127.0.0.1", port=port, sessions=sessions)
    with serve(app, port) as base, chromium(tmp_path / "profile") as d:
        # runs list -> the run's grid
        d.get(base + "/runs")
        assert run.id[:12] in d.find_element(By.ID, "runs").text
        d.find_element(By.CSS_SELECTOR, "a.run-link").click()
        _wait(d, EC.presence_of_element_located((By.ID, "grid")))
        assert set(_cards(d)) == {"hopper", "cat", "cup"}
        assert f"{len(truth)} result(s)" in d.find_element(By.ID, "count").text
        thumbs = d.find_elements(By.CSS_SELECTOR, ".card img")
        _wait(d, lambda drv: all(drv.execute_script("return arguments[0].complete && arguments[0].naturalWidth", t)
                                 for t in thumbs))
        # the grid is in "needs a look" order: scores never increase down the page
        scores = [float(s.text) for s in d.find_elements(By.CSS_SELECTOR, ".card .score")]
        assert scores == sorted(scores, reverse=True)

        # filters (selects apply on change): faces found, then the scratch path
        Select(d.find_element(By.ID, "f-faces")).select_by_visible_text("any")
        _wait(d, lambda drv: "faces=any" in drv.current_url)
        assert set(_cards(d)) == with_faces
        Select(d.find_element(By.ID, "f-faces")).select_by_value("")
        _wait(d, lambda drv: "faces=any" not in drv.current_url)
        Select(d.find_element(By.ID, "f-scratch")).select_by_value("yes")
        _wait(d, lambda drv: "scratch=yes" in drv.current_url)
        assert set(_cards(d)) == scratch
        Select(d.find_element(By.ID, "f-scratch")).select_by_value("")
        _wait(d, lambda drv: "scratch=yes" not in drv.current_url)
        cards = _cards(d)
        assert set(cards) == {"hopper", "cat", "cup"}

        # open an item (read only: no decision buttons yet); both full-size images load, the slider moves the split
        d.find_element(By.CSS_SELECTOR, '.card[data-name="cup"]').click()
        _wait(d, EC.presence_of_element_located((By.ID, "slider")))
        assert d.find_element(By.ID, "item-name").text.startswith("cup")
        assert not d.find_elements(By.ID, "approve") and d.find_elements(By.ID, "login-link")
        for img in ("after", "before"):
            _wait(d, lambda drv, img=img: drv.execute_script(
                f"var i = document.getElementById('{img}'); return i.complete && i.naturalWidth"))
        w, h = d.execute_script("var i = document.getElementById('after'); return [i.naturalWidth, i.naturalHeight]")
        assert max(w, h) == SIDE
        clip = d.find_element(By.ID, "before-clip")
        assert "50%" in clip.get_attribute("style")
        slider = d.find_element(By.ID, "slider")
        ActionChains(d).click_and_hold(slider).move_by_offset(-80, 0).release().perform()
        moved = int(slider.get_attribute("value"))
        assert moved < 50
        assert f"inset(0px {100 - moved}% 0px 0px)" in clip.get_attribute("style") or \
            f"inset(0 {100 - moved}% 0 0)" in clip.get_attribute("style")
        # zoom to 200 %: the stage is twice the image's pixel width; mask overlay toggles
        d.find_element(By.ID, "zoom-2").click()
        assert d.execute_script("return document.getElementById('stage').getBoundingClientRect().width") == pytest.approx(2 * w, abs=1)
        d.find_element(By.ID, "zoom-fit").click()
        mask = d.find_element(By.ID, "mask")
        assert not mask.is_displayed()
        d.find_element(By.ID, "mask-toggle").click()
        assert mask.is_displayed()
        # the provenance: every stage with its checkpoints, the PREMIS events
        stages = d.find_element(By.ID, "stages").text
        assert "global_restoration" in stages and "vae_a" in stages
        assert "information package creation" in d.find_element(By.ID, "events").text

        # log in (wrong password first), back to the item
        item_url = d.current_url
        d.get(base + "/login?next=" + item_url[len(base):].split("?")[0])
        d.find_element(By.ID, "name").send_keys("alice")
        d.find_element(By.ID, "password").send_keys("wrong")
        d.find_element(By.ID, "login-submit").click()
        assert "wrong password" in _wait(d, EC.presence_of_element_located((By.ID, "login-error"))).text
        d.find_element(By.ID, "name").send_keys("alice")
        d.find_element(By.ID, "password").send_keys("correct horse")
        d.find_element(By.ID, "login-submit").click()
        _wait(d, EC.presence_of_element_located((By.ID, "approve")))
        assert d.find_element(By.ID, "reviewer").text == "alice"

        # a forged POST (the session cookie, no valid CSRF token) is refused and records nothing
        cookie = f"{COOKIE}={d.get_cookie(COOKIE)['value']}"
        cup_item = truth["cup"].item_id
        assert _post(f"{base}/item/{cup_item}/decide", "decision=approved&csrf=forged", cookie) == 403
        assert _post(f"{base}/item/{cup_item}/decide", "decision=approved", None) == 403
        assert rq.decisions(cat, cup_item) == []

        # reprocess the cup: scratch off, no faces
        Select(d.find_element(By.ID, "rp-scratch")).select_by_value("off")
        assert not d.find_element(By.ID, "rp-faces").is_selected()
        d.find_element(By.ID, "rp-structure").click()      # unticked: the reprocess runs without structure return
        d.find_element(By.ID, "reprocess").click()
        assert "reprocess" in _wait(d, EC.presence_of_element_located((By.ID, "flash"))).text
        assert "alice" in d.find_element(By.ID, "decisions").text

        # approve the cat, reject the portrait with a note (via the grid, filtered on not reviewed)
        d.get(base + f"/items?run={run.id}&reviewed=no")
        assert set(_cards(d)) == {"hopper", "cat"}
        d.find_element(By.CSS_SELECTOR, '.card[data-name="cat"]').click()
        _wait(d, EC.element_to_be_clickable((By.ID, "approve"))).click()
        assert "approved" in _wait(d, EC.presence_of_element_located((By.ID, "flash"))).text
        d.find_element(By.ID, "back").click()
        _wait(d, EC.presence_of_element_located((By.ID, "grid")))
        assert set(_cards(d)) == {"hopper"}
        d.find_element(By.CSS_SELECTOR, '.card[data-name="hopper"]').click()
        if d.find_elements(By.ID, "faces"):
            assert d.find_elements(By.CSS_SELECTOR, "#faces img")
        d.find_element(By.ID, "reject-note").send_keys("face looks waxy; keep the scan")
        d.find_element(By.ID, "reject").click()
        assert "rejected" in _wait(d, EC.presence_of_element_located((By.ID, "flash"))).text
        assert "appraisal" in d.find_element(By.ID, "events").text
        d.get(base + f"/items?run={run.id}&reviewed=no")
        assert _cards(d) == {}
        d.get(base + f"/items?run={run.id}&reviewed=rejected")
        assert set(_cards(d)) == {"hopper"}
        d.get(base + "/runs")
        assert "3" in d.find_element(By.CSS_SELECTOR, "#runs tbody tr").text

    # the catalog: one decision per item, by alice, on the reviewed result; the reprocess is queued
    got = {n: rq.decisions(cat, truth[n].item_id) for n in truth}
    assert {n: [x.decision for x in v] for n, v in got.items()} == {"hopper": ["rejected"], "cat": ["approved"],
                                                                    "cup": ["reprocess"]}
    assert all(v[0].reviewer == "alice" and v[0].result_id == truth[n].result_id and v[0].run_id == run.id
               for n, v in got.items())
    assert got["hopper"][0].note == "face looks waxy; keep the scan"
    (queued,) = rq.reprocess_queue(cat)
    assert queued["item_id"] == truth["cup"].item_id
    assert queued["options"] == {"scratch": "off", "faces": False, "tone_match": True, "colour_correct": True,
                                 "structure_return": False, "refine": True}
    # review images were made once, in DEST beside the outputs
    for n, r in truth.items():
        assert (dest / n / "_review" / f"r{r.result_id}" / "thumb.jpg").is_file()
        assert (dest / n / "_review" / f"r{r.result_id}" / "after.jpg").is_file()

    # PREMIS: an appraisal event with alice (a person) as agent, the note as outcome detail; still valid
    xml = cat.premis_xml(truth["hopper"].item_id)
    root = etree.fromstring(xml.encode())
    assert validate_premis(root) == []
    ns = {"p": "http://www.loc.gov/premis/v3"}
    (ev,) = [e for e in root.iterfind("p:event", ns) if e.findtext("p:eventType", namespaces=ns) == "appraisal"]
    assert ev.findtext("p:eventOutcomeInformation/p:eventOutcome", namespaces=ns) == "rejected"
    assert "waxy" in ev.findtext("p:eventOutcomeInformation/p:eventOutcomeDetail/p:eventOutcomeDetailNote",
                                 namespaces=ns)
    assert ev.findtext("p:linkingAgentIdentifier/p:linkingAgentIdentifierValue", namespaces=ns) == "reviewer:alice"
    (agent,) = [a for a in root.iterfind("p:agent", ns) if a.findtext("p:agentType", namespaces=ns) == "person"]
    assert agent.findtext("p:agentName", namespaces=ns) == "alice"

    # the Parquet export carries each item's decision
    r = _cli("catalog", "export", "--parquet", str(tmp_path / "export.parquet"), "--catalog", url)
    assert r.returncode == 0, r.stderr
    rows = {x["name"]: x for x in pq.read_table(tmp_path / "export.parquet").to_pylist()}
    assert {n: rows[n]["review_decision"] for n in truth} == {"hopper": "rejected", "cat": "approved",
                                                              "cup": "reprocess"}
    assert rows["hopper"]["review_note"] == "face looks waxy; keep the scan" and rows["cat"]["reviewer"] == "alice"
    assert rows["cup"]["reprocess_state"] == "queued" and '"scratch": "off"' in rows["cup"]["review_options"]

    # the queued request is run with the reviewer's options, as a new run; the queue is then empty
    r = _cli("review", "reprocess", "--catalog", url)
    assert r.returncode == 0, r.stdout + r.stderr
    assert rq.reprocess_queue(cat) == []
    (done,) = rq.reprocess_queue(cat, "done")
    new_run = cat.run(done["queue_run_id"])
    assert new_run.parameters["scratch"] == "off" and new_run.parameters["faces"] is False
    assert new_run.n_done == 1
    hist = cat.item_history(truth["cup"].item_id)
    assert [a.run_id for a in hist.attempts] == [run.id, new_run.id]
    assert not any(s["stage"] == "scratch_detection" and s["status"] == "done" for s in hist.attempts[-1].stages)
    cat.close()
