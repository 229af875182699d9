"""The public surface: every export exists and is documented, nothing is missed."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

import metastore

PACKAGE = Path(metastore.__file__).parent


def test_all_is_unique_and_complete():
    """``__all__`` has no duplicates and lists exactly the lazy table.

    Its order (isort style) is enforced by ruff's RUF022.
    """
    assert len(metastore.__all__) == len(set(metastore.__all__))
    assert set(metastore.__all__) == set(metastore._EXPORTS)


@pytest.mark.parametrize("name", metastore.__all__)
def test_every_export_resolves_and_is_documented(name):
    """Each exported name loads, and classes and functions carry a docstring."""
    obj = getattr(metastore, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        assert inspect.getdoc(obj), f"{name} has no docstring"


def test_issue_names_are_exported():
    """The names the Cornerstone-style API promises are importable from metastore."""
    from metastore import (  # noqa: F401
        DatabaseProvider,
        DicomJsonProvider,
        InMemoryProvider,
        Registry,
        metadata,
    )

    assert isinstance(metadata, Registry)
    for method in ("add_provider", "remove_provider", "remove_all_providers", "get"):
        assert callable(getattr(metadata, method))


def test_unknown_attribute_raises_attribute_error():
    """A name that is not exported is an AttributeError, not a silent None."""
    with pytest.raises(AttributeError, match="no_such_name"):
        metastore.no_such_name  # noqa: B018


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        yield ".".join(p for p in rel.parts if p != "__init__"), path


@pytest.mark.parametrize(("module", "path"), list(_modules()), ids=lambda v: str(v))
def test_every_module_has_a_docstring(module, path):
    """Every module opens with a docstring saying what it owns."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{module} has no module docstring"
    if not module.endswith("__main__"):  # importing __main__ would run the CLI
        importlib.import_module(module)


def test_module_types_are_exported():
    """The typed vocabulary of metastore.moduletypes is public from metastore.

    Every name but the helpers that give metastore's own lookups their types;
    ``metastore.types.ModuleType`` stays importable (the enum moved).
    """
    from metastore import moduletypes, types

    helpers = {
        "ModuleLookupMethod",
        "typed_lookup",
        "typed_lookup_method",
        "untyped_lookup_method",
    }
    for name in sorted(set(moduletypes.__all__) - helpers):
        assert name in metastore.__all__, name
        assert getattr(metastore, name) is getattr(moduletypes, name), name
    assert types.ModuleType is moduletypes.ModuleType
