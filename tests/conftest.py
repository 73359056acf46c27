"""Shared test fixtures. Area-specific fixtures live in the area's own test modules."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _find_shared() -> Path:
    env = os.environ.get("OLDPHOTO_SHARED")
    candidates = [Path(env)] if env else []
    candidates += [REPO.parent / "shared", REPO / "shared"]
    for c in candidates:
        if (c / "official" / "manifests").is_dir():
            return c
    raise RuntimeError("../shared (official manifests and goldens) not found; set OLDPHOTO_SHARED")


SHARED = _find_shared()
OFFICIAL = SHARED / "official"
sys.path.insert(0, str(OFFICIAL))  # for `import seeded_weights`


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED


@pytest.fixture(scope="session")
def official_dir() -> Path:
    return OFFICIAL
