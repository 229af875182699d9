"""The indexing pipeline on real databases: counts, incremental runs, prune, workers."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dicom_samples import (
    CT,
    MIXED,
    copy,
    dicom_json,
    junk,
    mixed_archive,
    sample_path,
    truncated,
    write_ct,
    write_json,
    zip_of,
)
from reliability import problems, searched
from stored import locations, query_rows

from metastore.index import IndexReport, index_paths
from metastore.index import pipeline as indexer
from metastore.store import Store

ROOT = "http://localhost/dicomweb"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A store on a fresh database (SQLite and PostgreSQL)."""
    with Store(db_url) as s:
        yield s


def export(store: Store) -> dict[str, Any]:
    """Everything the store answers, by imageId."""
    return {image_id: modules for image_id, modules in store.export()}


def counts(report: IndexReport) -> dict[str, int]:
    """The source counts of a report."""
    names = ("files_seen", "indexed", "unchanged", "skipped", "failed")
    return {name: getattr(report, name) for name in names}


def touch_later(path: Path) -> None:
    """Move a file's modification time one second on (a sure change)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_mixed_archive_counts_and_errors(store: Store, tmp_path: Path) -> None:
    """Every kind of source is indexed, skipped or failed as documented."""
    root = mixed_archive(tmp_path / "archive")
    report = index_paths(store, [root], workers=1)
    assert counts(report) == {
        **{k: MIXED[k] for k in counts(report) if k in MIXED},
        "unchanged": 0,
    }
    assert report.images == MIXED["images"]
    assert [(e.location, e.kind) for e in report.errors] == [
        (str(root / "cut.dcm"), "unreadable")
    ]
    assert report.exit_status == 1
    assert store.stats()["images"] == MIXED["images"]
    assert {e.location for e in store.errors()} == {str(root / "cut.dcm")}


def test_reindexing_is_a_no_op(store: Store, tmp_path: Path) -> None:
    """A second run reads nothing and leaves the store exactly as it was."""
    root = mixed_archive(tmp_path / "archive")
    first = index_paths(store, [root], workers=1)
    before, stats = export(store), store.stats()
    second = index_paths(store, [root], workers=1)
    assert second.unchanged == first.indexed
    assert (second.indexed, second.instances, second.images) == (0, 0, 0)
    assert second.files_seen == first.files_seen
    assert export(store) == before
    assert store.stats() == stats


def test_changed_file_is_read_again_and_replaced(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    """A file whose size or time changed replaces its old rows."""
    tmp_path = tmp_path / "src"  # the SQLite database lives in tmp_path
    one = write_ct(tmp_path / "one.dcm", 1, patient_name="Old^Name", study=1)
    write_ct(tmp_path / "two.dcm", 2, patient_name="Old^Name", study=2)
    index_paths(store, [tmp_path], workers=1)
    write_ct(one, 1, patient_name="New^Name", study=1)
    touch_later(one)
    report = index_paths(store, [tmp_path], workers=1)
    assert (report.indexed, report.unchanged, report.duplicates) == (1, 1, 0)
    found = query_rows(store, "instances", include=["PatientName"])
    names = [row["PatientName"] for row in found]
    assert names.count("New^Name") == 1
    assert store.stats()["instances"] == 2
    assert problems(db_url, garbage=False) == {}


def test_prune_removes_what_disappeared(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    """Without --prune a deleted file stays; with it, its images go."""
    write_ct(tmp_path / "a" / "one.dcm", 1)
    gone = write_ct(tmp_path / "a" / "two.dcm", 2)
    elsewhere = write_ct(tmp_path / "b" / "three.dcm", 3)
    index_paths(store, [tmp_path / "a", elsewhere], workers=1)
    gone.unlink()
    index_paths(store, [tmp_path / "a"], workers=1)
    assert store.stats()["instances"] == 3
    index_paths(store, [tmp_path / "a"], workers=1, prune=True)
    assert store.stats()["instances"] == 2  # b/three.dcm is not under the root
    assert not any("two.dcm" in where for where in locations(store).values())
    assert problems(db_url) == {}


def test_prune_removes_a_file_that_is_no_longer_dicom(
    store: Store, tmp_path: Path
) -> None:
    """A source overwritten with junk is skipped, and pruned with --prune."""
    tmp_path = tmp_path / "src"  # the SQLite database lives in tmp_path
    path = write_ct(tmp_path / "x.dcm", 1)
    index_paths(store, [tmp_path], workers=1)
    junk(path)
    touch_later(path)
    report = index_paths(store, [tmp_path], workers=1, prune=True)
    assert report.skipped == 1
    assert store.stats()["instances"] == 0


def test_same_sop_instance_in_two_files_is_stored_once(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    """A second file with the same SOP Instance UID is a reported duplicate.

    Its source holds nothing else, so it was not indexed: skipped, not failed.
    """
    tmp_path = tmp_path / "src"  # the SQLite database lives in tmp_path
    copy(CT, tmp_path / "a.dcm")
    copy(CT, tmp_path / "b.dcm")
    report = index_paths(store, [tmp_path], workers=1)
    assert (report.indexed, report.skipped, report.duplicates) == (1, 1, 1)
    assert report.exit_status == 0
    (error,) = report.errors
    assert (error.location, error.kind) == (str(tmp_path / "b.dcm"), "duplicate")
    assert store.stats()["instances"] == 1
    assert list(locations(store).values()) == [str(tmp_path / "a.dcm")]
    assert problems(db_url) == {}


def intruder_copy(source: Path, dest: Path) -> Path:
    """A copy of ``source`` with its patient, modality and study changed."""
    ds = pydicom.dcmread(source)
    ds.PatientID, ds.PatientName, ds.Modality = "WRONG", "Intruder^Eve", "MR"
    ds.StudyDescription, ds.AccessionNumber = "INTRUDER", "X999"
    dest.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dest, enforce_file_format=True)
    return dest


def test_a_duplicate_never_rewrites_the_study_it_copies(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    """Issue 9.1: index a/ct.dcm, then b/ct.dcm (same SOP, another patient), twice."""
    a = copy(CT, tmp_path / "src" / "a" / "ct.dcm")
    intruder_copy(a, tmp_path / "src" / "b" / "ct.dcm")
    index_paths(store, [a.parent], workers=1)
    before = query_rows(store, "studies"), query_rows(store, "series")
    for _ in range(2):  # a duplicate is read again on every run
        report = index_paths(store, [tmp_path / "src" / "b"], workers=1)
        assert (report.indexed, report.skipped, report.duplicates) == (0, 1, 1)
        assert (query_rows(store, "studies"), query_rows(store, "series")) == before
    [study] = query_rows(store, "studies", {"PatientID": "1CT1"})
    assert (study["PatientName"], study["ModalitiesInStudy"]) == (
        "CompressedSamples^CT1",
        "CT",
    )
    assert query_rows(store, "studies", {"PatientID": "WRONG"}) == []
    assert problems(db_url) == {}


def test_removing_the_lowest_instance_gives_the_next_ones_attributes(
    db_url: str, tmp_path: Path
) -> None:
    """After a rewrite or a prune, study and series equal a clean run's.

    Instances 1, 2 and 3 of one series disagree on patient and modality; the
    lowest SOP Instance UID stored wins.  Instance 1's file is rewritten as
    instance 9, then instance 2's file is deleted and pruned: each time the
    store answers as a clean index of what is left.
    """
    src = tmp_path / "src"
    for n, modality in ((1, "CT"), (2, "MR"), (3, "PT")):
        write_ct(src / f"{n}.dcm", n, patient_name=f"Patient^{n}", modality=modality)
    steps = [
        (lambda: None, "Patient^1", "CT"),
        (
            lambda: touch_later(write_ct(src / "1.dcm", 9, patient_name="Patient^9")),
            "Patient^2",
            "MR",
        ),
        (lambda: (src / "2.dcm").unlink(), "Patient^3", "PT"),
    ]
    for n, (change, patient, modality) in enumerate(steps):
        change()
        with Store(db_url) as store:
            index_paths(store, [src], workers=1, prune=True)
        clean = f"sqlite:///{tmp_path / f'clean{n}.sqlite'}"
        with Store(clean) as store:
            index_paths(store, [src], workers=1)
        got = searched(db_url)
        assert got == searched(clean)
        [study], [series] = got
        assert (study["PatientName"], series["Modality"]) == (patient, modality)
    assert problems(db_url) == {}


def test_pruning_the_series_of_the_lowest_instance_rereads_the_study(
    db_url: str, tmp_path: Path
) -> None:
    """A study of two series loses the one holding its lowest instance."""
    src = tmp_path / "src"
    write_ct(src / "s1" / "1.dcm", 1, series=1, patient_name="Patient^1")
    write_ct(src / "s2" / "2.dcm", 2, series=2, patient_name="Patient^2")
    with Store(db_url) as store:
        index_paths(store, [src], workers=1)
        names = [s["PatientName"] for s in query_rows(store, "studies")]
        assert names == ["Patient^1"]
        shutil.rmtree(src / "s1")
        index_paths(store, [src], workers=1, prune=True)
        [study] = query_rows(store, "studies")
        assert (study["PatientName"], study["NumberOfStudyRelatedSeries"]) == (
            "Patient^2",
            1,
        )
    assert problems(db_url) == {}


def test_a_source_whose_only_instance_is_invalid_is_failed(
    store: Store, tmp_path: Path
) -> None:
    """A SOP Instance UID longer than 64 characters: not indexed but failed."""
    instance = dicom_json()
    instance["00080018"] = {"vr": "UI", "Value": ["1." + "2" * 70]}
    write_json(tmp_path / "src" / "long.json", instance)
    report = index_paths(store, [tmp_path / "src"], workers=1)
    assert counts(report) == {
        "files_seen": 1,
        "indexed": 0,
        "unchanged": 0,
        "skipped": 0,
        "failed": 1,
    }
    assert [e.kind for e in report.errors] == ["invalid"]
    assert report.exit_status == 1


def test_a_source_named_again_is_read_once(store: Store, tmp_path: Path) -> None:
    """The same file three times, or a file and its folder: one source seen."""
    ct = copy(CT, tmp_path / "src" / "ct.dcm")
    report = index_paths(store, [ct, ct, ct], workers=1)
    assert (report.files_seen, report.indexed, report.instances) == (1, 1, 1)
    again = index_paths(store, [ct, tmp_path / "src", str(ct)], workers=1)
    assert (again.files_seen, again.unchanged) == (1, 1)


def test_damaged_archive_indexes_every_valid_image(
    store: Store, tmp_path: Path
) -> None:
    """Every valid member of a damaged archive is indexed; the rest reported."""
    members: dict[str, Any] = {
        f"ok/{n}.dcm": write_ct(tmp_path / "src" / f"{n}.dcm", n).read_bytes()
        for n in range(1, 6)
    }
    members["bad/cut.dcm"] = truncated(tmp_path / "src" / "cut", CT).read_bytes()
    members["bad/broken.json"] = b'{"00080018": {"vr": "UI", "Val'
    members["junk.bin"] = junk(tmp_path / "src" / "junk").read_bytes()
    archive = zip_of(tmp_path / "in" / "archive.zip", members)
    report = index_paths(store, [archive], workers=1)
    assert counts(report) == {
        "files_seen": 8,
        "indexed": 5,
        "unchanged": 0,
        "skipped": 1,
        "failed": 2,
    }
    assert sorted(e.location for e in report.errors) == [
        f"{archive}!/bad/broken.json",
        f"{archive}!/bad/cut.dcm",
    ]
    assert store.stats()["images"] == 5


def test_missing_path_is_reported_not_raised(store: Store, tmp_path: Path) -> None:
    """A path that does not exist is a failed source; the others are indexed."""
    tmp_path = tmp_path / "src"  # the SQLite database lives in tmp_path
    copy(CT, tmp_path / "ct.dcm")
    report = index_paths(store, [tmp_path / "nope", tmp_path / "ct.dcm"], workers=1)
    assert (report.failed, report.indexed) == (1, 1)
    assert report.errors[0].location == str(tmp_path / "nope")


def many_sources(folder: Path) -> Path:
    """Enough sources for several worker chunks, duplicates and failures included."""
    for n in range(1, 41):
        write_ct(folder / f"ct{n:02d}.dcm", n, series=1 + n % 3)
    copy(CT, folder / "dup1.dcm")
    copy(CT, folder / "dup2.dcm")
    copy("emri_small.dcm", folder / "mr")
    truncated(folder / "zz-cut.dcm")
    write_json(folder / "mr.json", [dicom_json("MR_small.dcm")])
    return folder


def test_two_workers_give_the_same_store_as_one(db_url: str, tmp_path: Path) -> None:
    """Worker processes change nothing: same report, errors and answers."""
    folder = many_sources(tmp_path / "src")
    with Store(db_url) as parallel:
        two = index_paths(parallel, [folder], workers=2, batch_size=7)
        answers = export(parallel)
    with Store(f"sqlite:///{tmp_path / 'serial.sqlite'}") as serial:
        one = index_paths(serial, [folder], workers=1)
        assert export(serial) == answers
    assert counts(two) == counts(one)
    assert sorted(map(repr, two.errors)) == sorted(map(repr, one.errors))
    assert (two.instances, two.duplicates, two.images) == (
        one.instances,
        one.duplicates,
        one.images,
    )
    assert problems(db_url) == {}


def test_a_rerun_completes_an_interrupted_run(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stopped midway keeps its written batches; the next run does the rest."""
    folder = many_sources(tmp_path / "src")
    monkeypatch.setattr(indexer, "PROGRESS_INTERVAL", 0.0)  # a call per source

    def stop(report: IndexReport) -> None:
        if report.files_seen >= 20:
            raise KeyboardInterrupt

    with Store(db_url) as store:
        with pytest.raises(KeyboardInterrupt):
            index_paths(store, [folder], workers=1, batch_size=5, progress=stop)
        partial = store.stats()["instances"]
        report = index_paths(store, [folder], workers=1, batch_size=5)
        assert 0 < partial < store.stats()["instances"]
        assert report.unchanged == partial
        answers = export(store)
    with Store(f"sqlite:///{tmp_path / 'clean.sqlite'}") as clean:
        index_paths(clean, [folder], workers=1)
        assert export(clean) == answers
    assert problems(db_url) == {}


def test_progress_gets_the_final_report(store: Store, tmp_path: Path) -> None:
    """The progress callback is called at least once, last with the final report."""
    tmp_path = tmp_path / "src"  # the SQLite database lives in tmp_path
    copy(CT, tmp_path / "ct.dcm")
    seen: list[IndexReport] = []
    report = index_paths(store, [tmp_path], workers=1, progress=seen.append)
    assert seen[-1] == report


def test_json_and_part10_indexes_answer_alike(db_url: str, tmp_path: Path) -> None:
    """An archive indexed as Part 10 or as DICOM JSON under a root answers alike."""
    names = [CT, "MR_small.dcm", "emri_small.dcm"]
    for name in names:
        copy(name, tmp_path / "p10" / name)
        write_json(tmp_path / "json" / f"{name}.json", dicom_json(name))
    with Store(db_url) as store:
        index_paths(store, [tmp_path / "p10"], wadors_root=ROOT, workers=1)
        from_files = export(store)
    with Store(f"sqlite:///{tmp_path / 'json.sqlite'}") as store:
        index_paths(store, [tmp_path / "json"], wadors_root=ROOT, workers=1)
        assert export(store) == from_files
    assert len(from_files) == 12


def test_wadors_root_trailing_slash_is_ignored(store: Store, tmp_path: Path) -> None:
    """``--wadors-root URL/`` and ``URL`` give the same imageIds."""
    tmp_path = tmp_path / "src"  # the SQLite database lives in tmp_path
    copy(CT, tmp_path / "ct.dcm")
    index_paths(store, [tmp_path], wadors_root=ROOT + "/", workers=1)
    (image_id,) = export(store)
    assert image_id.startswith(f"wadors:{ROOT}/studies/")


def test_unchanged_zip_members_are_not_read_again(store: Store, tmp_path: Path) -> None:
    """Members of an unchanged archive are unchanged; a touched archive is re-read."""
    tmp_path = tmp_path / "src"  # the SQLite database lives in tmp_path
    archive = zip_of(tmp_path / "a.zip", {"ct.dcm": sample_path(CT), "x.txt": b"x"})
    index_paths(store, [archive], workers=1)
    again = index_paths(store, [archive], workers=1)
    assert (again.unchanged, again.skipped, again.indexed) == (1, 1, 0)
    touch_later(archive)
    changed = index_paths(store, [archive], workers=1)
    assert (changed.unchanged, changed.indexed) == (0, 1)
    assert store.stats()["instances"] == 1


def test_moved_archive_with_prune(store: Store, db_url: str, tmp_path: Path) -> None:
    """Moving a folder and re-indexing its parent with prune keeps one copy."""
    write_ct(tmp_path / "root" / "a" / "x.dcm", 1)
    index_paths(store, [tmp_path / "root"], workers=1)
    shutil.move(tmp_path / "root" / "a", tmp_path / "root" / "b")
    report = index_paths(store, [tmp_path / "root"], workers=1, prune=True)
    # the moved file is new to the store, and a duplicate of the old row,
    # which prune then removes: the same run then stores it from its new place
    assert (report.files_seen, report.indexed, report.duplicates) == (1, 1, 0)
    assert (report.errors, report.error_count, report.exit_status) == ((), 0, 0)
    assert list(locations(store).values()) == [str(tmp_path / "root" / "b" / "x.dcm")]
    assert store.errors() == []
    again = index_paths(store, [tmp_path / "root"], workers=1, prune=True)
    assert (again.unchanged, again.indexed, again.duplicates) == (1, 0, 0)
    assert problems(db_url) == {}


def test_prune_keeps_a_duplicate_whose_original_stays(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    """Prune stores a duplicate only if its stored copy went; others stay reported."""
    src = tmp_path / "src"
    copy(CT, src / "a.dcm")
    copy(CT, src / "b.dcm")
    write_ct(src / "c.dcm", 7)
    write_ct(src / "d.dcm", 7)
    index_paths(store, [src], workers=1)
    (src / "c.dcm").unlink()  # the stored copy of d's instance
    report = index_paths(store, [src], workers=1, prune=True)
    # b.dcm is still a duplicate of a.dcm; d.dcm is now the only copy
    assert report.duplicates == 1
    assert [(e.location, e.kind) for e in report.errors] == [
        (str(src / "b.dcm"), "duplicate")
    ]
    where = sorted(locations(store).values())
    assert where == [str(src / "a.dcm"), str(src / "d.dcm")]
    assert [(e.location, e.kind) for e in store.errors()] == [
        (str(src / "b.dcm"), "duplicate")
    ]
    assert problems(db_url) == {}


def test_a_source_whose_modules_raise_fails_and_the_run_goes_on(
    store: Store, tmp_path: Path
) -> None:
    """Hand-made JSON that makes a module builder raise is a failed source, with why."""
    bad = dicom_json()
    bad["00186011"] = {"vr": "SQ", "Value": [None]}  # a null US region item
    write_json(tmp_path / "src" / "a-bad.json", bad)
    copy(CT, tmp_path / "src" / "b-good.dcm")
    report = index_paths(store, [tmp_path / "src"], workers=1)
    assert (report.indexed, report.failed) == (1, 1)
    [error] = store.errors()
    assert error.location == str(tmp_path / "src" / "a-bad.json")
    assert error.kind == "invalid"
    assert error.reason.startswith("frame 1 of 1: ")


def _analyzed(url: str) -> set[str]:
    """The PostgreSQL tables whose statistics an explicit ANALYZE gathered."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT relname FROM pg_stat_user_tables "
                    "WHERE last_analyze IS NOT NULL"
                )
            )
            return {row.relname for row in rows}
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_bulk_run_gathers_planner_statistics(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL plans series loads as for empty tables until the statistics
    # exist (docs/benchmarks.md); a run that stores many instances gathers them.
    monkeypatch.setattr(indexer, "ANALYZE_AFTER", 3)
    for k in range(2):
        write_ct(tmp_path / "small" / f"{k}.dcm", k + 1)
    with Store(postgres_url) as store:
        assert index_paths(store, [tmp_path / "small"], workers=1).instances == 2
        assert _analyzed(postgres_url) == set()  # below the threshold: left alone
        for k in range(3):
            write_ct(tmp_path / "bulk" / f"{k}.dcm", k + 10)
        assert index_paths(store, [tmp_path / "bulk"], workers=1).instances == 3
    assert {"instances", "images", "image_modules", "series"} <= _analyzed(postgres_url)
