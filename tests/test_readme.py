"""The README's Python examples run as written, and its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_starts_with_the_two_commands():
    """The first code block is exactly the demo and the test command."""
    first = re.search(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert first is not None
    commands = [
        line.split("#")[0].strip()
        for line in first.group(1).splitlines()
        if line.split("#")[0].strip()
    ]
    assert commands == ["scripts/demo", "scripts/test"]
    root = README.parent
    for command in commands:
        assert (root / command).is_file()


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index):
    """Each ```python block of the README executes without error."""
    from metastore import metadata

    before = metadata.providers()
    try:
        exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {})
    finally:
        # a README example must not leave providers in the default registry
        assert metadata.providers() == before


def test_cli_commands_in_readme_exist():
    """Every `metastore X` the README shows is a real command with help text."""
    from metastore.cli import cli

    shell = "\n".join(
        re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    )
    names = set(re.findall(r"^metastore ([a-z]+)", shell, re.M))
    assert names, "the README shows no command"
    runner = CliRunner()
    for name in sorted(names):
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Example" in result.output or "example" in result.output, name


def test_ci_runs_the_checks_and_the_readme_test_command():
    """.ci/run runs scripts/lint, sets up the viewer test and runs scripts/test,
    with PostgreSQL required."""
    root = README.parent
    ci = (root / ".ci" / "run").read_text(encoding="utf-8")
    lines = ci.splitlines()
    commands = [line.split()[0] for line in lines if line.startswith("scripts/")]
    assert commands == [
        "scripts/setup",
        "scripts/lint",
        "scripts/ohif-setup",
        "scripts/test",
    ]
    assert "METASTORE_REQUIRE_POSTGRES=1" in ci
    lint = (root / "scripts" / "lint").read_text(encoding="utf-8")
    for check in ("ruff format --check", "ruff check", "mypy"):
        assert f".venv/bin/{check}" in lint
