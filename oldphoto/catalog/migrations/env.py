"""Alembic environment of the oldphoto catalog.

Used both by `Catalog(url).upgrade()` (which hands over its own connection in
`config.attributes["connection"]`) and by the plain `alembic -c db/alembic.ini ...` command line (which takes
the URL from `-x url=...`, else $OLDPHOTO_CATALOG, else sqlalchemy.url of the ini file).
"""
from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from oldphoto.catalog.tables import metadata

config = context.config
target_metadata = metadata


def _url() -> str:
    return (context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("OLDPHOTO_CATALOG")
            or config.get_main_option("sqlalchemy.url") or "sqlite:///./oldphoto-catalog.sqlite")


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=_url().startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url())
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
