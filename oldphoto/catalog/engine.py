"""The catalog's database connection: URL rules, the SQLAlchemy engine (SQLite in WAL mode with BEGIN IMMEDIATE
for writes, PostgreSQL through psycopg 3), the one retry helper for transient database errors, and the fast
multi-row insert the record path uses."""
from __future__ import annotations

import os
import random
import time
from datetime import datetime
from operator import itemgetter
from typing import Any, Callable, TypeVar

from sqlalchemy import JSON, create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from oldphoto.catalog.tables import UTCDateTime, parse_time
from oldphoto.catalog.records import _ENCODER, json_dumps

DEFAULT_URL = "sqlite:///./oldphoto-catalog.sqlite"
RETRY_ATTEMPTS = 8
T = TypeVar("T")


def default_url() -> str:
    return os.environ.get("OLDPHOTO_CATALOG") or DEFAULT_URL


def normalise_url(url: str) -> str:
    """`postgresql://` and `postgres://` mean psycopg 3 (the driver we ship), not psycopg2."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str, dialect: str, echo: bool = False) -> Engine:
    """The engine for a normalised `url`. SQLite: WAL (except in memory), a 60 s busy timeout, foreign keys, and
    BEGIN IMMEDIATE for connections with the execution option `oldphoto_write` (so two writers never both hold
    a read lock and wait for each other)."""
    if dialect == "postgresql":
        return create_engine(url, echo=echo, pool_pre_ping=True, future=True, json_serializer=json_dumps)
    engine = create_engine(url, echo=echo, future=True, connect_args={"timeout": 60}, json_serializer=json_dumps)
    memory = make_url(url).database in (None, "", ":memory:")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None      # we emit BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("oldphoto_write")
                             else "BEGIN")

    return engine


def is_retryable(exc: BaseException) -> bool:
    """A transient database error: deadlock, serialisation failure, lock timeout, SQLite's "database is locked"."""
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code in ("40P01", "40001", "55P03"):
        return True
    msg = str(orig or exc).lower()
    return "database is locked" in msg or "database table is locked" in msg or "deadlock" in msg


def with_db_retry(fn: Callable[[], T], errors: tuple[type[BaseException], ...] = (OperationalError, DBAPIError),
                  attempts: int = RETRY_ATTEMPTS) -> T:
    """fn(), called again after a randomised exponential back-off (50 ms, 100 ms, ...) while it raises one of
    `errors` that `is_retryable`; any other error, or the last one, propagates."""
    for attempt in range(attempts):
        try:
            return fn()
        except errors as e:
            if attempt + 1 < attempts and is_retryable(e):
                time.sleep(0.05 * (2 ** attempt) * (0.5 + random.random()))
                continue
            raise
    raise AssertionError("unreachable")


def dialect_insert(dialect: str, table: Any) -> Any:
    """`INSERT` with the dialect's ON CONFLICT support."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def bulk_insert(conn: Connection, dialect: str, table: Any, rows: list[dict[str, Any]]) -> None:
    """Plain multi-row insert through the driver's executemany, converting values ourselves (JSON, UTC
    timestamps) - the per-row cost of SQLAlchemy's parameter processing dominated the record path."""
    if not rows:
        return
    cols = [c for c in table.c if c.name in rows[0]]
    names = [c.name for c in cols]
    ph = ", ".join(["?" if dialect == "sqlite" else "%s"] * len(cols))
    prep = conn.dialect.identifier_preparer
    sql = f"INSERT INTO {prep.format_table(table)} ({', '.join(prep.quote(n) for n in names)}) VALUES ({ph})"
    conn.exec_driver_sql(sql, _driver_rows(rows, names, [_converter(c.type, dialect) for c in cols]))


def _converter(col_type: Any, dialect: str) -> Callable[[Any], Any] | None:
    if isinstance(col_type, JSON):
        return _json
    if isinstance(col_type, UTCDateTime):
        return _sqlite_time if dialect == "sqlite" else _pg_time
    return None


def _driver_rows(rows: list[dict[str, Any]], names: list[str], conv: list[Callable[[Any], Any] | None]
                 ) -> list[tuple[Any, ...]]:
    getter = itemgetter(*names)
    todo = [(i, f) for i, f in enumerate(conv) if f is not None]
    if len(names) == 1:
        return [(getter(r),) for r in rows]
    if not todo:
        return [getter(r) for r in rows]
    data = []
    for r in rows:
        v = list(getter(r))
        for i, f in todo:
            v[i] = f(v[i])
        data.append(tuple(v))
    return data


def _json(v: Any) -> str | None:
    if v is None:
        return None
    if not v and type(v) in (list, dict):
        return "[]" if type(v) is list else "{}"
    return _ENCODER.encode(v)


def _sqlite_time(v: datetime | None) -> str | None:
    """The text SQLAlchemy's SQLite DateTime stores (naive UTC)."""
    if v is None:
        return None
    v = parse_time(v)
    return v.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _pg_time(v: datetime | None) -> datetime | None:
    return None if v is None else parse_time(v)
