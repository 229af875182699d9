"""Nothing lost: crashes, concurrent indexers, shards and database faults.

Indexers run as ``metastore`` subprocesses (``tests/hooked_cli.py``); the
crash points of ``tests/crashpoints.py`` make them die (SIGKILL) or pause at
a chosen point, so no test depends on timing.  After each scenario the database must
equal a clean run (export and row counts) and break no invariant
(``reliability.BROKEN``).  See docs/guarantees.md.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from crashpoints import CrashPoints
from reliability import (
    BATCH,
    PATIENCE,
    build_archive,
    build_archive_with_duplicates,
    command,
    counts,
    export,
    index_command,
    module_rows_sql,
    problems,
    processes_mentioning,
    run,
    searched,
    start,
    start_paused,
    wait_for,
)
from stored import query_rows

from metastore import DatabaseProvider, index_paths
from metastore.cli import cli
from metastore.index import pipeline, workers
from metastore.index.discovery import Entry
from metastore.index.read import ReadCache
from metastore.index.sharding import parse_shard, shard_of
from metastore.store import Store, db

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The archive every test indexes (read-only)."""
    return build_archive(tmp_path_factory.mktemp("nothing-lost") / "archive")


def clean_run(archive: Path, url: str) -> dict[str, Any]:
    """Export, row counts and search results of one clean run over ``archive``."""
    with Store(url) as store:
        report = index_paths(store, [archive], workers=1, batch_size=BATCH)
    assert report.ok and report.indexed > 30
    assert problems(url) == {}
    return {
        "export": export(url),
        "counts": counts(url),
        "searched": searched(url),
        "report": report,
    }


@pytest.fixture(scope="module")
def clean(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Export and row counts of one clean, uninterrupted run over the archive."""
    return clean_run(
        archive, f"sqlite:///{tmp_path_factory.mktemp('clean') / 'clean.sqlite'}"
    )


@pytest.fixture(scope="module")
def duplicated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The archive with two refused copies of stored instances (read-only)."""
    root = tmp_path_factory.mktemp("duplicated") / "archive"
    return build_archive_with_duplicates(root)


@pytest.fixture(scope="module")
def clean_duplicated(
    duplicated: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """:func:`clean` of the archive with duplicates."""
    url = f"sqlite:///{tmp_path_factory.mktemp('clean-dup') / 'clean.sqlite'}"
    result = clean_run(duplicated, url)
    assert (result["report"].duplicates, result["report"].skipped) == (2, 4)
    return result


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; any still running at the end is killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def assert_like_clean(url: str, clean: dict[str, Any]) -> None:
    """The store equals the clean run and breaks no invariant."""
    assert export(url) == clean["export"]
    assert counts(url) == clean["counts"]
    assert searched(url) == clean["searched"]
    assert problems(url) == {}


def assert_like_clean_values_aside(url: str, clean: dict[str, Any]) -> None:
    """As :func:`assert_like_clean`, but module values may be grouped otherwise.

    Concurrent writers batch differently, and values one batch shares are
    stored in different rows than another batch would (docs/guarantees.md).
    """
    assert export(url) == clean["export"]
    got, want = counts(url), dict(clean["counts"])
    got.pop("module_values")
    want.pop("module_values")
    assert got == want
    assert searched(url) == clean["searched"]
    assert problems(url, garbage=False) == {}


def killed(result: subprocess.CompletedProcess[str]) -> bool:
    """Whether a subprocess died of SIGKILL."""
    return result.returncode == -signal.SIGKILL


# -- crash and resume ------------------------------------------------------


@pytest.mark.parametrize("where", ["between-batches", "mid-batch"])
def test_killed_indexer_resumes_to_a_clean_store(
    db_url: str, archive: Path, clean: dict[str, Any], where: str
) -> None:
    """SIGKILL between or inside batches; the rerun ends identical to a clean run."""
    kill_and_rerun(db_url, archive, clean, where)


@pytest.mark.parametrize("where", ["between-batches", "mid-batch"])
def test_killed_indexer_with_duplicates_resumes_to_a_clean_store(
    db_url: str, duplicated: Path, clean_duplicated: dict[str, Any], where: str
) -> None:
    """The same with refused copies in the committed batches (read again by the
    rerun): no row differs, module values included, and no study or series is
    left without an instance or takes a refused copy's attributes."""
    kill_and_rerun(db_url, duplicated, clean_duplicated, where)
    studies, series = searched(db_url)
    assert "Intruder^Eve" not in {s["PatientName"] for s in studies}
    assert "INTRUDER" not in {s["StudyDescription"] for s in studies}
    copied = "1.2.826.0.1.3680043.8.498.77."  # write_ct's studies, all CT
    assert {
        s["Modality"] for s in series if s["StudyInstanceUID"].startswith(copied)
    } == {"CT"}


def kill_and_rerun(
    db_url: str, archive: Path, clean: dict[str, Any], where: str
) -> None:
    """Kill an indexer of ``archive`` at ``where``, rerun it, compare with ``clean``."""
    if where == "between-batches":
        hook = {"METASTORE_TEST_KILL_AFTER_BATCHES": "3"}
    else:  # batch 4 has its instances and images, not yet its module rows
        hook = {"METASTORE_TEST_KILL_AT_SQL": f"4:{module_rows_sql(db_url)}"}
    first = run(index_command(db_url, [archive]), hook)
    assert killed(first), first.stderr
    partial = counts(db_url)
    assert 0 < partial["instances"] < clean["counts"]["instances"]
    assert problems(db_url) == {}  # the killed batch left nothing behind
    second = run(index_command(db_url, [archive]))
    assert second.returncode == 0, second.stderr
    assert_like_clean(db_url, clean)


@pytest.mark.parametrize(
    "args", [("index",), ("db", "upgrade")], ids=["first-index", "db-upgrade"]
)
def test_killed_migration_leaves_an_empty_database(
    empty_db_url: str, archive: Path, clean: dict[str, Any], args: tuple[str, ...]
) -> None:
    """SIGKILL while migrating a new database: no half schema; the rerun works."""
    hook = {"METASTORE_TEST_KILL_AT_SQL": "3:CREATE TABLE"}
    if args == ("index",):
        first = run(index_command(empty_db_url, [archive]), hook)
    else:
        first = run(command(empty_db_url, *args), hook)
    assert killed(first), first.stderr
    engine = db.create_engine(empty_db_url)
    try:
        assert db.current(engine) is None
        assert problems_free_of_tables(engine)
    finally:
        engine.dispose()
    second = run(index_command(empty_db_url, [archive]))
    assert second.returncode == 0, second.stderr
    assert_like_clean(empty_db_url, clean)


def problems_free_of_tables(engine: sa.Engine) -> bool:
    """Whether the database has no table at all (a migration left nothing)."""
    return sa.inspect(engine).get_table_names() == []


def test_killed_indexer_leaves_no_worker_behind(
    sqlite_url: str, archive: Path, clean: dict[str, Any]
) -> None:
    """With worker processes, SIGKILL of the indexer takes its workers with it."""
    marker = str(archive)
    args = index_command(sqlite_url, [archive], workers=2)
    hook = {"METASTORE_TEST_KILL_AT_SQL": f"3:{module_rows_sql(sqlite_url)}"}
    first = run(args, hook)
    assert killed(first), first.stderr
    wait_for(lambda: not processes_mentioning(marker), "the workers to exit")
    second = run(args)
    assert second.returncode == 0, second.stderr
    assert_like_clean(sqlite_url, clean)


# -- a worker process that dies ---------------------------------------------

#: The indexer's worker task, as metastore has it.
READ_CHUNK = pipeline._read_chunk

#: The source whose chunk kills its worker (a codec crashing on a corrupt
#: file, the out-of-memory killer), under the archive.
KILLER = os.path.join("a", "ct02.dcm")


def read_chunk_or_die(
    chunk: list[Entry], root: str | None, zips: ReadCache = pipeline._WORKER_ZIPS
) -> list[pipeline.Outcome]:
    """The indexer's worker task, but a chunk holding :data:`KILLER` kills
    its worker process (forked workers run this patched module)."""
    if any(entry.path.endswith(os.sep + KILLER) for entry in chunk):
        os._exit(3)
    return READ_CHUNK(chunk, root, zips)


def always_die(
    chunk: list[Entry], root: str | None, zips: ReadCache = pipeline._WORKER_ZIPS
) -> list[pipeline.Outcome]:
    """A worker task that kills its worker on every chunk."""
    os._exit(3)


def forked_workers() -> bool:
    """Whether worker processes are forked, so that they run patched code."""
    return workers._process_context().get_start_method() == "fork"


@pytest.fixture(scope="module")
def dicom_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The archive without its files that are not DICOM (read-only).

    A source lost with a dead worker is failed; read again, one that is not
    DICOM is skipped and keeps that error row (a skipped source clears no
    error row), where a clean run has none.
    """
    root = build_archive(tmp_path_factory.mktemp("dicom-only") / "archive")
    (root / "a" / "README.txt").unlink()
    (root / "c" / "junk.bin").unlink()
    return root


@pytest.fixture(scope="module")
def clean_dicom(
    dicom_archive: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """:func:`clean` of the archive without its files that are not DICOM."""
    url = f"sqlite:///{tmp_path_factory.mktemp('clean-dicom') / 'clean.sqlite'}"
    return clean_run(dicom_archive, url)


def test_a_dead_worker_fails_only_its_killer_and_the_run_goes_on(
    db_url: str,
    dicom_archive: Path,
    clean_dicom: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker dies on one source: a fresh pool reads on, the chunks lost with
    the broken pool are read again alone, halving the killer's, and only the
    killing source fails; the rerun reads it and ends clean."""
    if not forked_workers():
        pytest.skip("the patched task reaches only forked workers")
    monkeypatch.setattr(pipeline, "_read_chunk", read_chunk_or_die)
    with Store(db_url) as store:
        first = index_paths(store, [dicom_archive], workers=2, batch_size=BATCH)
    (error,) = first.errors
    assert error.location.endswith(KILLER) and first.failed == 1
    assert error.reason.startswith("worker process failed: BrokenProcessPool: ")
    with Store(db_url) as store:
        stored = set(store.known_sources())
    assert multiprocessing.active_children() == []  # the broken pools were joined
    assert problems(db_url) == {}

    monkeypatch.undo()
    with Store(db_url) as store:
        second = index_paths(store, [dicom_archive], workers=2, batch_size=BATCH)
        every = set(store.known_sources())
    assert second.ok and second.indexed == 1
    # everything but the killer was stored by the first run
    assert error.location in every and stored == every - {error.location}
    # the killer's chunk was written in parts; in this archive its values
    # still come out grouped as a clean run groups them (in general they
    # may not: docs/indexing.md), so the whole store is compared
    assert_like_clean(db_url, clean_dicom)


def test_workers_dying_on_every_chunk_stop_the_command_in_one_line(
    sqlite_url: str, archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pools that keep breaking end ``metastore index`` with one line and exit 2."""
    if not forked_workers():
        pytest.skip("the patched task reaches only forked workers")
    monkeypatch.setattr(pipeline, "_read_chunk", always_die)
    monkeypatch.setattr(workers, "POOL_RESTARTS", 1)
    args = ["--db", sqlite_url, "index", str(archive), "--workers", "2"]
    result = CliRunner().invoke(cli, [*args, "--batch-size", "1"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: worker processes keep dying: 2 worker")
    assert result.output.count("\n") == 1
    assert multiprocessing.active_children() == []


# -- concurrency -----------------------------------------------------------


@pytest.mark.postgres
def test_concurrent_indexers_on_postgres(
    postgres_url: str,
    archive: Path,
    clean: dict[str, Any],
    procs: list[subprocess.Popen[str]],
) -> None:
    """Four indexers over overlapping folders: all exit 0, the store of a clean run."""
    a, b, c = archive / "a", archive / "b", archive / "c"
    for paths in ([a, b], [b, c], [c, a], [archive]):
        procs.append(start(index_command(postgres_url, paths)))
    for proc in procs:
        _, err = proc.communicate(timeout=PATIENCE)
        assert proc.returncode == 0, err
    assert_like_clean_values_aside(postgres_url, clean)
    # Garbage a rewrite may leave (docs/guarantees.md) goes with the next prune.
    pruned = run(index_command(postgres_url, [archive], "--prune"))
    assert pruned.returncode == 0, pruned.stderr
    assert problems(postgres_url) == {}
    assert export(postgres_url) == clean["export"]


def test_sqlite_readers_and_a_second_writer_during_a_write(
    sqlite_url: str,
    archive: Path,
    clean: dict[str, Any],
    tmp_path: Path,
    procs: list[subprocess.Popen[str]],
) -> None:
    """Readers see committed batches only; a second writer waits, then finishes."""
    go_a, go_b = tmp_path / "go-a", tmp_path / "go-b"
    go_b.touch()  # B only marks when it asks for the write lock
    writer_a = start_paused(
        procs,
        index_command(sqlite_url, [archive]),
        f"2:{module_rows_sql(sqlite_url)}",
        go_a,
        "writer A to pause inside batch 2",
    )
    # A holds the write lock, half way through batch 2: readers see batch 1.
    final = dict(clean["export"])
    seen = export(sqlite_url)
    assert 0 < len(seen) < len(final)
    assert all(final[image_id] == modules for image_id, modules in seen)
    with Store(sqlite_url) as store:
        assert store.stats()["images"] == len(seen)
        series = query_rows(store, "series")
        assert (
            sum(s["NumberOfSeriesRelatedInstances"] for s in series)
            == (store.stats()["instances"])
        )
    provider = DatabaseProvider(sqlite_url)
    try:
        image_id, modules = seen[0]
        plane = provider.get("imagePlaneModule", image_id)
        assert plane == modules["imagePlaneModule"]
    finally:
        provider.close()
    writer_b = start_paused(
        procs,
        index_command(sqlite_url, [archive / "b"]),
        "1:BEGIN IMMEDIATE",
        go_b,
        "writer B to ask for the write lock",
    )
    go_a.touch()
    # While both write, every read is a consistent prefix of the final store.
    while writer_a.poll() is None or writer_b.poll() is None:
        for image_id, modules in export(sqlite_url):
            assert final[image_id] == modules
    for proc in (writer_a, writer_b):
        _, err = proc.communicate(timeout=PATIENCE)
        assert proc.returncode == 0, err
    assert_like_clean_values_aside(sqlite_url, clean)


# -- shards ----------------------------------------------------------------


def test_shard_is_a_stable_hash_of_the_location() -> None:
    """shard_of is BLAKE2b of the location modulo N, 1-based, the same every run."""
    import hashlib

    location = "/data/a.zip!/z/1.dcm"
    digest = hashlib.blake2b(location.encode(), digest_size=8).digest()
    assert shard_of(location, 3) == int.from_bytes(digest, "big") % 3 + 1
    assert {shard_of(f"/data/{n}.dcm", 3) for n in range(50)} == {1, 2, 3}
    assert parse_shard(" 2/3 ") == (2, 3)


@pytest.mark.parametrize("bad", ["0/3", "4/3", "1/0", "x", "2", "1/2/3", "-1/3"])
def test_bad_shard_is_one_line_and_exit_2(
    sqlite_url: str, tmp_path: Path, bad: str
) -> None:
    """--shard outside 1..N, or not K/N, is refused with one line on stderr."""
    result = run(command(sqlite_url, "index", tmp_path, "--shard", bad))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("Error: --shard: ")
    with pytest.raises(ValueError, match="shard"):
        parse_shard(bad)


def test_bad_shard_is_refused_by_index_paths(sqlite_url: str, tmp_path: Path) -> None:
    """index_paths checks its shard too."""
    with Store(sqlite_url) as store, pytest.raises(ValueError, match="1 <= K <= N"):
        index_paths(store, [tmp_path], shard=(4, 3))


def test_shards_cover_the_archive_exactly_once(
    archive: Path, clean: dict[str, Any], tmp_path: Path
) -> None:
    """Three shards: disjoint, each source where shard_of says, union = everything."""
    shares: list[set[str]] = []
    seen = 0
    for k in (1, 2, 3):
        with Store(f"sqlite:///{tmp_path / f'{k}.sqlite'}") as store:
            report = index_paths(store, [archive], workers=1, shard=(k, 3))
            seen += report.files_seen
            locations = set(store.known_sources())
        assert locations and all(shard_of(loc, 3) == k for loc in locations)
        shares.append(locations)
    assert seen == clean["report"].files_seen
    assert (
        sum(map(len, shares))
        == len(set().union(*shares))
        == (clean["counts"]["sources"])
    )


@pytest.mark.postgres
def test_three_shard_processes_into_one_postgres(
    postgres_url: str,
    archive: Path,
    clean: dict[str, Any],
    procs: list[subprocess.Popen[str]],
) -> None:
    """N=3 concurrent shard processes give the store of one unsharded run."""
    for k in (1, 2, 3):
        procs.append(
            start(index_command(postgres_url, [archive], "--shard", f"{k}/3", "--json"))
        )
    indexed = 0
    for proc in procs:
        out, err = proc.communicate(timeout=PATIENCE)
        assert proc.returncode == 0, err
        indexed += int(out.split('"indexed":')[1].split(",")[0])
    assert indexed == clean["report"].indexed
    assert_like_clean_values_aside(postgres_url, clean)


def test_prune_under_a_shard_prunes_only_its_share(
    sqlite_url: str, archive: Path, tmp_path: Path
) -> None:
    """--prune --shard K/N forgets deleted files of share K, never of other shares."""
    import shutil

    copy = tmp_path / "archive"
    shutil.copytree(archive, copy)
    with Store(sqlite_url) as store:
        index_paths(store, [copy], workers=1)
        files = sorted(str(p) for p in (copy / "a").glob("ct*.dcm"))
        by_shard = {shard_of(f, 3): f for f in files}
        assert len(by_shard) >= 2
        (mine, gone_mine), (other, gone_other) = sorted(by_shard.items())[:2]
        os.unlink(gone_mine)
        os.unlink(gone_other)
        index_paths(store, [copy], workers=1, prune=True, shard=(mine, 3))
        known = store.known_sources()
        assert gone_mine not in known and gone_other in known
        index_paths(store, [copy], workers=1, prune=True, shard=(other, 3))
        assert gone_other not in store.known_sources()
    assert problems(sqlite_url) == {}


# -- database faults -------------------------------------------------------

PASSWORD = "s3cret-pw"


def with_password(url: str) -> str:
    """The same database URL with a password (trust auth ignores it)."""
    return url.replace(
        "postgresql+psycopg://postgres@", f"postgresql://postgres:{PASSWORD}@"
    )


@pytest.mark.postgres
def test_dropped_connection_mid_batch_is_retried(
    postgres_url: str,
    archive: Path,
    clean: dict[str, Any],
    tmp_path: Path,
    procs: list[subprocess.Popen[str]],
) -> None:
    """pg_terminate_backend inside a batch: the batch is written again, exit 0."""
    from reliability import terminate_backends

    admin = os.environ["METASTORE_TEST_POSTGRES_URL"]
    url = with_password(postgres_url)
    go = tmp_path / "go"
    proc = start_paused(
        procs,
        index_command(url, [archive]),
        f"2:{module_rows_sql(postgres_url)}",
        go,
        "the indexer to pause inside batch 2",
    )
    assert terminate_backends(admin, postgres_url) >= 1
    go.touch()
    out, err = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 0, err
    assert "lost the connection" in err
    assert PASSWORD not in out + err
    assert_like_clean(postgres_url, clean)


@pytest.mark.postgres
def test_database_gone_for_good_stops_with_one_line_then_rerun_completes(
    postgres_url: str,
    archive: Path,
    clean: dict[str, Any],
    tmp_path: Path,
    procs: list[subprocess.Popen[str]],
) -> None:
    """Connections refused after a drop: exit 2, one line, no secret; rerun works."""
    from reliability import admin_sql, terminate_backends
    from sqlalchemy.engine import make_url

    admin = os.environ["METASTORE_TEST_POSTGRES_URL"]
    name = make_url(postgres_url).database
    url = with_password(postgres_url)
    go = tmp_path / "go"
    proc = start_paused(
        procs,
        index_command(url, [archive]),
        f"3:{module_rows_sql(postgres_url)}",
        go,
        "the indexer to pause inside batch 3",
    )
    admin_sql(admin, f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
    try:
        terminate_backends(admin, postgres_url)
        go.touch()
        out, err = proc.communicate(timeout=PATIENCE)
    finally:
        admin_sql(admin, f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
    assert proc.returncode == 2, err
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert PASSWORD not in out + err
    assert problems(postgres_url) == {}  # batches 1 and 2 whole, nothing of 3
    assert 0 < counts(postgres_url)["instances"] < clean["counts"]["instances"]
    rerun = run(index_command(url, [archive]))
    assert rerun.returncode == 0, rerun.stderr
    assert_like_clean(postgres_url, clean)


def invoke(*args: str, environ: dict[str, str] | None = None) -> tuple[int, str]:
    """Run the CLI in this process; return its exit status and all its output."""
    result = CliRunner().invoke(
        cli, list(args), env=environ, catch_exceptions=False, prog_name="metastore"
    )
    return result.exit_code, result.output


@pytest.mark.parametrize(
    "args",
    [
        ("index", "."),
        ("stats",),
        ("export",),
        ("query", "studies"),
        ("db", "upgrade"),
        ("db", "current"),
        ("get", "imagePlaneModule", "wadouri:file:///x.dcm?frame=1"),
    ],
)
@pytest.mark.parametrize(
    "host", ["127.0.0.1:1/metastore", "127.0.0.1:5432/metastore_no_such_db"]
)
def test_password_never_shown_on_database_errors(
    args: tuple[str, ...], host: str
) -> None:
    """A URL with a password that cannot be used: exit 2, one line, no password."""
    url = f"postgresql://postgres:{PASSWORD}@{host}"
    status, output = invoke(*args, "--db", url)
    assert status == 2, output
    assert output.startswith("Error: ") and output.count("\n") == 1, output
    assert PASSWORD not in output
    assert "***" in output


@pytest.mark.postgres
def test_password_never_shown_in_help_logs_or_stats(
    postgres_url: str, archive: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """--help with the URL in the environment, warnings, reports, stats: no password."""
    url = with_password(postgres_url)
    environ = {"METASTORE_DATABASE_URL": url}
    for args in (("--help",), ("index", "--help"), ("stats", "--help")):
        status, output = invoke(*args, environ=environ)
        assert status == 0 and PASSWORD not in output
    for args in (("index", str(archive), "--json"), ("stats",), ("db", "upgrade")):
        status, output = invoke(*args, environ=environ)
        assert status == 0, output
        assert PASSWORD not in output
    assert PASSWORD not in caplog.text


# -- migrations on real data -------------------------------------------------


def test_populated_database_downgrades_and_upgrades(
    db_url: str, archive: Path, clean: dict[str, Any]
) -> None:
    """Each revision down to its parent and up again on an indexed archive."""
    from alembic.script import ScriptDirectory

    def index() -> None:
        with Store(db_url) as store:
            assert index_paths(store, [archive], workers=1, batch_size=BATCH).ok

    index()
    script = ScriptDirectory.from_config(db.alembic_config())
    engine = db.create_engine(db_url)
    try:
        for revision in script.walk_revisions():  # newest first
            down = revision.down_revision
            db.downgrade(engine, str(down) if down else "base")
            assert db.current(engine) == (str(down) if down else None)
            db.upgrade(engine, revision.revision)
            db.upgrade(engine)  # the store answers (and indexes) only at head
            if down is None:  # base holds no data: index the archive again
                index()
            assert export(db_url) == clean["export"]
        assert db.is_at_head(engine)
    finally:
        engine.dispose()
    assert_like_clean(db_url, clean)


def test_crash_points_do_nothing_without_their_variables() -> None:
    """Without METASTORE_TEST_* variables no point is set, and none fires."""
    points = CrashPoints({})
    assert not points.active
    assert points.kill_after_batches is None
    assert points.kill_at is None and points.pause_at is None
    points.batch_committed()
    points.before_sql("INSERT INTO image_modules VALUES (1)")


def test_metastore_never_imports_the_crash_points() -> None:
    """The crash points live in tests/: no module of the package names them."""
    package = Path(db.__file__).resolve().parents[1]
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "crashpoints" not in text and "testhooks" not in text, path
