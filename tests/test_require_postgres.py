"""METASTORE_REQUIRE_POSTGRES=1 turns a missing PostgreSQL server into failures.

CI sets it: a server that passes ``pg_isready`` but refuses the test
connection (authentication, or gone by the time the tests start) must not
turn every PostgreSQL test into a skip and the run green.  Each case runs
pytest in a subprocess on a one-test file that asks for ``postgres_url``,
with tests/conftest.py loaded as a plugin and a URL nothing listens on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Port 1 on the loopback: the connection is refused at once.
REFUSED = "postgresql://postgres@127.0.0.1:1/postgres"


def run_postgres_test(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run one test that needs PostgreSQL, with ``env`` over a clean slate."""
    test = tmp_path / "test_needs_postgres.py"
    test.write_text(
        "def test_needs_postgres(postgres_url):\n    assert postgres_url\n",
        encoding="utf-8",
    )
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("METASTORE_TEST_POSTGRES_URL", "METASTORE_REQUIRE_POSTGRES")
    }
    args = ["-q", "-rfEs", "-p", "no:cacheprovider", "-p", "tests.conftest"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", *args, str(test)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**base, "PYTHONPATH": str(ROOT), **env},
        timeout=300,
    )


@pytest.mark.parametrize(
    "env",
    [
        {"METASTORE_TEST_POSTGRES_URL": REFUSED},
        {},  # no URL at all
    ],
    ids=["refused", "unset"],
)
def test_postgres_tests_skip_without_a_server(tmp_path: Path, env: dict[str, str]):
    """Where PostgreSQL is optional, its tests skip, and the run passes."""
    result = run_postgres_test(tmp_path, **env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout


@pytest.mark.parametrize(
    "env",
    [
        {"METASTORE_TEST_POSTGRES_URL": REFUSED},
        {},  # no URL at all
    ],
    ids=["refused", "unset"],
)
def test_required_postgres_fails_without_a_server(tmp_path: Path, env: dict[str, str]):
    """With METASTORE_REQUIRE_POSTGRES=1 the same test errors, and the run fails."""
    result = run_postgres_test(tmp_path, METASTORE_REQUIRE_POSTGRES="1", **env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "skipped" not in result.stdout
    assert "1 error" in result.stdout
    assert "METASTORE_REQUIRE_POSTGRES is set" in result.stdout
