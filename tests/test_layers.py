"""The code matches the one map of the package: the table in docs/architecture.md.

The table names each wing (a sub-package or a single module), its rooms in
import order, its doors and what it may import.  This test parses it and
checks every import of every module of ``metastore/`` against it: imports
from another wing go through a door the importer may use, in the flow's
order; rooms import only earlier rooms of their wing; heavy libraries stay in
the wings that name them.  Lazy imports count; ``TYPE_CHECKING`` imports only
have to use doors.  The rules are spelled out under the table.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "metastore"
DOC = ROOT / "docs" / "architecture.md"
TABLE_HEADING = "## Wings and modules"
CROSSINGS_HEADING = "## Walls still crossed"
#: Third-party libraries a wing uses only where its row names them.
HEAVY = frozenset({"pydicom", "sqlalchemy", "alembic", "psycopg"})


@dataclass(frozen=True)
class Wing:
    """One row of the table."""

    position: int
    name: str  # dotted: "metastore.store", or "metastore" for the package face
    rooms: tuple[str, ...]  # dotted, in import order
    doors: frozenset[str]  # dotted: the face and the extra doors
    may_import: frozenset[str]  # dotted doors of other wings
    heavy: frozenset[str]
    planned: bool


@dataclass(frozen=True)
class Import:
    """One import statement's target, as the importing module sees it."""

    module: str  # the importing module, dotted
    target: str  # the module imported, dotted
    line: int
    typing_only: bool  # under ``if TYPE_CHECKING:``


def _names(cell: str, base: str) -> list[str]:
    """The backticked names of a table cell, made absolute under ``base``.

    Remarks in parentheses are prose, not names.
    """
    names = re.findall(r"`([\w.]+)`", re.sub(r"\([^)]*\)", "", cell))
    return [n if n == "metastore" else f"{base}.{n}" for n in names]


def read_table() -> list[Wing]:
    """The wings of docs/architecture.md, in their order."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split(TABLE_HEADING, 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break  # the first table of the section ends here
    header, _rule, *body = rows
    assert len(header) == 6, f"docs/architecture.md: the table has 6 columns: {header}"
    wings = []
    for position, (wing, owns, rooms, doors, may_import, heavy) in enumerate(body):
        (name,) = _names(wing, "metastore")
        wings.append(
            Wing(
                position=position,
                name=name,
                rooms=tuple(_names(rooms, name)),
                doors=frozenset([name, *_names(doors, "metastore")]),
                may_import=frozenset(_names(may_import, "metastore")),
                heavy=frozenset(re.findall(r"`([^`]+)`", heavy)),
                planned="*planned*" in owns,
            )
        )
    return wings


def read_crossings() -> set[tuple[str, str]]:
    """The known exceptions: ``(importing module, imported module)`` pairs."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split(CROSSINGS_HEADING, 1)[1].split("\n## ", 1)[0]
    pairs = re.findall(r"^- `([^`]+)` -> `([^`]+)`", section, flags=re.MULTILINE)
    return {(f"metastore.{a}", f"metastore.{b}") for a, b in pairs}


WINGS = read_table()
CROSSINGS = read_crossings()


def module_name(path: Path) -> str:
    """Dotted name of a file of the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def is_module(name: str) -> bool:
    """Whether a dotted name is a module or package of metastore."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def wing_of(name: str) -> Wing:
    """The row a dotted module name belongs to (longest prefix)."""
    if name == "metastore":
        return next(w for w in WINGS if w.name == "metastore")
    found = [
        w
        for w in WINGS
        if w.name != "metastore" and (name == w.name or name.startswith(w.name + "."))
    ]
    if not found:
        raise KeyError(f"{name} is in no row of docs/architecture.md")
    return max(found, key=lambda w: len(w.name))


def typing_only_nodes(tree: ast.AST) -> set[int]:
    """The ids of the nodes under ``if TYPE_CHECKING:`` (not its ``else``)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                found.update(id(n) for n in ast.walk(child))
    return found


def imports(me: str, source: str, *, face: bool) -> list[Import]:
    """Every import of metastore modules in module ``me``, lazy ones included.

    ``from package import name`` imports ``package.name`` when that is a
    module, else ``package``.  The string values of an ``_EXPORTS`` table (a
    lazy face) count as imports.  ``face``: the source is a package's
    ``__init__``.
    """
    package = me if face else me.rsplit(".", 1)[0]
    tree = ast.parse(source)
    typing_only = typing_only_nodes(tree)
    found: list[Import] = []

    def add(target: str, node: ast.AST) -> None:
        if target == "metastore" or target.startswith("metastore."):
            line = getattr(node, "lineno", 0)
            found.append(Import(me, target, line, id(node) in typing_only))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if is_module(sub) else base, node)
        elif (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Dict)
            and "_EXPORTS" in {t.id for t in node.targets if isinstance(t, ast.Name)}
        ):
            for value in node.value.values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    add(value.value, value)
    return found


def third_party(source: str) -> list[tuple[str, int]]:
    """Heavy libraries imported outside ``TYPE_CHECKING``, with their lines."""
    tree = ast.parse(source)
    typing_only = typing_only_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [node.module]
        else:
            continue
        found += [(n.split(".")[0], node.lineno) for n in names]
    return [(lib, line) for lib, line in found if lib in HEAVY]


FILES = sorted(PACKAGE.rglob("*.py"))
MODULES = [module_name(p) for p in FILES]


def problems(me: str, source: str, *, face: bool = False) -> list[str]:
    """What is wrong with the imports of module ``me``, one line per import."""
    mine = wing_of(me)
    out = []
    for imp in imports(me, source, face=face):
        where = f"{me}:{imp.line} imports {imp.target}"
        if (me, imp.target) in CROSSINGS:
            continue
        theirs = wing_of(imp.target)
        if theirs is mine:
            if imp.typing_only or me == mine.name:
                continue  # the face may import any room
            if imp.target == mine.name:
                out.append(f"{where}: a room never imports its own face")
            elif mine.rooms.index(imp.target) > mine.rooms.index(me):
                out.append(f"{where}: a later room of {mine.name} (see its rooms)")
            continue
        if imp.target not in theirs.doors:
            doors = ", ".join(sorted(theirs.doors))
            out.append(f"{where}: past the doors of {theirs.name} ({doors})")
        elif not imp.typing_only and imp.target not in mine.may_import:
            out.append(f"{where}: not in the 'may import' of {mine.name}")
    for lib, line in third_party(source):
        if lib not in mine.heavy:
            out.append(f"{me}:{line} imports {lib}: not a library of {mine.name}")
    return list(dict.fromkeys(out))  # one line per statement, not per name


@pytest.mark.parametrize("path", FILES, ids=module_name)
def test_imports_follow_the_table(path: Path) -> None:
    """Doors, the flow, room order and heavy libraries (docs/architecture.md)."""
    source = path.read_text(encoding="utf-8")
    wrong = problems(module_name(path), source, face=path.name == "__init__.py")
    assert not wrong, "\n".join(wrong)


def test_every_module_has_its_row_and_room() -> None:
    """Each module is in one row, each room of a wing is listed, and nothing more."""
    for name in MODULES:
        wing = wing_of(name)
        if wing.rooms or name != wing.name:
            assert name == wing.name or name in wing.rooms, (
                f"{name} is not a room of {wing.name} in docs/architecture.md"
            )
    for wing in WINGS:
        if wing.planned:
            assert not is_module(wing.name), f"{wing.name} exists: not planned"
            continue
        assert is_module(wing.name), f"{wing.name} is in the table, not the code"
        for room in wing.rooms:
            assert room in MODULES, f"{room} is in the table, not the code"


def test_the_table_follows_the_flow() -> None:
    """A row may import only doors of rows above it; private rooms are no door."""
    doors = {door: wing for wing in WINGS for door in wing.doors}
    for wing in WINGS:
        for door in wing.doors - {wing.name}:
            assert door in wing.rooms, f"{door} is a door but not a room of {wing.name}"
            assert not door.rsplit(".", 1)[1].startswith("_"), f"{door} is private"
        for name in wing.may_import:
            assert name in doors, f"{wing.name} may import {name}, which is no door"
            assert doors[name].position < wing.position, (
                f"{wing.name} may import {name}, which is below it in the table"
            )


def test_the_known_crossings_are_still_real() -> None:
    """A crossing that is gone from the code is struck from the page too."""
    real = {
        (i.module, i.target)
        for p in FILES
        for i in imports(
            module_name(p), p.read_text(encoding="utf-8"), face=p.name == "__init__.py"
        )
    }
    gone = CROSSINGS - real
    assert not gone, f"gone from the code, strike from docs/architecture.md: {gone}"


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("from metastore.store.api import Store\n", "past the doors"),
        ("from metastore.dicomjson._values import LONG_VRS\n", "past the doors"),
        ("def f():\n    from metastore.store.write import chunks\n", "past the doors"),
        ("from metastore.modules.frames import Frame\n", "past the doors"),
        ("from metastore.registry import Registry\n", "not in the 'may import'"),
        ("import sqlalchemy\n", "not a library of"),
    ],
)
def test_the_rules_catch_reach_ins(source: str, reason: str) -> None:
    """The check fails on the reach-ins it exists for (here, in a provider)."""
    wrong = problems("metastore.providers.memory", source)
    assert any(reason in w for w in wrong), wrong


def test_the_cli_takes_names_from_their_owners() -> None:
    """Not from the pipeline, which is a room of the index wing."""
    source = "from metastore.index.pipeline import parse_shard\n"
    wrong = problems("metastore.cli", source)
    assert any("past the doors of metastore.index" in w for w in wrong), wrong


def test_a_room_may_not_import_a_later_room() -> None:
    """The run's report must not depend on the worker-side reader (room order)."""
    source = "from metastore.index.read import read_entry\n"
    wrong = problems("metastore.index.report", source)
    assert any("a later room of metastore.index" in w for w in wrong), wrong


def test_type_checking_imports_need_doors_only() -> None:
    """Under TYPE_CHECKING a provider may name the registry, but not its rooms."""
    door = "if TYPE_CHECKING:\n    import metastore.registry\n"
    assert not problems("metastore.providers.memory", door)
    room = door.replace("metastore.registry", "metastore.store.api")
    assert problems("metastore.providers.memory", room)
