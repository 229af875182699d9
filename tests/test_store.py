"""Store: write/read round trips, replacement, duplicates, dedup, prune, query."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from reliability import problems
from stored import query_rows

from metastore.errors import SchemaNotAtHeadError, StoreError
from metastore.records import ErrorRecord, ImageRecord, InstanceRecord, Source
from metastore.store import Store
from metastore.store import schema as t
from metastore.store.encode import duplicate

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
        # what metastore.attributes reads the search attributes back from
        dicom_json=_dicom_json(
            {
                "00080018": ("UI", sop),
                "00280008": ("IS", frames),
                "0020000D": ("UI", study),
                "0020000E": ("UI", series),
                "00100020": ("LO", patient_id),
                "00100010": ("PN", patient_name and {"Alphabetic": patient_name}),
                "00080020": ("DA", study_date),
                "00080030": ("TM", "120000"),
                "00080050": ("SH", accession_number),
                "00081030": ("LO", description),
                "00080060": ("CS", modality),
                "00200011": ("IS", 1),
                "0008103E": ("LO", "AXIAL"),
            }
        ),
        images=images,
    )


def _dicom_json(elements: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    """DICOM JSON of ``{tag: (vr, value)}``; a ``None`` value is an empty element."""
    return {
        tag: {"vr": vr} if value is None else {"vr": vr, "Value": [value]}
        for tag, (vr, value) in elements.items()
    }


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


def test_reindexing_a_location_replaces_its_instance(store: Store, db_url: str) -> None:
    """Writing a location again replaces what it held before."""
    store.write_batch([make_instance("/a/1.dcm", "1.1", frames=3)])
    store.write_batch([make_instance("/a/1.dcm", "1.2", frames=1, mtime_ns=9)])
    assert count(store, t.instances) == 1
    assert count(store, t.images) == 1
    assert store.dicom_json("1.1") is None
    assert store.dicom_json("1.2") is not None
    assert store.known_sources() == {"/a/1.dcm": (100, 9)}
    assert problems(db_url, garbage=False) == {}


def test_same_sop_from_another_location_is_a_duplicate(
    store: Store, db_url: str
) -> None:
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
    assert problems(db_url) == {}


def test_duplicate_within_one_batch(store: Store, db_url: str) -> None:
    """Two locations with one SOP Instance UID in one batch store it once."""
    found = store.write_batch(
        [make_instance("/a/1.dcm", "1.1"), make_instance("/b/1.dcm", "1.1")]
    )
    assert [e.kind for e in found] == ["duplicate"]
    assert count(store, t.instances) == 1
    assert problems(db_url) == {}


def searched(store: Store) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What a query finds: every study and every series."""
    return query_rows(store, "studies"), query_rows(store, "series")


def rows(store: Store) -> dict[str, int | None]:
    """Rows per table, but for the errors and duplicates recorded (and the
    database size)."""
    stats = store.stats()
    del stats["errors"], stats["duplicates"], stats["database_bytes"]
    return stats


INTRUDER = {
    "patient_id": "WRONG",
    "patient_name": "Intruder^Eve",
    "modality": "MR",
    "accession_number": "X999",
    "description": "INTRUDER",
}


def test_a_duplicate_changes_nothing_stored(store: Store, db_url: str) -> None:
    """A refused copy with other attributes leaves study and series as they were.

    docs/guarantees.md "Duplicates": a duplicate is read again on every run,
    so it is written twice here.
    """
    store.write_batch([make_instance("/a/ct.dcm", "1.1")])
    before, counted = searched(store), rows(store)
    intruder = make_instance("/b/ct.dcm", "1.1", **INTRUDER)
    for _ in range(2):
        found = store.write_batch([intruder])
        assert [(e.location, e.kind) for e in found] == [("/b/ct.dcm", "duplicate")]
        assert searched(store) == before
        assert rows(store) == counted
    [study] = query_rows(store, "studies", {"PatientID": "PID1"})
    assert (study["PatientName"], study["ModalitiesInStudy"]) == ("Doe^John", "CT")
    assert query_rows(store, "studies", {"PatientID": "WRONG"}) == []
    assert problems(db_url) == {}


def test_duplicates_under_other_uids_leave_no_row_behind(db_url: str) -> None:
    """Copies naming another study and series add no study, series or value."""
    from reliability import problems

    with Store(db_url) as store:
        store.write_batch([make_instance(f"/a/{n}.dcm", f"1.{n}") for n in (1, 2)])
        before, counted = searched(store), rows(store)
        copies = [
            make_instance(f"/b/{n}.dcm", f"1.{n}", study="9.9", series="9.9.9")
            for n in (1, 2)
        ]
        found = store.write_batch(copies)
        assert [e.kind for e in found] == ["duplicate", "duplicate"]
        assert (searched(store), rows(store)) == (before, counted)
    assert problems(db_url) == {}


def test_a_location_rewritten_as_a_duplicate_loses_what_it_held(
    store: Store, db_url: str
) -> None:
    """A changed file now holding a copy of another instance: its old one goes."""
    store.write_batch(
        [make_instance("/a/1.dcm", "1.1"), make_instance("/b/2.dcm", "1.2")]
    )
    copy = make_instance("/b/2.dcm", "1.1", mtime_ns=7)
    assert [e.kind for e in store.write_batch([copy])] == ["duplicate"]
    assert store.dicom_json("1.2") is None
    assert set(store.known_sources()) == {"/a/1.dcm"}
    # the same when the indexer screened it out and names it as replaced
    store.write_batch([make_instance("/c/3.dcm", "1.3")])
    store.write_batch([], [duplicate(copy, "/a/1.dcm")], replaced=["/c/3.dcm"])
    assert store.dicom_json("1.3") is None
    assert store.stats()["instances"] == store.stats()["series"] == 1
    assert problems(db_url, garbage=False) == {}


def differing(n: int, **changes: Any) -> InstanceRecord:
    """Instance ``1.n`` of one study and series, with attributes of its own."""
    attributes: dict[str, Any] = {
        "patient_id": f"P{n}",
        "patient_name": f"Name^{n}",
        "modality": ("CT", "MR", "PT")[n % 3],
        "accession_number": f"A{n}",
        "description": f"STUDY {n}",
    }
    return make_instance(f"/s/{n}.dcm", f"1.{n}", **(attributes | changes))


@pytest.mark.parametrize(
    "batches",
    [[[3, 1, 2]], [[3], [1], [2]], [[2], [3, 1]], [[1], [2, 3]]],
    ids=["one-batch", "one-each", "lowest-last", "lowest-first"],
)
def test_attributes_are_those_of_the_lowest_sop_instance_uid(
    store: Store, db_url: str, batches: list[list[int]]
) -> None:
    """However instances come in, study and series show the lowest one's attributes.

    Whole: an attribute the lowest instance lacks is not taken from another.
    """
    for batch in batches:
        store.write_batch(
            [differing(n, description=None if n == 1 else "X") for n in batch]
        )
    [study] = query_rows(store, "studies")
    assert (study["PatientID"], study["PatientName"]) == ("P1", "Name^1")
    assert (study["AccessionNumber"], study["StudyDescription"]) == ("A1", None)
    assert study["ModalitiesInStudy"] == "MR"
    assert study["NumberOfStudyRelatedInstances"] == 3
    assert problems(db_url) == {}


def _random_archive(rng: random.Random) -> list[InstanceRecord]:
    """Instances of 3 studies with random attributes; series "9.9" is in several."""
    out: dict[str, InstanceRecord] = {}
    for n in range(rng.randint(5, 25)):
        study = rng.choice(["1.1", "1.2", "1.3"])
        sop = f"5.{rng.randint(1, 40)}"
        out.setdefault(
            sop,
            make_instance(
                f"/r/{n}.dcm",
                sop,
                study=study,
                series=rng.choice([f"{study}.1", f"{study}.2", "9.9"]),
                patient_id=rng.choice(["A", "B", None]),
                patient_name=rng.choice(["X^Y", "Z", None]),
                modality=rng.choice(["CT", "MR", None]),
                description=rng.choice(["d1", "d2", None]),
            ),
        )
    return list(out.values())


@pytest.mark.parametrize("seed", range(24))
def test_any_history_ends_as_a_clean_write_of_what_is_left(
    db_url: str, tmp_path: Path, seed: int
) -> None:
    """Random order, batches, prunes and rewrites: studies and series as one write.

    Each instance has attributes of its own, and series "9.9" is named by
    several studies (not conformant, but found in the wild).
    """
    from reliability import problems, searched

    rng = random.Random(seed)
    records = _random_archive(rng)
    with Store(db_url) as store:
        order = rng.sample(records, len(records))
        while order:
            cut = rng.randint(1, 6)
            store.write_batch(order[:cut])
            order = order[cut:]
        gone = {r.source.location for r in records if rng.random() < 0.3}
        store.prune(["/r"], {r.source.location for r in records} - gone)
        left = [r for r in records if r.source.location not in gone]
        for n in rng.sample(range(len(left)), min(3, len(left))):
            r = left[n]
            left[n] = make_instance(
                r.source.location,
                "4." + r.sop_instance_uid[2:],  # new, and maybe the lowest
                study=r.study_instance_uid,
                series=r.series_instance_uid,
                patient_id="NEW",
                mtime_ns=9,
            )
            store.write_batch([left[n]])
    clean = f"sqlite:///{tmp_path / 'clean.sqlite'}"
    with Store(clean) as store:
        store.write_batch(left)
    assert searched(db_url) == searched(clean)
    assert problems(db_url, garbage=False) == {}


def test_an_empty_series_or_study_is_deleted_with_its_last_instance(
    db_url: str,
) -> None:
    """A location written again under other UIDs takes its series and study along."""
    from reliability import problems

    with Store(db_url) as store:
        store.write_batch([make_instance("/a/1.dcm", "1.1")])
        moved = make_instance(
            "/a/1.dcm", "1.1", study="2.2", series="2.2.2", mtime_ns=5
        )
        store.write_batch([moved])
        [study], [series] = query_rows(store, "studies"), query_rows(store, "series")
        assert (study["StudyInstanceUID"], series["SeriesInstanceUID"]) == (
            "2.2",
            "2.2.2",
        )
    # (the old values stay until a prune sweeps them: docs/store.md)
    assert problems(db_url, garbage=False) == {}


def instance_counts(store: Store) -> dict[str, int]:
    """``{SeriesInstanceUID: series.instance_count}`` as stored."""
    se = t.series
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(se.c.series_instance_uid, se.c.instance_count))
        return {uid: n for uid, n in rows}


def test_series_instance_counts_follow_every_change(db_url: str) -> None:
    """``series.instance_count`` is the number of instances after every change.

    Batches, a location rewritten with an instance of another series, a
    duplicate, a location rewritten with the same instance, a stream written
    in parts, prunes: the stored counts are what QIDO-RS returns, and equal the
    instances stored (``reliability.BROKEN``).
    """
    a, b = f"{SERIES}.1", f"{SERIES}.2"
    with Store(db_url) as store:
        store.write_batch(
            [make_instance(f"/c/{n}.dcm", f"1.{n}", series=a) for n in (1, 2, 3)]
        )
        store.write_batch(
            [make_instance(f"/c/{n}.dcm", f"1.{n}", series=b) for n in (4, 5)]
        )
        assert instance_counts(store) == {a: 3, b: 2}
        store.write_batch([make_instance("/c/1.dcm", "1.6", series=b, mtime_ns=9)])
        assert instance_counts(store) == {a: 2, b: 3}
        found = store.write_batch([make_instance("/d/copy.dcm", "1.2", series=b)])
        assert [e.kind for e in found] == ["duplicate"]
        store.write_batch([make_instance("/c/2.dcm", "1.2", series=a, mtime_ns=9)])
        assert instance_counts(store) == {a: 2, b: 3}
        streamed = [make_instance("/big.json", f"1.{n}", series=a) for n in (7, 8, 9)]
        store.write_stream(lambda: iter(streamed), part_size=2)
        assert instance_counts(store) == {a: 5, b: 3}
        assert store.prune(["/c"], {"/c/1.dcm", "/c/4.dcm"}) == 3
        assert instance_counts(store) == {a: 3, b: 2}
        series = query_rows(store, "series")
        assert {
            s["SeriesInstanceUID"]: s["NumberOfSeriesRelatedInstances"] for s in series
        } == {a: 3, b: 2}
        [study] = query_rows(store, "studies")
        assert study["NumberOfStudyRelatedInstances"] == 5
        assert store.prune(["/big.json"], set()) == 3
        assert instance_counts(store) == {b: 2}
    assert problems(db_url) == {}


def first_instances(store: Store) -> dict[str, tuple[str, int]]:
    """``{Series or Study Instance UID: (SOP Instance UID, instances.id)}`` of
    each row's stored ``first_instance_id`` (a row naming no instance: left out)."""
    ins = t.instances
    found: dict[str, tuple[str, int]] = {}
    with store.engine.connect() as conn:
        for table, uid in (
            (t.series, t.series.c.series_instance_uid),
            (t.studies, t.studies.c.study_instance_uid),
        ):
            rows = conn.execute(
                sa.select(uid, ins.c.sop_instance_uid, ins.c.id).join_from(
                    table, ins, ins.c.id == table.c.first_instance_id
                )
            )
            found.update((row[0], (row[1], row[2])) for row in rows)
    return found


def test_first_instances_follow_every_change(db_url: str) -> None:
    """A series' and a study's ``first_instance_id`` is their lowest-SOP
    instance after every change, whichever was stored first.

    A later batch with a lower UID (by code point ``1.10`` < ``1.5``), the
    same instance written again (a new row), the lowest moved to another
    series, a yet lower one from another location, a prune of the lowest:
    each row names the stored instance its columns come from
    (``reliability.BROKEN`` too).
    """
    a, b = f"{SERIES}.1", f"{SERIES}.2"

    def sops(store: Store) -> dict[str, str]:
        return {uid: sop for uid, (sop, _) in first_instances(store).items()}

    with Store(db_url) as store:
        store.write_batch(
            [make_instance(f"/c/{n}.dcm", f"1.{n}", series=a) for n in (5, 6)]
        )
        assert sops(store) == {STUDY: "1.5", a: "1.5"}
        store.write_batch([make_instance("/c/10.dcm", "1.10", series=b)])
        assert sops(store) == {STUDY: "1.10", a: "1.5", b: "1.10"}
        # a new row (PostgreSQL: a new id; SQLite may reuse the last rowid)
        store.write_batch([make_instance("/c/10.dcm", "1.10", series=b, mtime_ns=9)])
        assert sops(store) == {STUDY: "1.10", a: "1.5", b: "1.10"}
        store.write_batch([make_instance("/c/10.dcm", "1.10", series=a, mtime_ns=7)])
        assert sops(store) == {STUDY: "1.10", a: "1.10"}
        found = store.write_batch([make_instance("/d/copy.dcm", "1.0", series=b)])
        assert found == []  # another SOP: stored, the lowest now
        assert sops(store) == {STUDY: "1.0", a: "1.10", b: "1.0"}
        assert store.prune(["/c", "/d"], {"/c/5.dcm", "/c/6.dcm"}) == 2
        assert sops(store) == {STUDY: "1.5", a: "1.5"}
    assert problems(db_url) == {}


def test_a_stream_screens_and_settles_as_a_batch(db_url: str, tmp_path: Path) -> None:
    """``write_stream`` refuses duplicates before encoding and settles per part.

    One large source streamed two records a part: copies of stored
    instances (one with other attributes under the stored study, two under
    another study and series, in one part) change nothing and leave no row
    (no study, series or base); the part holding the lowest SOP Instance
    UID gives study and series their attributes, as one clean write does.
    """
    from reliability import problems

    big = "/big.json"
    stored = [make_instance("/a/1.dcm", "1.5"), make_instance("/a/2.dcm", "1.8")]
    mine = [differing(n) for n in (7, 3, 9)]
    mine = [make_instance(big, r.sop_instance_uid, **_attributes(r)) for r in mine]
    copies = [
        make_instance(big, "1.5", **INTRUDER),
        make_instance(big, "1.5", study="9.9", series="9.9.9", **INTRUDER),
        make_instance(big, "1.8", study="9.9", series="9.9.9", **INTRUDER),
    ]
    # parts: [7, copy of 1.5], [copies under 9.9], [3, 9]
    items = [mine[0], copies[0], copies[1], copies[2], mine[1], mine[2]]
    with Store(db_url) as store:
        store.write_batch(stored)
        found = store.write_stream(lambda: iter(items), part_size=2)
        assert [(e.location, e.kind) for e in found] == [(big, "duplicate")] * 3
        assert store.dicom_json("1.5") == stored[0].dicom_json
        assert query_rows(store, "studies", {"PatientID": "WRONG"}) == []
        assert query_rows(store, "series", {"SeriesInstanceUID": "9.9.9"}) == []
        got = searched(store)
    clean = f"sqlite:///{tmp_path / 'clean.sqlite'}"
    with Store(clean) as store:
        store.write_batch([*stored, *mine])
        assert got == searched(store)
    [study] = got[0]
    assert (study["PatientID"], study["NumberOfStudyRelatedInstances"]) == ("P3", 5)
    assert problems(db_url) == {}


def _attributes(record: InstanceRecord) -> dict[str, Any]:
    """The :func:`make_instance` arguments giving ``record``'s attributes."""
    return {
        "patient_id": record.patient_id,
        "patient_name": record.patient_name,
        "modality": record.modality,
        "accession_number": record.accession_number,
        "description": record.study_description,
    }


def test_shared_module_values_are_stored_once(store: Store) -> None:
    """Patient and series modules of many images are one row each."""
    store.write_batch(
        [make_instance(f"/a/{i}.dcm", f"1.{i}", frames=2) for i in range(5)]
    )
    assert count(store, t.images) == 10
    assert count(store, t.image_modules) == 40
    # 1 patient + 1 series + 1 None + 10 distinct imagePlaneModule values.
    with store.engine.connect() as conn:
        used = sa.select(sa.func.count(sa.distinct(t.image_modules.c.value_id)))
        assert conn.execute(used).scalar() == 13
    # ... plus two base rows: the series' DICOM JSON and imagePlaneModule.
    assert count(store, t.module_values) == 13 + 2


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


def test_prune_deletes_unseen_locations_and_orphans(store: Store, db_url: str) -> None:
    """prune forgets locations under a root that were not seen, and orphans."""
    store.write_batch(
        [
            make_instance("/data/a/1.dcm", "1.1"),
            make_instance("/data/a/2.dcm", "1.2", series="1.9", study="1.8"),
            make_instance("/data/ab.dcm", "1.3"),
            make_instance("/data/z.zip!/x/1.dcm", "1.4"),
        ],
        [ErrorRecord("/data/a/bad.dcm", "invalid", "no pixel data")],
    )
    assert store.prune(["/data/a"], {"/data/a/1.dcm"}) == 1
    assert set(store.known_sources()) == {
        "/data/a/1.dcm",
        "/data/ab.dcm",
        "/data/z.zip!/x/1.dcm",
    }
    assert store.errors() == []
    assert query_rows(store, "series", {"SeriesInstanceUID": "1.9"}) == []
    assert query_rows(store, "studies", {"StudyInstanceUID": "1.8"}) == []
    assert store.prune(["/data/z.zip"], set()) == 1
    assert store.stats()["instances"] == 2
    assert problems(db_url) == {}


def test_prune_minds_the_case_of_locations(store: Store) -> None:
    """Pruning ``/data`` leaves ``/DATA/...`` alone: another folder on a
    case-sensitive file system (SQLite's LIKE ignores ASCII case)."""
    store.write_batch(
        [make_instance("/DATA/1.dcm", "1.1"), make_instance("/data/2.dcm", "1.2")],
        [ErrorRecord("/DATA/bad.dcm", "invalid", "no pixel data")],
    )
    assert store.prune(["/data"], set()) == 1
    assert set(store.known_sources()) == {"/DATA/1.dcm"}
    assert [e.location for e in store.errors()] == ["/DATA/bad.dcm"]


def test_prune_forgets_only_locations_it_owns(store: Store, db_url: str) -> None:
    """With owns, only unseen locations under a root that owns accepts go."""
    store.write_batch(
        [make_instance(f"/o/{i}.dcm", f"1.{i}") for i in range(4)],
        [
            ErrorRecord("/o/bad0.dcm", "invalid", "mine"),
            ErrorRecord("/o/bad1.dcm", "invalid", "not mine"),
        ],
    )
    mine = {"/o/0.dcm", "/o/1.dcm", "/o/bad0.dcm"}
    assert store.prune(["/o"], {"/o/1.dcm"}, owns=mine.__contains__) == 1
    assert set(store.known_sources()) == {"/o/1.dcm", "/o/2.dcm", "/o/3.dcm"}
    assert [e.location for e in store.errors()] == ["/o/bad1.dcm"]
    assert store.prune(["/o"], set(), owns=lambda location: False) == 0
    assert store.stats()["instances"] == 3
    assert problems(db_url) == {}


def test_prune_removes_unreferenced_module_values(store: Store) -> None:
    """Module values used only by pruned images are deleted; shared ones stay."""
    store.write_batch([make_instance(f"/d/{i}.dcm", f"1.{i}") for i in range(3)])
    before = count(store, t.module_values)
    store.prune(["/d"], {"/d/0.dcm", "/d/1.dcm"})
    assert count(store, t.module_values) == before - 1
    assert store.image_modules(store_image_id("1.0")) is not None


def store_image_id(sop: str, frame: int = 1) -> str:
    """The imageId make_instance gives frame ``frame`` of ``sop``."""
    return f"wadors:http://h/studies/{STUDY}/series/{SERIES}/instances/{sop}/frames/{frame}"


def test_prune_treats_like_metacharacters_in_roots_as_data(store: Store) -> None:
    """A root containing % or _ matches only itself, not as a pattern."""
    store.write_batch(
        [make_instance("/d_1/a.dcm", "1.1"), make_instance("/dx1/a.dcm", "1.2")]
    )
    assert store.prune(["/d_1"], set()) == 1
    assert set(store.known_sources()) == {"/dx1/a.dcm"}
    assert store.prune(["/%"], set()) == 0


def test_export_streams_every_image_in_order(store: Store) -> None:
    """export yields each image once, ordered by imageId, optionally filtered."""
    records = [make_instance(f"/a/{i}.dcm", f"1.{i}", frames=2) for i in range(3)]
    store.write_batch(records)
    got = list(store.export())
    assert [image_id for image_id, _ in got] == sorted(
        image.image_id for r in records for image in r.images
    )
    want = {image.image_id: image.modules for r in records for image in r.images}
    assert all(same(modules, want[image_id]) for image_id, modules in got)
    only = dict(store.export(["patientModule"]))
    assert all(list(m) == ["patientModule"] for m in only.values())


def test_stats_counts_rows(store: Store) -> None:
    """stats reports row counts and a database size."""
    store.write_batch(
        [make_instance("/a/1.dcm", "1.1", frames=2)],
        [ErrorRecord("/a/x", "unreadable", "?")],
    )
    stats = store.stats()
    assert stats["studies"] == stats["series"] == stats["instances"] == 1
    assert stats["images"] == 2
    assert stats["sources"] == 1
    assert stats["errors"] == 1
    assert (stats["database_bytes"] or 0) > 0


def _varied(location: str, i: int, frames: int = 1) -> InstanceRecord:
    """Instance ``1.i`` with a patient and modality of its own."""
    modality = ("CT", "MR", "PT")[i % 3]
    return make_instance(
        location, f"1.{i}", frames=frames, patient_id=f"P{i}", modality=modality
    )


def _concurrent_writer(url: str, worker: int, rounds: int) -> int:
    """Write overlapping batches (and copies from other locations) to ``url``."""
    written = 0
    with Store(url) as store:
        for round_ in range(rounds):
            # Each worker walks the same 12 instances in its own order.
            order = [(worker * 5 + round_ * 7 + i) % 12 for i in range(12)]
            batch = [_varied(f"/c/{i}.dcm", i, frames=2) for i in order[:6]]
            batch.append(_varied(f"/copy/{worker}/{order[0]}.dcm", order[0]))
            store.write_batch(batch)
            store.write_batch([_varied(f"/c/{i}.dcm", i, frames=2) for i in order[6:]])
            if worker == 0:
                # Sweeps orphans while the others write (deletes no instance).
                store.prune(["/c"], {f"/c/{i}.dcm" for i in range(12)})
            written += 1
    return written


@pytest.mark.parametrize("workers", [4])
def test_concurrent_writers_never_duplicate_or_fail(db_url: str, workers: int) -> None:
    """Processes writing overlapping batches at once leave one row per thing.

    The instances disagree on patient and modality: study and series end
    with the lowest one's, whoever wrote last.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    Store(db_url).close()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        results = list(
            pool.map(
                _concurrent_writer, [db_url] * workers, range(workers), [3] * workers
            )
        )
    assert results == [3] * workers
    with Store(db_url) as store:
        stats = store.stats()
        assert stats["studies"] == 1
        assert stats["series"] == 1
        assert stats["instances"] == 12
        # Every SOP is stored once; its frames are all there unless a copy won.
        with store.engine.connect() as conn:
            sops = (
                conn.execute(sa.select(t.instances.c.sop_instance_uid)).scalars().all()
            )
        assert sorted(sops) == sorted(f"1.{i}" for i in range(12))
        # 12 patients + 3 series + 1 None + one imagePlaneModule per frame.
        with store.engine.connect() as conn:
            used = sa.select(sa.func.count(sa.distinct(t.image_modules.c.value_id)))
            assert conn.execute(used).scalar() <= 16 + 24
        [study], [series] = query_rows(store, "studies"), query_rows(store, "series")
        assert (study["PatientID"], series["Modality"]) == ("P0", "CT")
        assert stats["image_modules"] == 4 * stats["images"]
        assert set(store.series_image_modules(SERIES)) == {
            image_id for image_id, _ in store.export()
        }
    # (the copies from /copy/ leave values only a prune sweeps)
    assert problems(db_url, garbage=False) == {}


def test_images_with_many_own_values_round_trip(store: Store) -> None:
    """Per-image values (stored together in one composite row) read back exactly."""
    bits = [(i * 31 >> 2) & 1 for i in range(4096)]
    records = []
    for i in range(3):
        record = make_instance(f"/m/{i}.dcm", f"1.{i}", frames=2)
        for image in record.images:
            image.modules["sopCommonModule"] = {
                "sopInstanceUID": f"1.{i}",
                "f": image.frame,
            }
            image.modules["overlayPlaneModule"] = {
                "overlays": [{"pixelData": [*bits[image.frame :], i], "rows": 64}]
            }
            image.modules["imageUrlModule"] = {"url": image.image_id, "x": -0.0}
        records.append(record)
    store.write_batch(records)
    want = {image.image_id: image.modules for r in records for image in r.images}
    series = store.series_image_modules(SERIES)
    exported = dict(store.export())
    for image_id, modules in want.items():
        assert same(store.image_modules(image_id), modules)
        assert same(series[image_id], modules)
        assert same(exported[image_id], modules)
    # One composite per image holds its own values: 6 images, 6 rows used
    # for them, plus the shared patient, series and None values.
    with store.engine.connect() as conn:
        used = sa.select(sa.func.count(sa.distinct(t.image_modules.c.value_id)))
        assert conn.execute(used).scalar() == 6 + 3


@pytest.mark.parametrize(
    "image_id",
    [
        "wadouri:file:///data/ct/IM%201.dcm?frame=1",
        "wadouri:file:///data/a.zip!/x/IM1?frame=2",
        "dicomweb:http://h/x/y",
        "noslash",
        "wadors:http://h/studies/1/series/2/instances/3/frames/1",
    ],
)
def test_image_id_forms_round_trip(store: Store, image_id: str) -> None:
    """Any imageId form is stored and found again exactly (prefix + suffix)."""
    record = make_instance("/f/1.dcm", "1.1")
    image = ImageRecord(image_id, 1, {"patientModule": {"x": 1}})
    record = InstanceRecord(**{**record_fields(record), "images": [image]})
    store.write_batch([record])
    assert store.image_modules(image_id) == {"patientModule": {"x": 1}}
    assert [i for i, _ in store.export()] == [image_id]
    assert list(store.series_image_modules(SERIES)) == [image_id]
    assert store.image_modules(image_id + "x") is None


def record_fields(record: InstanceRecord) -> dict[str, Any]:
    """The fields of a record as a dict (to rebuild it with changes)."""
    import dataclasses

    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


def test_prune_of_everything_leaves_no_rows(store: Store) -> None:
    """After pruning every location, no value, base, prefix or study is left."""
    store.write_batch(
        [make_instance(f"/p/{i}.dcm", f"1.{i}", frames=3) for i in range(4)]
    )
    assert store.prune(["/p"], set()) == 4
    for table in (
        t.module_values,
        t.image_id_prefixes,
        t.images,
        t.image_modules,
        t.studies,
        t.series,
        t.sources,
    ):
        assert count(store, table) == 0, table.name


@pytest.mark.parametrize("number", [2**31, -(2**31) - 1, 2**70])
def test_numbers_past_32_bits_are_stored_without_them(
    store: Store, number: int
) -> None:
    """An InstanceNumber/SeriesNumber out of IS range leaves its column empty."""
    record = record_fields(make_instance("/n/1.dcm", "1.1"))
    record.update(instance_number=number, series_number=number)
    assert store.write_batch([InstanceRecord(**record)]) == []
    [instance], [series] = query_rows(store, "instances"), query_rows(store, "series")
    assert (instance["InstanceNumber"], series["SeriesNumber"]) == (None, None)


@pytest.mark.postgres
def test_copy_errors_are_sqlalchemy_errors_and_roll_back(postgres_url: str) -> None:
    """A failing COPY raises DBAPIError (SQLSTATE kept, so the store retries
    what it retries for any statement); its transaction rolls back whole."""
    from metastore.store import write as store_write

    with Store(postgres_url) as store:
        store.write_batch([make_instance("/c/1.dcm", "1.1")])
        before = store.stats()
        with (
            store.engine.connect() as conn,
            pytest.raises(sa.exc.IntegrityError) as caught,
            conn.begin(),
        ):
            stored = conn.execute(sa.select(t.image_modules).limit(1)).one()
            store_write.copy_rows(
                conn,
                store_write.COPY_IMAGE_MODULES,
                ["int4", "int2", "int4"],
                [tuple(stored)],  # already there: a primary key violation
            )
        assert getattr(caught.value.orig, "sqlstate", None) == "23505"
        assert "COPY image_modules" in str(caught.value)
        assert store.stats() == before
        # The pooled connection is fine afterwards.
        assert store.write_batch([make_instance("/c/2.dcm", "1.2")]) == []


def test_module_type_ids_are_not_spent_by_every_batch(db_url: str) -> None:
    """Writing the same module types batch after batch draws no new ids.

    ``module_types.id`` is a ``smallint`` on PostgreSQL: if every batch drew
    one sequence number per type (``ON CONFLICT DO NOTHING`` does), a large
    archive would run the sequence out and fail mid-run.
    """
    with Store(db_url) as store:
        for n in range(30):
            store.write_batch([make_instance(f"/a/{n}.dcm", f"1.2.3.{n}")])
        with store.engine.connect() as conn:
            types = conn.execute(sa.select(sa.func.count()).select_from(t.module_types))
            count = types.scalar_one()
            if conn.dialect.name == "postgresql":
                drawn = conn.exec_driver_sql(
                    "SELECT last_value FROM pg_sequences"
                    " WHERE sequencename = 'module_types_id_seq'"
                ).scalar_one()
            else:
                drawn = conn.execute(
                    sa.select(sa.func.max(t.module_types.c.id))
                ).scalar_one()
    assert count == 4
    assert drawn == count


def test_insert_rows_over_several_pages_returns_each_row_once(db_url: str) -> None:
    """``insert_rows`` with ``RETURNING`` over more rows than one ``VALUES``
    page (SQLite's) or one ``unnest`` (PostgreSQL's): every row inserted
    comes back once, a stored key is skipped (``DO NOTHING``) or updated and
    returned (``DO UPDATE``), and a timestamp reads back as written."""
    from datetime import UTC, datetime

    from metastore.store import write as store_write

    n = store_write.SQLITE_PAGE_ROWS * 2 + 7
    p, src = t.image_id_prefixes, t.sources
    with Store(db_url) as store, store.engine.begin() as conn:

        def prefixes(numbers: range) -> list[sa.Row[Any]]:
            return store_write.insert_rows(
                conn,
                p,
                ["prefix"],
                [(f"p{i:05d}",) for i in numbers],
                conflict="prefix",
                returning=["prefix", "id"],
            )

        first = prefixes(range(n))
        assert sorted(row.prefix for row in first) == [f"p{i:05d}" for i in range(n)]
        assert len({row.id for row in first}) == n
        again = prefixes(range(n - 5, n + 5))
        assert sorted(row.prefix for row in again) == [
            f"p{i:05d}" for i in range(n, n + 5)
        ]

        now = datetime(2026, 12, 6, 7, 8, 9, 123456, tzinfo=UTC)

        def upsert(size: int) -> dict[str, int]:
            rows = store_write.insert_rows(
                conn,
                src,
                ["location", "size", "mtime_ns", "indexed_at"],
                [(f"/s/{i:05d}", size, i, now) for i in range(n)],
                conflict="location",
                update=["size", "mtime_ns", "indexed_at"],
                returning=["location", "id"],
            )
            assert len(rows) == n
            return {row.location: row.id for row in rows}

        assert upsert(1) == upsert(2)
        stored = conn.execute(sa.select(src.c.size, src.c.indexed_at)).all()
    assert {size for size, _ in stored} == {2}
    # SQLite returns the stored text as a naive datetime, PostgreSQL an aware one.
    assert {
        at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC) for _, at in stored
    } == {now}
