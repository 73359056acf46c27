"""The catalog schema's revisions: Alembic, with the migrations shipped in oldphoto/catalog/migrations."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError

from oldphoto.catalog.engine import with_db_retry

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str, connection: Connection | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision(url: str) -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def missing_sqlite_file(url: str, dialect: str) -> bool:
    """A SQLite catalog whose file does not exist yet (reading it must not create an empty one)."""
    db = make_url(url).database if dialect == "sqlite" else None
    return bool(db) and db != ":memory:" and not db.startswith("file:") and not Path(db).expanduser().exists()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: no catalog tables yet). OperationalError propagates."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine, url: str, dialect: str, direction: str, revision: str) -> None:
    """Alembic `direction` ("upgrade" / "downgrade") to `revision`, one migrator at a time (SQLite's BEGIN
    IMMEDIATE, PostgreSQL's transaction advisory lock): a second caller then finds the schema current and does
    nothing. SQLite can refuse at once (e.g. while another connection switches a new file to WAL): that is
    retried like every other write."""
    from alembic import command

    def once() -> None:
        with engine.connect() as conn:
            conn.execution_options(oldphoto_write=True)
            conn.begin()
            if dialect == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(4242170001)")
            getattr(command, direction)(alembic_config(url, conn), revision)
            conn.commit()

    with_db_retry(once, errors=(OperationalError,))
