"""Records encoded in the workers (``store.encode.pack``) store what plain ones do.

The indexer's workers compress each chunk's series against bases of the
chunk's own, and the writing process only assembles the rows; what a store
answers must not depend on where the encoding was done, on how a chunk is
split over batches, or on which of its instances a batch refuses.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from dicom_samples import CT, copy, write_ct
from reliability import problems

from metastore.index import index_paths
from metastore.index import pipeline as indexer
from metastore.index.discovery import Entry, discover
from metastore.index.read import ReadCache, read_entry
from metastore.records import InstanceRecord
from metastore.store import Store
from metastore.store.encode import EncodeMemo, pack


def records_of(folder: Path) -> list[InstanceRecord]:
    """The records the indexer reads from ``folder``, in discovery order."""
    zips = ReadCache()
    try:
        return [
            record
            for entry in discover([str(folder)])
            if isinstance(entry, Entry)
            for record in read_entry(entry, None, zips).instances
        ]
    finally:
        zips.close()


def three_series(folder: Path) -> Path:
    """Twelve CT instances in three series of two studies."""
    for n in range(1, 13):
        write_ct(folder / f"ct{n:02d}.dcm", n, series=1 + n % 3, study=1 + n % 2)
    return folder


def export(store: Store) -> dict[str, Any]:
    return dict(store.export())


def rows(store: Store) -> dict[str, Any]:
    stats = store.stats()
    stats.pop("database_bytes")
    return stats


def test_packed_records_store_what_plain_records_store(tmp_path: Path) -> None:
    records = records_of(three_series(tmp_path / "src"))
    packed = pack(records, EncodeMemo())
    assert all(r.packed is not None for r in packed)
    assert all(not r.dicom_json for r in packed)  # the text travels compressed
    plain_url = f"sqlite:///{tmp_path / 'plain.sqlite'}"
    packed_url = f"sqlite:///{tmp_path / 'packed.sqlite'}"
    with Store(plain_url) as plain, Store(packed_url) as store:
        assert plain.write_batch(records) == []
        assert store.write_batch(packed) == []
        assert export(store) == export(plain)
        assert rows(store)["images"] == rows(plain)["images"] == 12
        for record in records:
            sop = record.sop_instance_uid
            assert store.dicom_json(sop) == plain.dicom_json(sop) == record.dicom_json
    assert problems(packed_url) == {}


def test_a_chunk_split_over_batches_stores_every_row_it_needs(
    db_url: str, tmp_path: Path
) -> None:
    records = records_of(three_series(tmp_path / "src"))
    packed = pack(records, EncodeMemo())
    with Store(f"sqlite:///{tmp_path / 'whole.sqlite'}") as whole:
        whole.write_batch(packed)
        expected = export(whole)
    with Store(db_url) as store:
        for part in (packed[:5], packed[5:6], packed[6:]):
            assert store.write_batch(part) == []
        assert export(store) == expected
    assert problems(db_url) == {}


def test_refused_instances_of_a_chunk_leave_no_rows_behind(
    db_url: str, tmp_path: Path
) -> None:
    src = three_series(tmp_path / "src")
    copy(CT, src / "dup.dcm")
    copy(CT, tmp_path / "first" / "ct.dcm")
    with Store(db_url) as store:
        index_paths(store, [tmp_path / "first"], workers=1)
        before = export(store)
        records = records_of(src)
        assert len(records) == 13
        found = store.write_batch(pack(records, EncodeMemo()))
        assert [e.kind for e in found] == ["duplicate"]
        after = export(store)
        assert {k: after[k] for k in before} == before  # the stored copy is kept
        assert len(after) == len(before) + 12
    assert problems(db_url) == {}


def test_workers_and_chunks_change_no_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1 or 2 workers, many chunks: the same rows, module values included."""
    monkeypatch.setattr(indexer, "CHUNK_SIZE", 8)
    folder = three_series(tmp_path / "src")
    for n in range(13, 41):  # more chunks, and folders to cut them at
        write_ct(folder / "more" / f"ct{n:02d}.dcm", n, series=4 + n % 2)
    results = []
    for workers in (1, 2):
        with Store(f"sqlite:///{tmp_path / f'w{workers}.sqlite'}") as store:
            report = index_paths(store, [folder], workers=workers)
            assert report.ok and report.instances == 40
            results.append((export(store), rows(store)))
    assert results[0] == results[1]


def test_a_packed_record_changed_after_packing_is_checked_again(
    tmp_path: Path,
) -> None:
    """Packing checks a record once; a record changed since is checked anew."""
    import dataclasses

    records = pack(records_of(three_series(tmp_path / "src")), EncodeMemo())
    long_uid = "1." + "2" * 70
    changed = [dataclasses.replace(records[0], sop_instance_uid=long_uid), *records[1:]]
    with Store(f"sqlite:///{tmp_path / 'uid.sqlite'}") as store:
        found = store.write_batch(changed)
        assert [(e.kind, "longer than 64" in e.reason) for e in found] == [
            ("invalid", True)
        ]
    # search attributes are made storable again (NUL becomes U+FFFD)
    named = dataclasses.replace(records[0], patient_name="Doe\x00Jane")
    path = tmp_path / "name.sqlite"
    with Store(f"sqlite:///{path}") as store:
        assert store.write_batch([named]) == []
    with sqlite3.connect(path) as conn:
        names = conn.execute("SELECT patient_name FROM studies").fetchall()
    assert names == [("Doe\ufffdJane",)]
