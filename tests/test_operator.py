"""Operator basics: errors, duplicates apart, --db anywhere, stats, -v, tables,
progress, Ctrl-C (issue 11, item 6).  Both backends where the store is involved."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest
from click.testing import CliRunner, Result
from dicom_samples import CT, copy, mixed_archive, write_ct
from reliability import PATIENCE, command, env, module_rows_sql, wait_for
from rich.cells import cell_len
from rich.console import Console

from metastore.cli import cli
from metastore.cli.output import plain_numbers
from metastore.cli.progress import INDEX, RunProgress
from metastore.index import IndexReport
from metastore.store import Store


def run(*args: str, db_url: str | None = None) -> Result:
    extra = ["--db", db_url] if db_url else []
    return CliRunner().invoke(cli, [*args, *extra], catch_exceptions=False)


def json_lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def troubled(db_url: str, tmp_path: Path) -> tuple[str, Path]:
    """The mixed archive (one truncated file, junk...) plus a duplicate of CT."""
    root = mixed_archive(tmp_path / "src")
    write_ct(root / "zz" / "again.dcm", 1)  # ct/one.dcm's UIDs
    result = run("index", str(root), "--workers", "1", db_url=db_url)
    assert result.exit_code == 1, result.output
    return db_url, root


def test_duplicates_are_reported_apart_from_failures(
    troubled: tuple[str, Path],
) -> None:
    """The summary counts duplicates on their own line; stderr lists failures only."""
    url, root = troubled
    result = run("index", str(root), "--workers", "1", db_url=url)
    assert not [line for line in result.stderr.splitlines() if "duplicate:" in line]
    assert f"unreadable: {root / 'cut.dcm'}: truncated" in result.stderr
    assert "1 duplicates not stored again" in result.stdout
    assert "metastore errors --kind duplicate" in result.stdout
    stats = json.loads(run("stats", "--json", db_url=url).stdout)
    assert (stats["errors"], stats["duplicates"]) == (1, 1)


def test_errors_lists_what_was_not_stored(troubled: tuple[str, Path]) -> None:
    """JSON Lines, by kind, as CSV and as a table."""
    url, root = troubled
    every = json_lines(run("errors", db_url=url).stdout)
    assert sorted(e["kind"] for e in every) == ["duplicate", "unreadable"]
    (dup,) = json_lines(run("errors", "--kind", "duplicate", db_url=url).stdout)
    assert dup["location"] == str(root / "zz" / "again.dcm")
    assert "SOP Instance UID" in dup["reason"] or "stored" in dup["reason"]
    failures = run(
        "errors", "--kind", "unreadable", "--kind", "invalid", db_url=url
    ).stdout
    assert [e["location"] for e in json_lines(failures)] == [str(root / "cut.dcm")]
    rows = list(
        csv.reader(io.StringIO(run("errors", "--format", "csv", db_url=url).stdout))
    )
    assert rows[0] == ["location", "kind", "reason"] and len(rows) == 3
    table = run("errors", "--format", "table", db_url=url).stdout
    assert str(root / "cut.dcm") in table and "location" in table
    assert run("errors", "--kind", "bogus", db_url=url).exit_code == 2


def test_db_before_or_after_the_command(
    db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`metastore --db X stats`, `metastore stats --db X`; two different: exit 2."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # the default database would land here
    monkeypatch.delenv("METASTORE_DATABASE_URL", raising=False)
    copy(CT, tmp_path / "src" / "ct.dcm")
    assert run("--db", db_url, "index", str(tmp_path / "src")).exit_code == 0
    before = run("--db", db_url, "stats", "--json")
    after = run("stats", "--json", "--db", db_url)
    both = run("--db", db_url, "stats", "--json", "--db", db_url)
    for result in (before, after, both):
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["instances"] == 1
    other = f"sqlite:///{tmp_path / 'other.sqlite'}"
    clash = run("--db", db_url, "stats", "--db", other)
    assert clash.exit_code == 2 and "--db given twice" in clash.stderr
    monkeypatch.setenv("METASTORE_DATABASE_URL", other)
    assert run("stats", "--db", db_url).exit_code == 0  # env, then --db: no clash
    assert list(cwd.iterdir()) == []


def test_stats_table_and_json(db_url: str, tmp_path: Path) -> None:
    """A table (--table, or a terminal), JSON with --json; whole numbers are ints."""
    copy(CT, tmp_path / "src" / "ct.dcm")
    run("index", str(tmp_path / "src"), db_url=db_url)
    text = run("stats", "--json", db_url=db_url).stdout
    stats = json.loads(text)
    assert all(v is None or type(v) is int for v in stats.values()), stats
    table = run("stats", "--table", db_url=db_url).stdout
    assert "instances" in table and "database bytes" in table
    assert plain_numbers({"a": [800.0, 0.5], "b": 3}) == {"a": [800, 0.5], "b": 3}


def test_verbose_shows_the_library_log(tmp_path: Path) -> None:
    """-v shows INFO records of metastore's loggers on stderr; without it, none."""
    quiet = run("db", "upgrade", "--db", f"sqlite:///{tmp_path / 'a.sqlite'}")
    assert quiet.exit_code == 0 and "upgrading" not in quiet.stderr
    loud = run("-v", "db", "upgrade", "--db", f"sqlite:///{tmp_path / 'b.sqlite'}")
    assert loud.exit_code == 0
    assert "INFO metastore.store.db: upgrading sqlite:///" in loud.stderr


def test_tables_align_wide_characters(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Japanese name takes two columns per character: rich lines the table up."""
    ds = pydicom.dcmread(write_ct(tmp_path / "src" / "a.dcm", 1))
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8
    ds.PatientName = "Yamada^Tarou=山田^太郎"
    ds.save_as(tmp_path / "src" / "a.dcm")
    write_ct(tmp_path / "src" / "b.dcm", 1, patient_name="Doe^Jane", study=2)
    run("index", str(tmp_path / "src"), db_url=db_url)
    result = run("query", "studies", "--table", db_url=db_url)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if "20200115" in line]
    assert len(rows) == 2 and any("山田" in row for row in rows)
    # the study date starts in the same terminal column on every row
    starts = {cell_len(row[: row.index("20200115")]) for row in rows}
    assert len(starts) == 1, result.stdout


def report(**counts: Any) -> IndexReport:
    return IndexReport(**{"seconds": 2.0, **counts})


def test_progress_bar_on_a_terminal() -> None:
    """Total, percentage, rate, ETA and the counts, drawn by rich."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with RunProgress(INDEX, 4, console=console) as progress:
        progress(report(files_seen=3, indexed=2, skipped=1))
    text = out.getvalue()
    for part in ("3/4", "75%", "2 files/s", "ETA", "2 indexed, 0 unchanged, 1 skipped"):
        assert part in text, text


def test_progress_lines_elsewhere() -> None:
    """Not a terminal: a plain line with the same figures, now and then."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=False)
    progress = RunProgress(INDEX, 10, console=console, interval=0)
    assert progress.line(report(files_seen=4, indexed=4)) == (
        "4/10 files (40%), 2 files/s, ETA 0:00:03: "
        "4 indexed, 0 unchanged, 0 skipped, 0 failed"
    )
    grown = progress.line(report(files_seen=12))  # more sources than counted
    assert grown.startswith("12/12 files (100%)")
    assert out.getvalue() == ""  # log lines go through click, not the console


def _on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run ``args`` with stderr on a pseudo-terminal; its status and stderr."""
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stderr=slave, stdout=subprocess.DEVNULL, env=env())
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return proc.wait(timeout=PATIENCE), b"".join(chunks).decode(errors="replace")


def test_index_shows_progress_on_a_terminal_unless_quiet(
    db_url: str, tmp_path: Path
) -> None:
    """The pre-counted total on the bar; --quiet draws nothing."""
    for n in range(1, 4):
        write_ct(tmp_path / "src" / f"{n}.dcm", n)
    status, shown = _on_a_terminal(command(db_url, "index", tmp_path / "src"))
    assert status == 0 and "3/3" in shown and "100%" in shown, shown
    (tmp_path / "src" / "1.dcm").touch()
    status, shown = _on_a_terminal(
        command(db_url, "index", tmp_path / "src", "--quiet")
    )
    assert (status, shown) == (0, "")


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_rerun_continues(
    db_url: str, tmp_path: Path
) -> None:
    """SIGINT inside batch 3: exit 130, what is saved said, the rerun completes."""
    src = tmp_path / "src"
    for n in range(1, 13):
        write_ct(src / f"{n:02}.dcm", n)
    go = tmp_path / "go"
    args = command(db_url, "index", src, "--workers", "1", "--batch-size", "4")
    hooks = {
        "METASTORE_TEST_PAUSE_AT_SQL": f"3:{module_rows_sql(db_url)}",
        "METASTORE_TEST_PAUSE_FILE": str(go),
    }
    proc = subprocess.Popen(
        args,
        env=env(**hooks),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Python leaves Ctrl-C alone if it starts with SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        wait_for(Path(f"{go}.paused").exists, "the indexer to pause in batch 3")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=PATIENCE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Aborted" not in err
    assert "Interrupted: 8 files indexed and saved by this run" in err
    assert "the 4 files of the batch being written were not" in err
    assert "run the same command again to continue" in err
    with Store(db_url) as store:
        assert store.stats()["instances"] == 8  # two batches, not the third
    again = subprocess.run(args, env=env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "4 indexed, 8 unchanged" in again.stdout
    with Store(db_url) as store:
        assert store.stats()["instances"] == 12
