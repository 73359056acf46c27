"""No function in the package is harder to follow than cyclomatic complexity 15, as radon measures it (`cc_visit`);
only the Alembic migrations are left out. A function that grows past the limit is split into small functions with
names that say what each part does."""
from __future__ import annotations

from pathlib import Path

from radon.complexity import cc_visit

PACKAGE = Path(__file__).resolve().parents[1] / "oldphoto"
LIMIT = 15
EXEMPT = ("catalog/migrations/",)


def test_no_function_above_the_complexity_limit():
    over = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(EXEMPT):
            continue
        for block in cc_visit(path.read_text(encoding="utf-8")):
            if block.__class__.__name__ != "Class" and block.complexity > LIMIT:   # methods come as functions
                over[f"{rel}:{block.fullname}"] = block.complexity
    assert not over, f"split these into smaller functions (cyclomatic complexity above {LIMIT}): {over}"
