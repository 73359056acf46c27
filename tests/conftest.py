"""Fixtures used by several test modules, and the test lanes.

Everything the tests need is inside the repository: the official manifests and goldens are
``tests/data/official/`` (see its README), the seeded stand-in weights come from
`oldphoto.testing.seeded`. Helpers that are not fixtures (servers, corpora, data makers) are plain
modules beside this file (services.py, pg.py, hostile_corpus.py, ...), imported normally.

Lanes (markers registered in pyproject.toml):

* ``make test``: everything (what CI runs).
* ``make test-fast``: ``-m "not slow and not ray and not postgres and not prefect"``, no service
  started, under two minutes. A test that starts Ray, PostgreSQL or Prefect is marked here
  automatically from the fixtures it uses; a test that starts one itself carries the marker.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from pg import PostgresServer, PostgresUnavailable
from services import FAKE_AWS, PrefectServer, patched_env

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = Path(__file__).resolve().parent / "data" / "official"

# fixture -> the marker of the service it starts
SERVICE_MARKERS = {"local_ray": "ray", "prefect_server": "prefect", "pg_server": "postgres"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, marker in SERVICE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)


@pytest.fixture(scope="session")
def official_dir() -> Path:
    """The official manifests (``manifests/NAME.json``) and goldens (``golden/NAME.npz``)."""
    return OFFICIAL


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 with fake credentials in the environment; yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with patched_env({**FAKE_AWS, "AWS_ENDPOINT_URL": endpoint}):
        yield endpoint
    server.stop()


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """An embedded local Ray session (2 CPUs, no dashboard), shut down after the module."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory) -> Iterator[PrefectServer]:
    """`prefect server start` on a free port with its own PREFECT_HOME."""
    server = PrefectServer(tmp_path_factory.mktemp("prefect_home"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL server for the session (the test is skipped when none can be started)."""
    try:
        srv = PostgresServer.start()
    except PostgresUnavailable as e:
        pytest.skip(f"PostgreSQL not available: {e}")
    yield srv
    srv.stop()
