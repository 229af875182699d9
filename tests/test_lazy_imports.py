"""What importing a module loads: the lazy-import guarantees, locked in.

Each case imports one module in a fresh interpreter and lists ``sys.modules``
afterwards.  A provider must not load the schema, the writer or the parser; an
indexer worker must not load SQLAlchemy; ``import metastore`` loads nothing.
(docs/development.md, "Lazy imports", says why.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: module imported -> modules (and their submodules) it must not load.
MUST_NOT_LOAD: dict[str, tuple[str, ...]] = {
    # the package facade: every name loads on first use
    "metastore": (
        "metastore.errors",
        "metastore.types",
        "metastore.registry",
        "metastore.modules",
        "metastore.store",
        "metastore.index",
        "metastore.providers",
        "sqlalchemy",
        "pydicom",
    ),
    # the read path: SQLAlchemy Core and the read statements only
    "metastore.providers.database": (
        "sqlalchemy.orm",
        "alembic",
        "pydicom",
        "metastore.store.schema",
        "metastore.store.write",
        "metastore.store.query",
        "metastore.store.prune",
        "metastore.dicomjson",
        "metastore.modules",
        "metastore.index",
    ),
    # an indexer worker reads files; it never touches the database
    "metastore.index.read": (
        "sqlalchemy",
        "alembic",
        "metastore.store",
        "metastore.index.pipeline",
    ),
    # worker-side pre-encoding: no SQL either
    "metastore.store.encode": ("sqlalchemy", "alembic", "pydicom"),
    "metastore.providers.dicomjson": ("pydicom", "sqlalchemy", "metastore.dicomjson"),
    "metastore.registry": ("sqlalchemy", "pydicom", "metastore.store"),
    "metastore.modules": ("sqlalchemy", "pydicom", "metastore.dicomjson"),
    # attribute names from pydicom's tables, read as data: no pydicom import
    # (~0.2 s) for a query to spell its keywords, nor for the QIDO layer
    "metastore.keywords": ("pydicom", "sqlalchemy"),
    "metastore.store.qido": ("pydicom",),
    "metastore.cli.reading": ("pydicom",),
    # the faces of the lazy wings load none of their rooms
    "metastore.store": ("sqlalchemy", "metastore.store.api"),
    "metastore.index": ("pydicom", "metastore.index.pipeline", "metastore.index.read"),
}


def loaded_by(module: str) -> list[str]:
    """The names in ``sys.modules`` after importing ``module`` in a fresh process."""
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    )
    names: list[str] = json.loads(result.stdout)
    return names


@pytest.mark.parametrize("module", sorted(MUST_NOT_LOAD))
def test_import_loads_only_what_it_needs(module: str) -> None:
    """Importing ``module`` leaves the heavy or unrelated modules unloaded."""
    names = loaded_by(module)
    assert module in names  # the import itself happened
    banned = MUST_NOT_LOAD[module]
    wrong = [n for n in names if any(n == b or n.startswith(b + ".") for b in banned)]
    assert not wrong, f"importing {module} loads {wrong}"
