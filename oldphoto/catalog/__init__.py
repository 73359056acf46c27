"""The SQL catalog of what was done to every photograph: items, runs, per-stage results, artefacts, masks,
faces and PREMIS events (SQLAlchemy 2; SQLite by default, PostgreSQL for shared/concurrent use).

    cat = Catalog("sqlite:///catalog.sqlite"); cat.upgrade()
    run = cat.start_run(params, fingerprint=fingerprint(params, models_checkpoints))
    if not cat.is_done(sha256, fp): ...; cat.record(item_provenance, run); cat.finish_run(run)

Schema migrations (Alembic) ship inside the package in oldphoto/catalog/migrations; db/alembic.ini points
the plain `alembic` command at them.
"""
from oldphoto.catalog.store import (DEFAULT_URL, Attempt, Catalog, CatalogError, ItemHistory, ItemInfo, RunInfo,
                                    default_url, fingerprint)

__all__ = ["Catalog", "CatalogError", "ItemInfo", "ItemHistory", "Attempt", "RunInfo", "fingerprint",
           "default_url", "DEFAULT_URL"]
