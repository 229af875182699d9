"""Mapping versions, visible staleness and ``metastore reindex``.

A *variant* mapping stands for an older (or newer) metastore release: one
builder answers differently (``voiLutModule``, and so the ``instance``
module that repeats it), multi-frames may lose their frames past the
first, and it has a version of its own.  An archive indexed under it holds
stale answers; ``reindex`` must bring them to what a fresh index of the
sources gives, from the store alone (the archive deleted), one batch per
transaction, surviving SIGKILL and never showing a reader half an image.
"""

from __future__ import annotations

import dataclasses
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from dicom_samples import dicom_json, write_ct
from reliability import (
    BATCH,
    PATIENCE,
    build_archive,
    command,
    counts,
    export,
    module_rows_sql,
    problems,
    run,
    start_paused,
)

import metastore.modules as modules
from metastore import DatabaseProvider, index_paths
from metastore.cli import cli
from metastore.index import extract, recompute, reindex, stale_instances
from metastore.modules import MAPPING_VERSION
from metastore.records import ErrorRecord, Source, StoredInstance
from metastore.store import Store, db

#: The version the variant mapping records.
VARIANT = "test-variant"
#: The multi-frame of build_archive (10 frames).
ENHANCED = "c/enhanced"


@contextmanager
def variant_mapping(*, one_frame: bool = False) -> Iterator[None]:
    """Index (or reindex) with a test-only mapping of version :data:`VARIANT`.

    ``voiLutModule`` answers ``voiLUTFunction: "VARIANT"``; with
    ``one_frame``, a multi-frame has only its first frame as an image.
    """
    real = modules._BUILDERS["voiLutModule"]

    def voi(frame: Any, image_id: str) -> Any:
        value = real(frame, image_id)
        return None if value is None else {**value, "voiLUTFunction": "VARIANT"}

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(modules._BUILDERS, "voiLutModule", voi)
        patch.setattr(extract, "MAPPING_VERSION", VARIANT)
        patch.setattr(recompute, "MAPPING_VERSION", VARIANT)
        if one_frame:
            patch.setattr(extract, "number_of_frames", lambda instance: 1)
        yield


def index(url: str, root: Path) -> None:
    """Index ``root`` into ``url`` in this process, in test-sized batches."""
    with Store(url) as store:
        report = index_paths(store, [root], workers=1, batch_size=BATCH)
    assert report.ok, report.errors


def versions(url: str) -> dict[str | None, int]:
    """``{mapping_version: instances}``."""
    engine = db.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT mapping_version, count(*) FROM instances "
                    "GROUP BY mapping_version"
                )
            )
            return {version: n for version, n in rows}
    finally:
        engine.dispose()


def sql(url: str, statement: str) -> None:
    """Run one statement in a transaction of its own."""
    engine = db.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def triples(url: str) -> list[tuple[int, int, int]]:
    """Every image_modules row as stored."""
    engine = db.create_engine(url)
    try:
        with engine.connect() as conn:
            return [
                tuple(row)
                for row in conn.execute(
                    sa.text(
                        "SELECT image_id, module_type_id, value_id FROM image_modules "
                        "ORDER BY 1, 2"
                    )
                )
            ]
    finally:
        engine.dispose()


def reindexed(url: str, **options: Any) -> recompute.ReindexReport:
    """Run a reindex in this process."""
    with Store(url) as store:
        return reindex(store, workers=options.pop("workers", 1), **options)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The archive the tests index (read-only; tests that delete it copy it)."""
    return build_archive(tmp_path_factory.mktemp("reindex") / "archive")


@pytest.fixture(scope="module")
def fresh(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Export and counts of a fresh index of the archive by this mapping."""
    url = f"sqlite:///{tmp_path_factory.mktemp('fresh') / 'fresh.sqlite'}"
    index(url, archive)
    return {"export": export(url), "counts": counts(url)}


# -- the version recorded --------------------------------------------------


def test_an_index_records_this_mapping_version(db_url: str, archive: Path) -> None:
    """Every instance written by index carries MAPPING_VERSION; none is stale."""
    index(db_url, archive)
    assert versions(db_url) == {MAPPING_VERSION: counts(db_url)["instances"]}
    with Store(db_url) as store:
        assert stale_instances(store) == 0
    with DatabaseProvider(db_url) as provider:
        assert provider.stale_instances() == 0


def test_stale_answers_are_answered_and_counted(db_url: str, archive: Path) -> None:
    """The provider answers stale rows as stored, and counts them."""
    with variant_mapping():
        index(db_url, archive)
    instances = counts(db_url)["instances"]
    assert versions(db_url) == {VARIANT: instances}
    image_id, modules_ = export(db_url)[0]
    with DatabaseProvider(db_url) as provider:
        assert provider.stale_instances() == instances
        voi = provider.get("voiLutModule", image_id)
        assert voi is not None and voi["voiLUTFunction"] == "VARIANT"
        assert voi == modules_["voiLutModule"]


# -- reindex from the store ------------------------------------------------


def test_reindex_from_the_store_equals_a_fresh_index(
    db_url: str, archive: Path, fresh: dict[str, Any], tmp_path: Path
) -> None:
    """Old answers, missing frames and a module type added since, all brought
    up to date from the stored DICOM JSON with the archive deleted."""
    copy = shutil.copytree(archive, tmp_path / "archive")
    # Index the copy and compare with a fresh index of the copy (imageIds of
    # files hold their paths), the original kept for the other tests.
    reference = f"sqlite:///{tmp_path / 'reference.sqlite'}"
    index(reference, copy)
    want = export(reference)
    with variant_mapping(one_frame=True):
        index(db_url, copy)
    # cineModule was not a module type when these instances were indexed.
    sql(
        db_url,
        "DELETE FROM image_modules WHERE module_type_id = "
        "(SELECT id FROM module_types WHERE name = 'cineModule')",
    )
    before = export(db_url)
    assert before != want
    assert all("cineModule" not in m for _, m in before)
    assert len(before) == len(want) - 9  # the enhanced MR's frames 2..10
    shutil.rmtree(copy)

    report = reindexed(db_url, workers=2)

    assert report.ok and report.error_count == 0
    total = counts(reference)["instances"]
    assert (report.instances, report.reindexed, report.stale) == (total, total, 0)
    assert (report.images_added, report.images_removed) == (9, 0)
    assert export(db_url) == want
    got, expected = counts(db_url), counts(reference)
    got.pop("module_values"), expected.pop("module_values")  # grouped otherwise
    assert got == expected
    assert problems(db_url) == {}  # the replaced values were swept
    assert versions(db_url) == {MAPPING_VERSION: total}


def rows_by_series(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every image_modules row as stored, by SeriesInstanceUID."""
    engine = db.create_engine(url)
    try:
        with engine.connect() as conn:
            found: dict[str, list[tuple[Any, ...]]] = {}
            for uid, *row in conn.execute(
                sa.text(
                    "SELECT s.series_instance_uid, m.image_id, m.module_type_id, "
                    "m.value_id FROM image_modules m "
                    "JOIN images i ON i.id = m.image_id "
                    "JOIN instances n ON n.id = i.instance_id "
                    "JOIN series s ON s.id = n.series_id ORDER BY 2, 3"
                )
            ):
                found.setdefault(uid, []).append(tuple(row))
            return found
    finally:
        engine.dispose()


#: The series of folder ``a`` of build_archive: eight CTs.
SERIES_A = "1.2.826.0.1.3680043.8.498.77.1.1"


def test_reindex_is_incremental(db_url: str, archive: Path) -> None:
    """Only stale instances are read and rewritten; a second run does nothing."""
    index(db_url, archive)
    rows = triples(db_url)
    assert reindexed(db_url).instances == 0
    assert triples(db_url) == rows
    before = rows_by_series(db_url)
    sql(
        db_url,
        "UPDATE instances SET mapping_version = NULL WHERE series_id = "
        f"(SELECT id FROM series WHERE series_instance_uid = '{SERIES_A}')",
    )
    with Store(db_url) as store:
        assert stale_instances(store) == 8
    report = reindexed(db_url)
    assert (report.instances, report.reindexed, report.stale) == (8, 8, 0)
    after = rows_by_series(db_url)
    assert {uid: r for uid, r in after.items() if uid != SERIES_A} == {
        uid: r for uid, r in before.items() if uid != SERIES_A
    }
    assert versions(db_url) == {MAPPING_VERSION: counts(db_url)["instances"]}
    assert reindexed(db_url).instances == 0


def answers(url: str) -> dict[tuple[str, str], Any]:
    """``{(imageId, module type): value}`` as the store answers."""
    return {
        (image_id, name): value
        for image_id, values in export(url)
        for name, value in values.items()
    }


def test_an_injected_mapping_change_updates_exactly_the_affected_rows(
    db_url: str, archive: Path
) -> None:
    """A variant that changes voiLutModule: exactly the answers it changes move.

    The affected answers are those the variant computes differently from
    the stored DICOM JSON (voiLutModule and the instance module that repeats
    it); every other answer, image and row count stays.
    """
    index(db_url, archive)
    old = answers(db_url)
    before = counts(db_url)
    with variant_mapping():
        expected = {
            key
            for key, value in old.items()
            if key[1] in ("voiLutModule", "instance") and value is not None
        }
        report = reindexed(db_url, batch_size=BATCH)
    assert report.reindexed == before["instances"] and report.stale == 0
    new = answers(db_url)
    assert new.keys() == old.keys()
    changed = {key for key in old if new[key] != old[key]}
    assert changed == expected and len(expected) > 20
    for image_id, name in changed:
        field = "voiLUTFunction" if name == "voiLutModule" else "VOILUTFunction"
        assert new[image_id, name][field] == "VARIANT"
        assert {k: v for k, v in new[image_id, name].items() if k != field} == {
            k: v for k, v in old[image_id, name].items() if k != field
        }
    after = counts(db_url)
    assert (after["images"], after["image_modules"]) == (
        before["images"],
        before["image_modules"],
    )
    assert problems(db_url) == {}


def test_frames_come_and_go_with_the_mapping(db_url: str, archive: Path) -> None:
    """A mapping that no longer answers for frames 2..10 deletes their images."""
    index(db_url, archive)
    full = dict(export(db_url))
    with variant_mapping(one_frame=True):
        report = reindexed(db_url)
    assert (report.images_added, report.images_removed) == (0, 9)
    fewer = dict(export(db_url))
    assert set(full) - set(fewer) == {
        image_id
        for image_id in full
        if ENHANCED in image_id and not image_id.endswith("?frame=1")
    }
    assert problems(db_url) == {}
    report = reindexed(db_url)  # back to this mapping: the same imageIds again
    assert (report.images_added, report.images_removed) == (9, 0)
    assert dict(export(db_url)) == full


def test_an_instance_rewritten_meanwhile_is_left_alone(
    db_url: str, tmp_path: Path
) -> None:
    """replace_modules writes nothing for an instance changed since it was read.

    On SQLite a rewritten instance may even get its old row id back: its
    stored DICOM JSON tells it apart.
    """
    root = tmp_path / "archive"
    for n in (1, 2, 3):
        write_ct(root / f"{n}.dcm", n)
    with variant_mapping():
        index(db_url, root)
    with Store(db_url) as store:
        read = store.instances_to_reindex(MAPPING_VERSION, limit=1000)
        pairs = [(old, recompute.recompute(old)) for old in read]
        # Another indexer rewrites every source meanwhile, content and all.
        for n in (1, 2, 3):
            write_ct(root / f"{n}.dcm", n, patient_name="Doe^John")
        index(db_url, root)
        rewritten = export(db_url)
        done, refused = store.replace_modules(pairs)  # type: ignore[arg-type]
    assert len(pairs) == 3
    assert (done.instances, done.gone, refused) == (0, 3, [])
    assert export(db_url) == rewritten


def test_an_instance_without_stored_imageids_cannot_name_new_frames() -> None:
    """Frames that became images need a stored imageId to be named after."""
    old = StoredInstance(
        id=1,
        sop_instance_uid=dicom_json()["00080018"]["Value"][0],
        source=Source("/gone/ct.dcm", 1, 1),
        dicom_json=dicom_json(),
        image_ids={},
        fingerprint=(None, ""),
    )
    failure = recompute.recompute(old)
    assert isinstance(failure, ErrorRecord)
    assert failure.location == "/gone/ct.dcm"
    assert old.sop_instance_uid in failure.reason
    assert "index its source again" in failure.reason
    named = recompute.recompute(
        dataclasses.replace(old, image_ids={1: "wadouri:file:///x?frame=1"})
    )
    assert not isinstance(named, ErrorRecord)
    assert [image.image_id for image in named.images] == ["wadouri:file:///x?frame=1"]


# -- the command -------------------------------------------------------------


def cli_run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_stats_index_and_reindex_commands_show_staleness(
    db_url: str, archive: Path
) -> None:
    """stats counts stale instances; index says to reindex; reindex fixes them."""
    with variant_mapping():
        index(db_url, archive)
    total = counts(db_url)["instances"]
    stats = cli_run("stats", "--db", db_url)
    assert f'"stale_instances":{total}' in stats.stdout
    again = cli_run("index", str(archive), "--workers", "1", "--db", db_url)
    assert again.exit_code == 0
    assert f"{total} instances hold answers of an older metastore mapping" in (
        again.stderr
    )
    assert "metastore reindex" in again.stderr
    done = cli_run("reindex", "--workers", "1", "--db", db_url)
    assert done.exit_code == 0, done.output
    assert f"{total} instances: {total} reindexed, 0 failed" in done.stdout
    assert '"stale_instances":0' in cli_run("stats", "--db", db_url).stdout
    quiet = cli_run("index", str(archive), "--workers", "1", "--db", db_url)
    assert "older metastore mapping" not in quiet.stderr


def test_reindex_failures_are_one_line_each_and_exit_1(
    db_url: str, archive: Path
) -> None:
    """An instance that cannot be recomputed keeps its answers and stays stale."""
    with variant_mapping():
        index(db_url, archive)
    # The enhanced MR's images are gone: its frames have no stored name.
    sql(
        db_url,
        "DELETE FROM image_modules WHERE image_id IN (SELECT i.id FROM images i "
        "JOIN image_id_prefixes p ON p.id = i.prefix_id "
        f"WHERE p.prefix || i.suffix LIKE '%{ENHANCED}%')",
    )
    sql(
        db_url,
        "DELETE FROM images WHERE id IN (SELECT i.id FROM images i "
        "JOIN image_id_prefixes p ON p.id = i.prefix_id "
        f"WHERE p.prefix || i.suffix LIKE '%{ENHANCED}%')",
    )
    result = cli_run("reindex", "--workers", "1", "--json", "--db", db_url)
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("invalid: ") and ENHANCED in line
    assert "index its source again" in line
    assert '"failed":1' in result.stdout and '"stale":1' in result.stdout
    assert versions(db_url)[VARIANT] == 1


def test_serve_says_when_answers_are_stale(
    sqlite_url: str, archive: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """metastore serve logs one line naming metastore reindex."""
    from metastore.web import serve

    with variant_mapping():
        index(sqlite_url, archive)
    with Store(sqlite_url) as store, caplog.at_level("WARNING"):
        serve._note_stale(store)
    (record,) = [r for r in caplog.records if "reindex" in r.getMessage()]
    assert "older metastore mapping" in record.getMessage()


# -- crashes and concurrent readers -------------------------------------------


@pytest.fixture(scope="module")
def stale_template(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file of the archive indexed by the variant mapping."""
    path = tmp_path_factory.mktemp("stale") / "stale.sqlite"
    with variant_mapping():
        index(f"sqlite:///{path}", archive)
    return path


@pytest.fixture(scope="module")
def uninterrupted(
    stale_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Export and counts of one uninterrupted ``metastore reindex`` run."""
    path = tmp_path_factory.mktemp("uninterrupted") / "done.sqlite"
    shutil.copyfile(stale_template, path)
    url = f"sqlite:///{path}"
    done = run(reindex_command(url))
    assert done.returncode == 0, done.stderr
    return {"export": export(url), "counts": counts(url)}


def reindex_command(url: str) -> list[str]:
    """``metastore reindex`` in test-sized batches, one process."""
    return command(url, "reindex", "--workers", "1", "--batch-size", str(BATCH))


def stale_store(db_url: str, archive: Path) -> None:
    """Fill ``db_url`` (at head, empty) with the variant's answers."""
    with variant_mapping():
        index(db_url, archive)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["between-batches", "mid-batch"])
def test_killed_reindex_resumes_to_the_uninterrupted_store(
    db_url: str,
    archive: Path,
    fresh: dict[str, Any],
    uninterrupted: dict[str, Any],
    where: str,
) -> None:
    """SIGKILL between or inside batches; the rerun ends as one clean run."""
    stale_store(db_url, archive)
    total = counts(db_url)["instances"]
    if where == "between-batches":
        hook = {"METASTORE_TEST_KILL_AFTER_BATCHES": "3"}
    else:  # batch 4 has its values and images, not yet its module rows
        hook = {"METASTORE_TEST_KILL_AT_SQL": f"4:{module_rows_sql(db_url)}"}
    first = run(reindex_command(db_url), hook)
    assert first.returncode == -signal.SIGKILL, first.stderr
    left = versions(db_url)
    assert left[MAPPING_VERSION] == 3 * BATCH  # three batches committed
    assert left[VARIANT] == total - 3 * BATCH
    assert problems(db_url, garbage=False) == {}  # the killed batch left nothing
    second = run(reindex_command(db_url))
    assert second.returncode == 0, second.stderr
    assert export(db_url) == uninterrupted["export"] == fresh["export"]
    assert counts(db_url) == uninterrupted["counts"]
    assert problems(db_url) == {}
    assert versions(db_url) == {MAPPING_VERSION: total}


@pytest.mark.slow
def test_readers_see_old_or_new_answers_never_a_mix(
    db_url: str,
    archive: Path,
    fresh: dict[str, Any],
    tmp_path: Path,
    procs: list[subprocess.Popen[str]],
) -> None:
    """While reindex rewrites, every image reads wholly old or wholly new."""
    stale_store(db_url, archive)
    old = dict(export(db_url))
    new = dict(fresh["export"])
    assert old.keys() == new.keys()
    go = tmp_path / "go"
    writer = start_paused(
        procs,
        reindex_command(db_url),
        f"2:{module_rows_sql(db_url)}",
        go,
        "reindex to pause inside batch 2",
    )

    def check() -> int:
        """Every image old or new as a whole; return how many are new."""
        n = 0
        for image_id, values in export(db_url):
            assert values in (old[image_id], new[image_id]), image_id
            n += values == new[image_id] != old[image_id]
        with DatabaseProvider(db_url) as provider:
            for image_id in old:
                plane = provider.get("voiLutModule", image_id)
                whole = provider.get("instance", image_id)
                pair = (plane, whole)
                assert pair in (
                    (old[image_id]["voiLutModule"], old[image_id]["instance"]),
                    (new[image_id]["voiLutModule"], new[image_id]["instance"]),
                ), image_id
        return n

    # Paused inside batch 2: batch 1 is visible, batch 2 not yet.
    assert 0 < check() < len(new)
    go.touch()
    while writer.poll() is None:
        check()
    _, err = writer.communicate(timeout=PATIENCE)
    assert writer.returncode == 0, err
    assert export(db_url) == fresh["export"]


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; any still running at the end is killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
