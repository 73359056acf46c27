"""The SQL catalog on SQLite and on a real throw-away PostgreSQL: migrations, model/migration drift, recording
(idempotent, batched, concurrent), queries, Parquet and PREMIS exports, CLI."""
from __future__ import annotations

import multiprocessing as mp
import sqlite3
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from lxml import etree
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url

from catalog_data import CK_MAP, CK_VAE, make_prov, writer
from premis_check import validate_premis

from oldphoto.catalog import Catalog, CatalogError, fingerprint
from oldphoto.catalog.tables import metadata
from oldphoto.catalog.premis import PREMIS_NS, events_for
from oldphoto.provenance import STAGE_NAMES

CATALOG_TABLES = {"collections", "runs", "items", "item_results", "stage_results", "stage_checkpoints", "artefacts",
                  "masks", "faces", "events"}
# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    srv = request.getfixturevalue("pg_server")
    return srv.create_schema(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def cat(url):
    c = Catalog(url)
    c.upgrade()
    yield c
    c.close()


# ------------------------------------------------------------------------------------------------ schema
def test_migrations_upgrade_empty_database_and_downgrade_cleanly(url):
    c = Catalog(url)
    assert c.current_revision() is None
    with pytest.raises(CatalogError, match="catalog init"):
        c.status_counts()
    assert c.upgrade() == c.head_revision() == "0004"
    eng = create_engine(c.url)
    try:
        assert CATALOG_TABLES <= set(inspect(eng).get_table_names())
        uniques = {tuple(u["column_names"]) for u in inspect(eng).get_unique_constraints("items")}
        assert ("collection_id", "source_uri") in uniques
        assert c.upgrade() == "0004"                       # idempotent
        assert c.downgrade("base") is None
        assert set(inspect(eng).get_table_names()) & CATALOG_TABLES == set()
        assert c.upgrade() == "0004"                       # and back up again
        run = c.start_run({"p": 1})
        c.record(make_prov(1), run)
        assert c.status_counts()["done"] == 1
    finally:
        eng.dispose()
        c.close()


def test_concurrent_upgrades_of_an_empty_database(url):
    import threading

    cats = [Catalog(url) for _ in range(3)]
    results, errors = [], []
    go = threading.Barrier(len(cats))

    def up(c):
        try:
            go.wait(30)
            results.append(c.upgrade())
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=up, args=(c,)) for c in cats]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and results == ["0004"] * 3
    assert cats[0].table_counts()["collections"] == 1
    for c in cats:
        c.close()


def test_tables_and_migrations_do_not_drift(cat):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with cat.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diffs == []


def test_sqlite_uses_wal_and_busy_timeout(tmp_path):
    c = Catalog(f"sqlite:///{tmp_path / 'c.sqlite'}")
    c.upgrade()
    with c.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000
    c.close()


def test_alembic_ini_points_at_the_packaged_migrations():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    ini = Path(__file__).resolve().parents[1] / "db" / "alembic.ini"
    script = ScriptDirectory.from_config(Config(str(ini)))
    assert script.get_current_head() == "0004"
    assert Path(script.dir).resolve() == (Path(__file__).resolve().parents[1] / "oldphoto/catalog/migrations").resolve()


def test_clear_errors_for_bad_urls_and_unknown_runs(tmp_path, cat):
    with pytest.raises(CatalogError, match="does not exist"):
        Catalog(f"sqlite:///{tmp_path / 'missing' / 'c.sqlite'}")
    with pytest.raises(CatalogError, match="unsupported"):
        Catalog("mysql://x@y/z")
    with pytest.raises(CatalogError, match="unknown run"):
        cat.record(make_prov(1), "no-such-run")
    with pytest.raises(CatalogError, match="no item"):
        cat.item_history("file:///nowhere.tif")
    with pytest.raises(CatalogError, match="unknown status"):
        cat.items(status="lost")
    run = cat.start_run({})
    bad = make_prov(1)
    bad.status = "finished"
    with pytest.raises(CatalogError, match="not one of"):
        cat.record(bad, run)
    assert cat.table_counts()["items"] == 0                          # nothing half-written


def test_urls_are_normalised_and_passwords_hidden():
    from oldphoto.catalog.store import normalise_url

    assert normalise_url("postgresql://u:pw@h/db") == "postgresql+psycopg://u:pw@h/db"
    assert normalise_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("sqlite:///x.sqlite") == "sqlite:///x.sqlite"
    c = Catalog("postgresql://museum:secret@127.0.0.1:1/none")
    assert "secret" not in repr(c) and "museum" in repr(c)
    with pytest.raises(CatalogError, match="cannot open the catalog") as e:
        c.current_revision()
    assert "secret" not in str(e.value)
    c.close()


# ------------------------------------------------------------------------------------------------ recording
def test_record_and_query_items_and_history(cat):
    run = cat.start_run({"scratch": "auto"}, flow_run_id="flow-123")
    provs = [make_prov(0), make_prov(1, faces=2), make_prov(2, "failed"), make_prov(3, "skipped")]
    assert cat.record_many(provs, run) == 4
    assert cat.status_counts() == {"pending": 0, "running": 0, "done": 2, "failed": 1, "skipped": 1}

    failed = cat.failed_items()
    assert [f.source_uri for f in failed] == [provs[2].input.uri]
    assert failed[0].last_error == "boom in global_restoration of 2" and failed[0].attempts == 1
    assert cat.items(status="failed") == failed
    assert len(cat.items()) == 4
    assert cat.items(since=datetime.now(timezone.utc) + timedelta(hours=1)) == []
    assert len(cat.items(since="2000-01-01")) == 4

    info = cat.item(provs[1].input.uri)
    assert (info.sha256, info.bytes, info.width, info.height, info.mode, info.format, info.status) == \
        (provs[1].input.sha256, 10_001, 801, 600, "L", "TIFF", "done")
    assert cat.item(info.id) == info and cat.item(str(info.id)) == info and cat.item(info.sha256) == info

    h = cat.item_history(provs[1].input.uri)
    assert len(h.attempts) == 1
    a = h.attempts[0]
    assert a.run_id == run and a.flow_run_id == "flow-123" and a.status == "done"
    assert a.started == datetime(2026, 11, 21, 22, 0, tzinfo=timezone.utc)
    assert a.seconds == pytest.approx(0.25 * len(STAGE_NAMES))
    assert [s["stage"] for s in a.stages] == list(STAGE_NAMES)
    glob = next(s for s in a.stages if s["stage"] == "global_restoration")
    assert [(c["name"], c["sha256"]) for c in glob["checkpoints"]] == [("vae_a", "a" * 64), ("mapping_quality", "b" * 64)]
    assert {x["kind"] for x in a.artefacts} == {"restored", "mask", "review", "provenance", "face_after"}
    assert [(f["face_index"], f["left"], f["right"]) for f in a.faces] == [(1, 10, 60), (2, 20, 70)]
    # the do-no-harm decision of each face is a column, so curators can filter on it
    assert [(f["applied"], f["reason"], f["agreement_db"], f["detected_on"]) for f in a.faces] == \
        [(True, "face 1", 21.0, "restored"), (False, "face 2", 22.0, "restored")]
    assert a.mask_coverage == pytest.approx(0.0125)
    expected = provs[1].to_dict()
    expected["run_id"] = run
    assert a.provenance.to_dict() == expected                         # the record comes back verbatim
    assert len(a.events) == len(events_for(provs[1], run, datetime.now(timezone.utc)))

    f = cat.item_history(provs[2].input.uri).attempts[0]
    assert f.error == "boom in global_restoration of 2"
    assert [s["status"] for s in f.stages] == ["done", "done", "failed"]
    assert f.artefacts == [] and f.mask_coverage is None

    done = cat.finish_run(run)
    assert (done.n_items, done.n_done, done.n_failed, done.n_skipped) == (4, 2, 1, 1)
    assert done.finished is not None and done.parameters == {"scratch": "auto"}
    assert cat.status_counts(run_id=run)["done"] == 2


def test_record_is_idempotent_per_item_run_and_stage(cat):
    run = cat.start_run({})
    p = make_prov(7, faces=3)
    for _ in range(3):
        cat.record(p, run)
    once = cat.table_counts()
    assert once["items"] == 1 and once["item_results"] == 1 and once["stage_results"] == len(STAGE_NAMES)
    assert once["faces"] == 3 and once["artefacts"] == 7
    # re-recording the same item/run with a different outcome updates in place
    p2 = make_prov(7, "failed", fail_stage="scratch_detection")
    cat.record(p2, run)
    after = cat.table_counts()
    assert after["items"] == 1 and after["item_results"] == 1
    assert after["stage_results"] == 2 and after["faces"] == 0 and after["artefacts"] == 0
    h = cat.item_history(p.input.uri)
    assert h.item.status == "failed" and h.item.attempts == 1 and len(h.attempts) == 1
    assert h.attempts[0].stages[-1]["error"] == "boom in scratch_detection of 7"
    # a batch holding the same item twice keeps the last
    cat.record_many([make_prov(7), p2, make_prov(8)], run)
    assert cat.table_counts()["item_results"] == 2
    assert cat.item(p.input.uri).status == "failed"


def test_rescan_with_changed_bytes_is_a_new_version_and_attempt(cat):
    r1, r2 = cat.start_run({"n": 1}), cat.start_run({"n": 2})
    cat.record(make_prov(5), r1)
    cat.record(make_prov(5, sha="e" * 64), r2)
    info = cat.item(make_prov(5).input.uri)
    assert info.version == 2 and info.attempts == 2 and info.sha256 == "e" * 64 and info.last_run_id == r2
    h = cat.item_history(info.id)
    assert [a.input["sha256"] for a in h.attempts] == [f"{5:064x}", "e" * 64]
    assert [a.run_id for a in h.attempts] == [r1, r2]
    cat.record(make_prov(5, sha="e" * 64), r2)                      # same bytes again: no new version
    assert cat.item(info.id).version == 2


def test_is_done_matches_input_bytes_and_fingerprint(cat):
    fp1 = fingerprint({"scratch": "auto"}, [CK_VAE, CK_MAP])
    fp2 = fingerprint({"scratch": "on"}, [CK_VAE, CK_MAP])
    assert fp1 == fingerprint({"scratch": "auto"}, [("mapping_quality", "b" * 64), ("vae_a", "a" * 64)])
    assert fp1 != fp2 != fingerprint({"scratch": "auto"}, [CK_VAE])
    run = cat.start_run({"scratch": "auto"}, fingerprint=fp1)
    cat.record_many([make_prov(1), make_prov(2, "failed")], run)
    assert cat.is_done(f"{1:064x}", fp1)
    assert not cat.is_done(f"{1:064x}", fp2)                       # other weights/parameters: redo
    assert not cat.is_done(f"{2:064x}", fp1)                       # failed: redo
    assert not cat.is_done("f" * 64, fp1)                          # never seen
    assert cat.done_set([f"{1:064x}", f"{2:064x}", "f" * 64], fp1) == {f"{1:064x}"}
    # default fingerprint = parameters alone
    r2 = cat.start_run({"x": 1})
    cat.record(make_prov(3), r2)
    assert cat.is_done(f"{3:064x}", fingerprint({"x": 1}))


def test_claimed_items_run_then_done(cat):
    provs = [make_prov(i) for i in range(5)]
    run = cat.start_run({})
    assert cat.claim([(p.input.uri, p.input.name) for p in provs[:3]], run) == {p.input.uri for p in provs[:3]}
    c = cat.status_counts()
    assert (c["pending"], c["running"], c["done"]) == (0, 3, 0)
    cat.record_many(provs, run)
    c = cat.status_counts()
    assert (c["pending"], c["running"], c["done"]) == (0, 0, 5)
    assert all(i.attempts == 1 for i in cat.items(status="done"))


# ------------------------------------------------------------------------------------------------ concurrency
@pytest.mark.timeout(240)
@pytest.mark.slow
def test_concurrent_writers_no_duplicates_no_lost_rows(cat, url):
    workers, span, step = 4, 30, 10                                 # worker w: items [10w, 10w+30)
    shared = cat.start_run({"concurrent": True})
    own = [cat.start_run({"worker": w}) for w in range(workers)]
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers)
    procs = [ctx.Process(target=writer, args=(url, shared, own[w], w * step, w * step + span, w, barrier))
             for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(200)
    assert [p.exitcode for p in procs] == [0] * workers

    all_ids = set(range(0, (workers - 1) * step + span))
    n_results = len(all_ids) + workers * span
    counts = cat.table_counts()
    assert counts["items"] == len(all_ids)
    assert counts["item_results"] == n_results
    cover = {i: sum(1 for w in range(workers) if w * step <= i < w * step + span) for i in all_ids}
    stages_of = {i: len(make_prov(i, "failed" if i % 11 == 0 else "done").stages) for i in all_ids}
    assert counts["stage_results"] == sum(stages_of[i] * (1 + cover[i]) for i in all_ids)
    assert counts["faces"] == sum(1 + cover[i] for i in all_ids if i % 11 != 0)
    n_failed = sum(1 for i in all_ids if i % 11 == 0)
    assert cat.status_counts(run_id=shared) == {"pending": 0, "running": 0, "done": len(all_ids) - n_failed,
                                                "failed": n_failed, "skipped": 0}
    for info in cat.items():
        i = int(info.name[5:10])
        assert info.attempts == 1 + cover[i], info


# ------------------------------------------------------------------------------------------------ exports
def test_export_parquet_one_row_per_item_with_latest_result(cat, tmp_path):
    r1 = cat.start_run({"n": 1}, flow_run_id="flow-1")
    cat.record_many([make_prov(1, "failed"), make_prov(2), make_prov(3)], r1)
    r2 = cat.start_run({"n": 2}, flow_run_id="flow-2")
    cat.record(make_prov(1), r2)                                    # item 1 retried and done
    cat.record(make_prov(3, "failed", fail_stage="face_detection"), r2)
    cat.claim([("file:///archive/box1/new.tif", "new.tif")], r2)          # leased, no result yet
    out = tmp_path / "catalog.parquet"
    assert cat.export_parquet(out) == 4
    rows = {r["source_uri"]: r for r in pq.read_table(out).to_pylist()}
    assert len(rows) == 4
    one = rows[make_prov(1).input.uri]
    assert (one["status"], one["attempts"], one["run_id"], one["flow_run_id"]) == ("done", 2, r2, "flow-2")
    assert one["restored_uri"].endswith("/restored.png") and one["mask_uri"].endswith("/mask.png")
    assert one["restored_uri"] in one["output_uris"] and one["mask_uri"] in one["output_uris"]   # every output
    assert len(one["output_uris"]) == len(make_prov(1).outputs)
    assert one["checkpoints"] == ["scratch_unet@" + "c" * 64, "vae_a@" + "a" * 64, "mapping_quality@" + "b" * 64]
    assert one["mask_coverage"] == pytest.approx(0.0125) and one["n_faces"] == 1
    assert one["started"] == datetime(2026, 11, 21, 22, 0, tzinfo=timezone.utc)
    three = rows[make_prov(3).input.uri]
    assert (three["status"], three["failed_stage"], three["run_id"]) == ("failed", "face_detection", r2)
    assert three["last_error"] == "boom in face_detection of 3" and three["restored_uri"] is None
    two = rows[make_prov(2).input.uri]
    assert (two["status"], two["run_id"], two["sha256"], two["width"]) == ("done", r1, f"{2:064x}", 802)
    new = rows["file:///archive/box1/new.tif"]
    assert (new["status"], new["run_id"], new["attempts"], new["result_status"]) == ("running", r2, 0, None)


def test_premis_xml_records_what_was_done_by_which_model_when(cat):
    r1, r2 = cat.start_run({}), cat.start_run({})
    cat.record(make_prov(4, "failed", fail_stage="scratch_detection"), r1)
    cat.record(make_prov(4), r2)
    xml = cat.premis_xml(make_prov(4).input.uri)
    root = etree.fromstring(xml.encode())
    assert validate_premis(root) == []
    ns = {"p": PREMIS_NS}
    assert root.get("version") == "3.0"
    # the source with its fixity, and the outputs derived from it
    digests = root.xpath("//p:object/p:objectCharacteristics/p:fixity/p:messageDigest/text()", namespaces=ns)
    assert f"{4:064x}" in digests and f"{5:063x}r" in digests
    restored = root.xpath("//p:object[p:objectIdentifier/p:objectIdentifierValue='%s']" % f"{5:063x}r",
                          namespaces=ns)[0]
    assert restored.xpath("p:relationship/p:relatedObjectIdentifier/p:relatedObjectIdentifierValue/text()",
                          namespaces=ns) == [f"{4:064x}"]
    assert restored.xpath("p:relationship/p:relatedEventIdentifier", namespaces=ns)
    # events: both attempts, each stage, with outcomes and date-times
    events = root.xpath("//p:event", namespaces=ns)
    types = [e.findtext("p:eventType", namespaces=ns) for e in events]
    assert types.count("message digest calculation") == 2
    assert "metadata extraction" in types and "information package creation" in types
    outcomes = [e.findtext("p:eventOutcomeInformation/p:eventOutcome", namespaces=ns) for e in events]
    assert outcomes.count("failure") == 1
    failed = events[outcomes.index("failure")]
    assert failed.findtext("p:eventOutcomeInformation/p:eventOutcomeDetail/p:eventOutcomeDetailNote",
                           namespaces=ns) == "boom in scratch_detection of 4"
    ids = [e.findtext("p:eventIdentifier/p:eventIdentifierValue", namespaces=ns) for e in events]
    assert len(set(ids)) == len(ids) == len(events_for(make_prov(4, "failed", fail_stage="scratch_detection"), r1,
                                                            datetime.now(timezone.utc))) + len(events_for(make_prov(4), r2, datetime.now(timezone.utc)))
    for e in events:
        datetime.fromisoformat(e.findtext("p:eventDateTime", namespaces=ns).replace("Z", "+00:00"))
    # agents: the software with its version and each checkpoint by sha256
    agents = {a.findtext("p:agentIdentifier/p:agentIdentifierValue", namespaces=ns): a
              for a in root.xpath("//p:agent", namespaces=ns)}
    assert agents["oldphoto 0.1.0"].findtext("p:agentVersion", namespaces=ns) == "0.1.0"
    assert agents["a" * 64].findtext("p:agentName", namespaces=ns) == "vae_a"
    glob = [e for e in events if "global restoration" in e.findtext("p:eventDetailInformation/p:eventDetail",
                                                                     namespaces=ns)]
    assert len(glob) == 1
    linked = glob[0].xpath("p:linkingAgentIdentifier/p:linkingAgentIdentifierValue/text()", namespaces=ns)
    assert linked == ["oldphoto 0.1.0", "a" * 64, "b" * 64]
    assert r2 in glob[0].findtext("p:eventDetailInformation/p:eventDetail", namespaces=ns)

    # the validator does catch broken documents
    first_event = root.find(f"{{{PREMIS_NS}}}event")
    root.remove(first_event)
    root.insert(0, first_event)                                     # event before the objects
    assert any("not allowed" in p or "needs at least" in p for p in validate_premis(root))
    bad = etree.fromstring(xml.encode())
    bad.find(f"{{{PREMIS_NS}}}agent").find(f"{{{PREMIS_NS}}}agentIdentifier")[1].text = "nobody"
    assert any("unknown agent" in p for p in validate_premis(bad))


def test_premis_wrapped_in_mets(cat):
    import metsrw

    run = cat.start_run({})
    cat.record(make_prov(9), run)
    xml = cat.premis_xml(make_prov(9).input.uri, mets=True)
    doc = metsrw.METSDocument.fromstring(xml.encode())              # metsrw reads it back
    prov = make_prov(9)
    files = {f.path: f for f in doc.all_files() if f.type != "Directory"}
    # the fileSec lists the original and every output, at their real URIs, with their checksums
    assert set(files) == {prov.input.uri} | {a.uri for a in prov.outputs}
    assert files[prov.input.uri].use == "original" and files[prov.input.uri].label == "scan_00009.tif"
    assert files[prov.input.uri].checksum == prov.input.sha256
    for a in prov.outputs:
        assert (files[a.uri].use, files[a.uri].checksum, files[a.uri].checksumtype) == (a.kind, a.sha256, "SHA-256")
    root = etree.fromstring(xml.encode())
    ns = {"m": "http://www.loc.gov/METS/", "p": PREMIS_NS, "x": "http://www.w3.org/1999/xlink"}
    assert sorted(root.xpath("//m:fileSec//m:FLocat/@x:href", namespaces=ns)) == sorted(files)
    assert root.xpath("count(//m:structMap)", namespaces=ns) >= 1
    # valid against the METS schema that ships in metsrw (its xlink import, unreachable offline, from
    # tests/schemas/xlink.xsd); the wrapped PREMIS is checked below against the PREMIS 3 data dictionary
    xsd = etree.parse(str(Path(metsrw.__file__).parent / "resources" / "mets.xsd"))
    for imp in xsd.getroot().findall("{http://www.w3.org/2001/XMLSchema}import"):
        if imp.get("namespace") == "http://www.w3.org/1999/xlink":
            imp.set("schemaLocation", str(Path(__file__).parent / "schemas" / "xlink.xsd"))
    xsi = "{http://www.w3.org/2001/XMLSchema-instance}"
    mets_only = etree.fromstring(xml.encode())
    for el in mets_only.iter():                 # PREMIS types are the data-dictionary check's business
        if el is not mets_only:
            el.attrib.pop(f"{xsi}schemaLocation", None)
            el.attrib.pop(f"{xsi}type", None)
    schema = etree.XMLSchema(xsd)
    assert schema.validate(mets_only), str(schema.error_log)
    n_events = len(events_for(make_prov(9), run, datetime.now(timezone.utc)))
    assert root.xpath("count(//m:digiprovMD/m:mdWrap[@MDTYPE='PREMIS:EVENT'])", namespaces=ns) == n_events
    # the wrapped PREMIS elements are the same, valid record
    premis = etree.Element(f"{{{PREMIS_NS}}}premis", version="3.0")
    for kind in ("object", "event", "agent"):
        for el in root.xpath(f"//m:xmlData/p:{kind}", namespaces=ns):
            premis.append(el)
    assert validate_premis(premis) == []
    assert len(premis.findall(f"{{{PREMIS_NS}}}event")) == n_events
    values = premis.xpath("//p:objectIdentifierValue/text()", namespaces=ns)
    assert f"{9:064x}" in values and f"{10:063x}r" in values
    assert "a" * 64 in premis.xpath("//p:agentIdentifierValue/text()", namespaces=ns)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_commands(url, tmp_path):
    import json

    from typer.testing import CliRunner

    from oldphoto.cli import app

    cli = CliRunner()
    r = cli.invoke(app, ["catalog", "status", "--catalog", url])
    assert r.exit_code == 1 and "oldphoto catalog init" in r.output
    if url.startswith("sqlite"):               # looking at a catalog that is not there creates no empty one
        assert "nothing was created" in r.output and not Path(make_url(url).database).exists()
    r = cli.invoke(app, ["catalog", "init", "--url", url])
    assert r.exit_code == 0 and "Created catalog" in r.output and "0004" in r.output
    r = cli.invoke(app, ["catalog", "upgrade", "--url", url])
    assert r.exit_code == 0 and "already at schema revision 0004" in r.output

    c = Catalog(url)
    run = c.start_run({"scratch": "auto"})
    c.record_many([make_prov(1), make_prov(2, "failed"), make_prov(3)], run)
    c.close()

    r = cli.invoke(app, ["catalog", "status", "--url", url, "--json"])
    assert r.exit_code == 0 and json.loads(r.output) == {"pending": 0, "running": 0, "done": 2, "failed": 1,
                                                         "skipped": 0}
    r = cli.invoke(app, ["catalog", "status", "--url", url])
    assert r.exit_code == 0 and "failed" in r.output and run in r.output
    r = cli.invoke(app, ["catalog", "items", "--url", url, "--status", "failed", "--json"])
    rows = [json.loads(x) for x in r.output.splitlines()]
    assert r.exit_code == 0 and [x["source_uri"] for x in rows] == [make_prov(2).input.uri]
    assert rows[0]["last_error"] == "boom in global_restoration of 2"
    r = cli.invoke(app, ["catalog", "items", "--url", url, "--status", "failed", "--since", "2999-01-01"])
    assert r.exit_code == 0 and "No items with status failed since 2999-01-01" in r.output
    r = cli.invoke(app, ["catalog", "items", "--url", url, "--since", "yesterday"])
    assert r.exit_code == 1 and "not a date" in r.output
    r = cli.invoke(app, ["catalog", "show", "--url", url, make_prov(2).input.uri])
    assert r.exit_code == 0 and "boom in global_restoration of 2" in r.output and "vae_a" in r.output
    r = cli.invoke(app, ["catalog", "show", "--url", url, "--json", make_prov(1).input.uri])
    assert r.exit_code == 0 and json.loads(r.output)["attempts"][0]["run_id"] == run
    r = cli.invoke(app, ["catalog", "show", "--url", url, "file:///nope.tif"])
    assert r.exit_code == 1 and "no item" in r.output
    out = tmp_path / "all.parquet"
    r = cli.invoke(app, ["catalog", "export", "--url", url, "--parquet", str(out)])
    assert r.exit_code == 0 and "Wrote 3 item(s)" in r.output and pq.read_table(out).num_rows == 3
    r = cli.invoke(app, ["catalog", "premis", "--url", url, make_prov(1).input.uri])
    assert r.exit_code == 0 and validate_premis(etree.fromstring(r.output.encode())) == []
    px = tmp_path / "p.xml"
    r = cli.invoke(app, ["catalog", "premis", "--url", url, "--mets", "-o", str(px), make_prov(3).input.uri])
    assert r.exit_code == 0 and px.read_text().count("PREMIS:EVENT") > 3


def test_cli_default_url_from_environment(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from oldphoto.cli import app

    db = tmp_path / "env.sqlite"
    monkeypatch.setenv("OLDPHOTO_CATALOG", f"sqlite:///{db}")
    r = CliRunner().invoke(app, ["catalog", "init"])
    assert r.exit_code == 0 and db.exists()
    assert sqlite3.connect(db).execute("select version_num from alembic_version").fetchone() == ("0004",)
