"""Store: write/read round trips, replacement, duplicates, dedup, prune, query."""

from __future__ import annotations

import math
from typing import Any

import pytest
import sqlalchemy as sa

from metastore import schema as t
from metastore.errors import SchemaNotAtHeadError, StoreError
from metastore.records import ErrorRecord, ImageRecord, InstanceRecord, Source
from metastore.store import Store

STUDY = "1.2.826.0.1.1"
SERIES = "1.2.826.0.1.1.1"


def make_instance(
    location: str,
    sop: str,
    *,
    study: str = STUDY,
    series: str = SERIES,
    frames: int = 1,
    patient_name: str | None = "Doe^John",
    patient_id: str | None = "PID1",
    modality: str | None = "CT",
    study_date: str | None = "20240131",
    accession_number: str | None = "ACC1",
    description: str | None = "CT HEAD",
    size: int = 100,
    mtime_ns: int = 1,
) -> InstanceRecord:
    """An instance record with shared and per-frame module values."""
    patient = {"patientID": patient_id, "patientName": {"Alphabetic": patient_name}}
    series_module = {"modality": modality, "seriesInstanceUID": series}
    images = []
    for frame in range(1, frames + 1):
        image_id = f"wadors:http://h/studies/{study}/series/{series}/instances/{sop}/frames/{frame}"
        images.append(
            ImageRecord(
                image_id,
                frame,
                {
                    "patientModule": patient,
                    "generalSeriesModule": series_module,
                    "imagePlaneModule": {
                        "sopInstanceUID": sop,
                        "frame": frame,
                        "sliceLocation": float("nan"),
                        "zero": -0.0,
                        "far": float("inf"),
                    },
                    "ultrasoundEnhancedRegionModule": None,
                },
            )
        )
    return InstanceRecord(
        source=Source(location, size, mtime_ns),
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        patient_id=patient_id,
        patient_name=patient_name,
        study_date=study_date,
        study_time="120000",
        accession_number=accession_number,
        study_description=description,
        modality=modality,
        series_number=1,
        series_description="AXIAL",
        instance_number=1,
        number_of_frames=frames,
        dicom_json={
            "00080018": {"vr": "UI", "Value": [sop]},
            "00280008": {"vr": "IS", "Value": [frames]},
        },
        images=images,
    )


def count(store: Store, table: sa.Table) -> int:
    """Rows in ``table``."""
    with store.engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        )


def same(a: Any, b: Any) -> bool:
    """Deep equality where NaN equals NaN and -0.0 differs from 0.0."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@pytest.fixture
def store(db_url: str) -> Any:
    """A Store on a fresh migrated database (both backends)."""
    with Store(db_url) as s:
        yield s


def test_write_then_read_round_trips_values(store: Store) -> None:
    """Every module value reads back equal, NaN, infinity and -0.0 included."""
    record = make_instance("/a/1.dcm", "1.2.3.1", frames=2)
    assert store.write_batch([record]) == []
    for image in record.images:
        got = store.image_modules(image.image_id)
        assert got is not None
        assert same(got, image.modules)
    assert store.dicom_json("1.2.3.1") == record.dicom_json


def test_unknown_image_and_instance_are_none(store: Store) -> None:
    """Lookups of things never written return None."""
    assert store.image_modules("wadors:nothing") is None
    assert store.dicom_json("9.9.9") is None
    assert store.series_image_modules("9.9.9") == {}


def test_known_sources_lists_stored_locations(store: Store) -> None:
    """known_sources maps each stored location to (size, mtime_ns)."""
    store.write_batch([make_instance("/a/1.dcm", "1.1", size=5, mtime_ns=7)])
    store.write_batch([make_instance("/a/2.dcm", "1.2", size=6, mtime_ns=8)])
    assert store.known_sources() == {"/a/1.dcm": (5, 7), "/a/2.dcm": (6, 8)}


def test_reindexing_a_location_replaces_its_instance(store: Store) -> None:
    """Writing a location again replaces what it held before."""
    store.write_batch([make_instance("/a/1.dcm", "1.1", frames=3)])
    store.write_batch([make_instance("/a/1.dcm", "1.2", frames=1, mtime_ns=9)])
    assert count(store, t.instances) == 1
    assert count(store, t.images) == 1
    assert store.dicom_json("1.1") is None
    assert store.dicom_json("1.2") is not None
    assert store.known_sources() == {"/a/1.dcm": (100, 9)}


def test_same_sop_from_another_location_is_a_duplicate(store: Store) -> None:
    """A SOP Instance UID stored from elsewhere is reported, recorded, not stored."""
    store.write_batch([make_instance("/a/1.dcm", "1.1")])
    found = store.write_batch([make_instance("/b/copy.dcm", "1.1")])
    assert [(e.location, e.kind) for e in found] == [("/b/copy.dcm", "duplicate")]
    assert "/a/1.dcm" in found[0].reason
    assert count(store, t.instances) == 1
    assert [(e.location, e.kind) for e in store.errors()] == [
        ("/b/copy.dcm", "duplicate")
    ]
    assert "/b/copy.dcm" not in store.known_sources()


def test_duplicate_within_one_batch(store: Store) -> None:
    """Two locations with one SOP Instance UID in one batch store it once."""
    found = store.write_batch(
        [make_instance("/a/1.dcm", "1.1"), make_instance("/b/1.dcm", "1.1")]
    )
    assert [e.kind for e in found] == ["duplicate"]
    assert count(store, t.instances) == 1


def test_shared_module_values_are_stored_once(store: Store) -> None:
    """Patient and series modules of many images are one row each."""
    store.write_batch(
        [make_instance(f"/a/{i}.dcm", f"1.{i}", frames=2) for i in range(5)]
    )
    assert count(store, t.images) == 10
    assert count(store, t.image_modules) == 40
    # 1 patient + 1 series + 1 None + 10 distinct imagePlaneModule values.
    assert count(store, t.module_values) == 13


def test_errors_are_recorded_and_cleared_by_a_later_success(store: Store) -> None:
    """Errors are kept until the location is written successfully."""
    store.write_batch([], [ErrorRecord("/a/1.dcm", "unreadable", "truncated")])
    assert store.errors() == [ErrorRecord("/a/1.dcm", "unreadable", "truncated")]
    store.write_batch([make_instance("/a/1.dcm", "1.1")])
    assert store.errors() == []


def test_unknown_error_kind_is_refused(store: Store) -> None:
    """An ErrorRecord kind outside the documented three is a ValueError."""
    with pytest.raises(ValueError, match="kind"):
        store.write_batch([], [ErrorRecord("/x", "weird", "?")])


def test_too_long_uid_is_an_invalid_error(store: Store) -> None:
    """A UID longer than 64 characters is reported instead of stored."""
    found = store.write_batch([make_instance("/a/1.dcm", "1." * 40)])
    assert [e.kind for e in found] == ["invalid"]
    assert count(store, t.instances) == 0


def test_series_image_modules_returns_every_image(store: Store) -> None:
    """One call returns all images of a series with all their modules."""
    records = [make_instance(f"/a/{i}.dcm", f"1.{i}", frames=2) for i in range(3)]
    store.write_batch(records)
    got = store.series_image_modules(SERIES)
    want = {image.image_id: image.modules for r in records for image in r.images}
    assert got.keys() == want.keys()
    assert all(same(got[k], want[k]) for k in want)


def test_series_values_are_shared_objects(store: Store) -> None:
    """A value common to a series is decoded once and shared between images."""
    store.write_batch([make_instance(f"/a/{i}.dcm", f"1.{i}") for i in range(2)])
    a, b = store.series_image_modules(SERIES).values()
    assert a["patientModule"] is b["patientModule"]


def test_unreachable_database_is_a_store_error() -> None:
    """An unreachable server gives StoreError with the password hidden."""
    with pytest.raises(StoreError) as info:
        Store("postgresql://user:s3cret@127.0.0.1:1/nothing")
    assert "s3cret" not in str(info.value)
    assert "***" in str(info.value)


def test_schema_behind_head_is_refused(sqlite_url: str) -> None:
    """Store refuses a database whose revision is older than head."""
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE metastore_alembic_version SET version_num='0000'")
    engine.dispose()
    with pytest.raises(StoreError):
        Store(sqlite_url)
    assert not isinstance(StoreError(), SchemaNotAtHeadError)
