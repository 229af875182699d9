"""Imports follow the data flow: file -> dataset -> DICOM JSON -> modules -> rows
-> provider -> registry.

Each metastore module has a layer; it may import (at top level or inside a
function, but not under ``TYPE_CHECKING``) only modules of its own layer or
below.  The registry knows nothing of databases, the mapping nothing of
SQLAlchemy, the schema nothing of pydicom.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "metastore"

#: Layer of each module (prefix match on the dotted name, longest wins).
LAYERS: dict[str, int] = {
    "metastore.errors": 0,
    "metastore.types": 0,
    "metastore.records": 1,
    "metastore.imageid": 1,
    "metastore.registry": 1,
    "metastore.modules.jsvalues": 2,
    "metastore.dicomjson": 2,
    "metastore.dicomjson.convert": 2,
    "metastore.dicomjson._values": 2,
    "metastore.dicomjson._sequences": 2,
    "metastore.modules.frames": 3,
    "metastore.modules": 4,
    "metastore.store.schema": 5,
    "metastore.store.codec": 5,
    "metastore.store.names": 5,
    "metastore.store.attrs": 5,
    "metastore.store.db": 6,
    "metastore.store": 7,
    "metastore.store.api": 7,
    "metastore.store.encode": 7,
    "metastore.store.prune": 7,
    "metastore.store.query": 7,
    "metastore.store.qido": 7,
    "metastore.store.read": 7,
    "metastore.store.write": 7,
    "metastore.index.discovery": 8,
    "metastore.index.read": 8,
    "metastore.index.extract": 8,
    "metastore.index.report": 9,
    "metastore.index.sharding": 9,
    "metastore.testhooks": 9,
    "metastore.index": 9,
    "metastore.index.pipeline": 9,
    "metastore.providers": 10,
    "metastore.cli": 11,
    "metastore.__main__": 12,
    "metastore": 12,  # the package itself re-exports everything
}

#: Third-party imports that must stay out of some layers.
FORBIDDEN = {
    "sqlalchemy": (
        "metastore.modules.jsvalues",
        "metastore.modules.frames",
        "metastore.modules",
        "metastore.dicomjson.convert",
        "metastore.registry",
        "metastore.imageid",
    ),
    "pydicom": (
        "metastore.store.schema",
        "metastore.store.db",
        "metastore.registry",
        "metastore.modules.jsvalues",
        "metastore.modules.frames",
        "metastore.modules",
    ),
}


def layer(name: str) -> int:
    """The layer of a dotted module name; KeyError for a module not in the table."""
    if name == "metastore":
        return LAYERS[name]
    found = [
        k
        for k in LAYERS
        if k != "metastore" and (name == k or name.startswith(k + "."))
    ]
    if not found:
        raise KeyError(f"{name} has no layer in tests/test_layers.py")
    return LAYERS[max(found, key=len)]


def module_name(path: Path) -> str:
    """Dotted name of a file of the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def imports(path: Path) -> list[str]:
    """Absolute names imported by a file, outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    names = []
    package = module_name(path).rsplit(".", 1)[0]
    if path.name == "__init__.py":
        package = module_name(path)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1]
                    + ([base] if base else [])
                )
            # `from metastore import store_read` imports a submodule
            if (PACKAGE.parent / base.replace(".", "/")).is_dir():
                names += [f"{base}.{a.name}" for a in node.names]
            else:
                names.append(base)
    return names


FILES = sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


@pytest.mark.parametrize("path", FILES, ids=lambda p: module_name(p))
def test_imports_follow_the_data_flow(path: Path) -> None:
    """A module imports only from its own layer or the layers below it."""
    me = module_name(path)
    if me == "metastore":
        return  # the façade re-exports lazily; it sits on top of everything
    wrong = [
        name
        for name in imports(path)
        if name.startswith("metastore") and layer(name) > layer(me)
    ]
    assert not wrong, f"{me} (layer {layer(me)}) imports from higher layers: {wrong}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: module_name(p))
def test_heavy_dependencies_stay_in_their_layers(path: Path) -> None:
    """No SQLAlchemy in the mapping or registry; no pydicom in the schema or mapping."""
    me = module_name(path)
    for lib, banned in FORBIDDEN.items():
        if any(me == b or me.startswith(b + ".") for b in banned):
            bad = [n for n in imports(path) if n == lib or n.startswith(lib + ".")]
            assert not bad, f"{me} must not import {lib}"


def test_every_module_has_a_layer() -> None:
    """A new module must be placed in the table above (longest-prefix match)."""
    missing = []
    for path in FILES:
        try:
            layer(module_name(path))
        except KeyError as exc:
            missing.append(str(exc))
    assert not missing
