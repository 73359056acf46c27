"""Test fixtures used by several test modules, and the test lanes.

Everything the tests need is inside the repository: the official manifests and goldens are
``tests/data/official/`` (see its README), the seeded stand-in weights come from
`oldphoto.testing.seeded`.
"""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = Path(__file__).resolve().parent / "data" / "official"


@pytest.fixture(scope="session")
def official_dir() -> Path:
    """The official manifests (``manifests/NAME.json``) and goldens (``golden/NAME.npz``)."""
    return OFFICIAL
