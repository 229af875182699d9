"""The installed wheel carries its migrations and can create a database.

Builds metastore's wheel, installs it into a fresh virtual environment
outside the repository, and runs the installed ``metastore`` command there:
``db upgrade`` on a brand-new SQLite database, then ``db current``.  This is
the path a user takes; it would fail if the wheel lost ``migrations/``.
Installed without extras, it has no PostgreSQL driver: a PostgreSQL URL
names the ``postgresql`` extra to install.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from metastore.store.db import head

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """metastore's wheel, built from this checkout."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("metastore-*.whl")
    return built


def test_wheel_contains_the_migrations(wheel: Path) -> None:
    """The wheel holds env.py, the mako template and every revision file."""
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "metastore/migrations/env.py" in names
    assert "metastore/migrations/script.py.mako" in names
    revisions = {p.name for p in (ROOT / "migrations" / "versions").glob("*.py")}
    assert revisions
    assert {f"metastore/migrations/versions/{r}" for r in revisions} <= names


def test_installed_wheel_upgrades_a_new_database(wheel: Path, tmp_path: Path) -> None:
    """In a clean venv outside the repo, `metastore db upgrade` reaches head."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", str(wheel)],
        check=True,
        capture_output=True,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    url = f"sqlite:///{work / 'x.db'}"
    clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    clean_env.pop("METASTORE_DATABASE_URL", None)
    exe = str(env_dir / "bin" / "metastore")
    run = subprocess.run(
        [exe, "db", "upgrade", "--db", url],
        cwd=work,
        env=clean_env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    current = subprocess.run(
        [exe, "db", "current", "--db", url],
        cwd=work,
        env=clean_env,
        capture_output=True,
        text=True,
    )
    assert current.returncode == 0, current.stderr
    assert head() in current.stdout and "(head)" in current.stdout
    # without the postgresql extra, a PostgreSQL URL says what to install
    postgres = subprocess.run(
        [exe, "stats", "--db", "postgresql://me@127.0.0.1:1/x"],
        cwd=work,
        env=clean_env,
        capture_output=True,
        text=True,
    )
    assert postgres.returncode == 2
    assert "pip install 'metastore[postgresql]'" in postgres.stderr
    # the package it ran is the installed one, not this checkout
    where = subprocess.run(
        [str(py), "-c", "import metastore; print(metastore.__file__)"],
        cwd=work,
        env=clean_env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(ROOT) not in where.stdout
