"""Packaging: PostgreSQL is an extra, tools are in ``dev``, no caps without a break.

The wheel itself is built and installed by tests/test_wheel.py (slow).
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from metastore.errors import StoreError
from metastore.store import db

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
    "project"
]


def requirements(group: str | None = None) -> list[Requirement]:
    texts = (
        PROJECT["dependencies"]
        if group is None
        else PROJECT["optional-dependencies"][group]
    )
    return [Requirement(text) for text in texts]


def test_postgresql_is_an_extra_with_plain_psycopg() -> None:
    """psycopg's advice for libraries: plain psycopg; the binary for our tests."""
    assert "psycopg" not in {r.name for r in requirements()}
    (psycopg,) = requirements("postgresql")
    assert (psycopg.name, psycopg.extras) == ("psycopg", set())
    binary = [r for r in requirements("test") if r.name == "psycopg"]
    assert [r.extras for r in binary] == [{"binary"}]


def test_tools_are_in_dev_and_the_other_extras_stay() -> None:
    assert {"mypy", "ruff", "build"} <= {r.name for r in requirements("dev")}
    assert {"pytest", "hypothesis"} <= {r.name for r in requirements("test")}
    assert {"starlette", "uvicorn"} <= {r.name for r in requirements("web")}
    assert "rich" in {r.name for r in requirements()}


def test_no_upper_version_caps() -> None:
    """A cap goes in with the break that needs it (none is known)."""
    groups = [None, *PROJECT["optional-dependencies"]]
    capped = [
        str(r)
        for group in groups
        for r in requirements(group)
        for spec in r.specifier
        if spec.operator in ("<", "<=", "~=", "==")
    ]
    assert capped == []


def test_setup_installs_every_extra() -> None:
    """The README's two commands still set everything up (scripts/setup)."""
    setup = (ROOT / "scripts" / "setup").read_text(encoding="utf-8")
    assert "-e '.[postgresql,web,test,dev]'" in setup


def test_postgresql_without_psycopg_is_one_clear_line(tmp_path: Path) -> None:
    """Without the extra, a PostgreSQL URL says what to install; exit 2."""
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from metastore.cli import main\n"
        "sys.argv = ['metastore', 'stats', '--db', "
        "'postgresql://me:pw-123@127.0.0.1/x']\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "PostgreSQL support is not installed" in line
    assert "pip install 'metastore[postgresql]'" in line
    assert "pw-123" not in line


def test_create_engine_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(StoreError, match=r"metastore\[postgresql\]"):
        db.create_engine("postgresql://me@127.0.0.1/x")
