"""Store.query: QIDO-RS matching rules, returned attributes, paging, streaming.

Every table runs on SQLite and PostgreSQL (``db_url``).  The archive is
DICOM JSON turned into records by the indexer's own ``build_instance``, so
the rows are what indexing writes.  Expected results name studies S1..S5,
series and instances by short labels (see ``ARCHIVE``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from conftest import _database_url, _drop

from metastore.errors import QueryError
from metastore.imageid import parse_image_id, wadors_image_id
from metastore.index.extract import build_instance
from metastore.records import InstanceRecord, Source
from metastore.store import Store
from metastore.store.qido import CHUNK, RETURNED

ROOT = "http://pacs/dicomweb"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SR = "1.2.840.10008.5.1.4.1.1.88.11"


def pn(alphabetic: str, ideographic: str = "", phonetic: str = "") -> dict[str, Any]:
    """A PN element."""
    keys = ("Alphabetic", "Ideographic", "Phonetic")
    groups = zip(keys, (alphabetic, ideographic, phonetic), strict=True)
    return {"vr": "PN", "Value": [{k: v for k, v in groups if v}]}


def el(vr: str, *values: Any) -> dict[str, Any]:
    """An element with these values (none: empty)."""
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


#: Per study: its attributes, then series (attributes, then instances).
ARCHIVE: dict[str, Any] = {
    "S1": {
        "00100010": pn("Gómez^José"),
        "00100020": el("LO", "PAT_1"),
        "00100030": el("DA", "19800101"),
        "00100040": el("CS", "M"),
        "00101030": el("DS", 70),
        "00080020": el("DA", "20200115"),
        "00080030": el("TM", "101500"),
        "00080050": el("SH", "A%1"),
        "00080090": pn("Smith^Anna"),
        "00081030": el("LO", "Brain 50% dose"),
        "00200010": el("SH", "S1"),
        "00091001": el("LO", "private one"),
        "00400275": {
            "vr": "SQ",
            "Value": [{"00400009": el("SH", "SPS1"), "00401001": el("SH", "RP1")}],
        },
        "series": {
            "S1a": {
                "00080060": el("CS", "MR"),
                "00200011": el("IS", 1),
                "0008103E": el("LO", "AX T1"),
                "00400244": el("DA", "20200115"),
                "00400245": el("TM", "101600"),
                "instances": {
                    "S1a1": {
                        "00200013": el("IS", 1),
                        "00180050": el("DS", 5),
                        "00280010": el("US", 256),
                        "00080016": el("UI", MR),
                    },
                    "S1a2": {
                        "00200013": el("IS", 2),
                        "00180050": el("DS", 5),
                        "00280010": el("US", 256),
                        "00080016": el("UI", MR),
                    },
                    "S1a3": {
                        "00200013": el("IS", 3),
                        "00180050": el("DS", 2.5),
                        "00280010": el("US", 512),
                        "00080016": el("UI", MR),
                    },
                },
            },
        },
    },
    "S2": {
        "00100010": pn("Yamada^Tarou", "山田^太郎", "やまだ^たろう"),
        "00100020": el("LO", "PATX1"),
        "00080020": el("DA", "20201231"),
        "00080030": el("TM", "235959"),
        "00080050": el("SH", "A11"),
        "00080080": el("LO", "General Hospital"),
        "00080090": pn("O'Neil^Pat"),
        "00081030": el("LO", "O'Brien chest"),
        "series": {
            "S2a": {
                "00080060": el("CS", "CT"),
                "00200011": el("IS", 2),
                "instances": {
                    "S2a1": {"00200013": el("IS", 1), "00080016": el("UI", CT)}
                },
            },
            "S2b": {
                "00080060": el("CS", "SR"),
                "00200011": el("IS", 3),
                "instances": {"S2b1": {"00080016": el("UI", SR)}},
            },
        },
    },
    "S3": {
        "00100010": pn("Müller^Jürgen"),
        "00100020": el("LO", "P3\\x"),
        "00080020": el("DA", "20210610"),
        "00080030": el("TM", "0700"),
        "00080090": pn("Đặng^Thị"),
        "00081030": el("LO", "100% \\ back_slash"),
        "series": {
            "S3a": {
                "00080060": el("CS", "CT"),
                "00200011": el("IS", 1),
                "instances": {
                    "S3a1": {"00200013": el("IS", 7), "00080016": el("UI", CT)}
                },
            },
        },
    },
    "S4": {
        "00100010": pn("DOE^JOHN"),
        "00100020": el("LO", "p'4"),
        "00081030": el("LO", "x_y"),
        "series": {
            "S4a": {
                "00080060": el("CS", "OT"),
                "instances": {"S4a1": {"00080016": el("UI", CT)}},
            },
        },
    },
    "S5": {
        "00100010": pn("Ὀδυσσεύς^Λαέρτου"),
        "00100020": el("LO", "Σ"),
        "00080020": el("DA", "20220101"),
        "00080030": el("TM", "120000.5"),
        "series": {
            "S5a": {
                "00080060": el("CS", "MR"),
                "instances": {"S5a1": {"00080016": el("UI", MR)}},
            },
        },
    },
}


def uid(label: str) -> str:
    """The UID of a study, series or instance label (``S2b1`` -> ``1.2.3.2.2.1``)."""
    parts = [str(int(label[1]))]
    if len(label) > 2:
        parts.append(str(ord(label[2]) - ord("a") + 1))
    if len(label) > 3:
        parts.append(label[3:])
    return "1.2.3." + ".".join(parts)


LABELS = {
    uid(label): label
    for study, s in ARCHIVE.items()
    for label in [
        study,
        *s["series"],
        *(i for x in s["series"].values() for i in x["instances"]),
    ]
}


def records() -> list[InstanceRecord]:
    """The archive as the indexer's records."""
    out = []
    for study, s in ARCHIVE.items():
        study_attrs = {k: v for k, v in s.items() if k != "series"}
        for series, x in s["series"].items():
            series_attrs = {k: v for k, v in x.items() if k != "instances"}
            for instance, attrs in x["instances"].items():
                json = {
                    **study_attrs,
                    **series_attrs,
                    **attrs,
                    "0020000D": el("UI", uid(study)),
                    "0020000E": el("UI", uid(series)),
                    "00080018": el("UI", uid(instance)),
                    "00280011": el("US", 128),
                    "00280100": el("US", 16),
                }
                json = dict(sorted(json.items()))
                name = lambda a, b, c: parse_image_id(wadors_image_id(ROOT, a, b, c, 1))  # noqa: E731
                out.append(build_instance(json, Source(f"/a/{instance}", 1, 1), name))
    return out


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    """A store holding :data:`ARCHIVE`, shared by this module's read-only tests
    (one database per backend, cloned from the session's migrated template)."""
    if request.param == "sqlite":
        template = request.getfixturevalue("_sqlite_template")
        path = tmp_path_factory.mktemp("qido") / "archive.sqlite"
        shutil.copyfile(template, path)
        with Store(f"sqlite:///{path}") as s:
            assert s.write_batch(records()) == []
            yield s
        return
    admin = request.getfixturevalue("_postgres_admin")
    template = request.getfixturevalue("_postgres_template")
    name = f"metastore_test_qido_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        with Store(_database_url(name)) as s:
            assert s.write_batch(records()) == []
            yield s
    finally:
        _drop(admin, name)


def labels(rows: Any, tag: str) -> list[str]:
    """The labels of the rows, by the UID attribute ``tag``."""
    return [LABELS[row[tag]["Value"][0]] for row in rows]


STUDY, SERIES, SOP = "0020000D", "0020000E", "00080018"

STUDY_CASES: list[tuple[dict[str, Any], bool, list[str]]] = [
    # no filter: studies by date (none first), time, UID
    ({}, False, ["S4", "S1", "S2", "S3", "S5"]),
    ({"PatientName": ""}, False, ["S4", "S1", "S2", "S3", "S5"]),
    ({"PatientName": "*"}, False, ["S4", "S1", "S2", "S3", "S5"]),
    # text: case-insensitive, wildcards, SQL/LIKE metacharacters as data
    ({"PatientID": "pat_1"}, False, ["S1"]),
    ({"00100020": "PAT_*"}, False, ["S1"]),
    ({"PatientID": "PAT?1"}, False, ["S1", "S2"]),
    ({"PatientID": "P3\\x"}, False, ["S3"]),
    ({"PatientID": "p'4"}, False, ["S4"]),
    ({"PatientID": "%"}, False, []),
    ({"PatientID": "*%*"}, False, []),
    ({"PatientID": "*'*"}, False, ["S4"]),
    ({"PatientID": "' OR 1=1 --"}, False, []),
    ({"PatientID": "σ"}, False, ["S5"]),
    ({"AccessionNumber": "A%1"}, False, ["S1"]),
    ({"AccessionNumber": "a%*"}, False, ["S1"]),
    ({"AccessionNumber": "A_1"}, False, []),
    ({"StudyDescription": "*50%*"}, False, ["S1"]),
    ({"StudyDescription": "*5_%*"}, False, []),
    ({"StudyDescription": "o'brien*"}, False, ["S2"]),
    ({"StudyDescription": "*\\*"}, False, ["S3"]),
    ({"StudyDescription": "x_y"}, False, ["S4"]),
    ({"StudyID": "s1"}, False, ["S1"]),
    # PN: per component group, case-insensitive; accents count unless fuzzy
    ({"PatientName": "gómez^josé"}, False, ["S1"]),
    ({"PatientName": "GÓMEZ*"}, False, ["S1"]),
    ({"PatientName": "gomez*"}, False, []),
    ({"PatientName": "gomez*"}, True, ["S1"]),
    ({"PatientName": "jose"}, False, []),
    ({"PatientName": "jose"}, True, ["S1"]),
    ({"PatientName": "JOS"}, True, ["S1"]),
    ({"PatientName": "gomez^jo"}, True, ["S1"]),
    ({"PatientName": "*ose"}, True, ["S1"]),
    ({"PatientName": "山田*"}, False, ["S2"]),
    ({"PatientName": "山田^太郎"}, False, ["S2"]),
    ({"PatientName": "やまだ^たろう"}, False, ["S2"]),
    ({"PatientName": "*たろう"}, False, ["S2"]),
    ({"PatientName": "yamada^tarou"}, False, ["S2"]),
    ({"PatientName": "YAMADA*"}, False, ["S2"]),
    ({"PatientName": "tarou"}, False, []),
    ({"PatientName": "tarou"}, True, ["S2"]),
    ({"PatientName": "太郎"}, True, ["S2"]),
    ({"PatientName": "山田"}, True, ["S2"]),
    ({"PatientName": "Yamada^Tarou=山田^太郎"}, False, ["S2"]),
    ({"PatientName": "=山田*"}, False, ["S2"]),
    ({"PatientName": "=山田^太?"}, False, ["S2"]),
    ({"PatientName": "山田*="}, False, []),
    ({"PatientName": "*tarou*山*"}, False, []),  # no single group holds both
    ({"PatientName": "MÜLLER^JÜRGEN"}, False, ["S3"]),
    ({"PatientName": "müller*"}, False, ["S3"]),
    ({"PatientName": "muller"}, True, ["S3"]),
    ({"PatientName": "jurgen"}, True, ["S3"]),
    ({"PatientName": "ὀδυσσεύς*"}, False, ["S5"]),
    ({"PatientName": "ὈΔΥΣΣΕΎΣ*"}, False, ["S5"]),
    ({"PatientName": "οδυσσευς"}, True, ["S5"]),
    ({"PatientName": "doe^john"}, False, ["S4"]),
    ({"PatientName": "d?e^*"}, False, ["S4"]),
    ({"PatientName": "*o*"}, True, ["S4", "S1", "S2"]),
    ({"PatientName": ["doe^john", "müller*"]}, False, ["S4", "S3"]),
    ({"ReferringPhysicianName": "smith*"}, False, ["S1"]),
    ({"00080090": "o'neil^pat"}, False, ["S2"]),
    ({"ReferringPhysicianName": "anna"}, True, ["S1"]),
    ({"ReferringPhysicianName": "dang"}, True, ["S3"]),
    ({"ReferringPhysicianName": "dang"}, False, []),
    # dates, times, lists
    ({"StudyDate": "20200115"}, False, ["S1"]),
    ({"StudyDate": "20200101-20201231"}, False, ["S1", "S2"]),
    ({"StudyDate": "20201231-"}, False, ["S2", "S3", "S5"]),
    ({"StudyDate": "-20200115"}, False, ["S1"]),
    ({"StudyDate": date(2020, 12, 31)}, False, ["S2"]),
    ({"StudyDate": ["20200115", "20210610"]}, False, ["S1", "S3"]),
    ({"PatientBirthDate": "19800101"}, False, ["S1"]),
    ({"StudyTime": "10-11"}, False, ["S1"]),
    ({"StudyTime": "1015"}, False, ["S1"]),
    ({"StudyTime": "-0800"}, False, ["S3"]),
    ({"StudyTime": "0700"}, False, ["S3"]),
    ({"StudyTime": "1200"}, False, ["S5"]),
    ({"StudyTime": "235959-"}, False, ["S2"]),
    ({"StudyInstanceUID": "1.2.3.1,1.2.3.3"}, False, ["S1", "S3"]),
    ({"StudyInstanceUID": "1.2.3.1\\1.2.3.2"}, False, ["S1", "S2"]),
    ({"StudyInstanceUID": ["1.2.3.2"]}, False, ["S2"]),
    ({"StudyInstanceUID": "1.2.3"}, False, []),
    # codes and computed / lower-level attributes
    ({"PatientSex": "m"}, False, ["S1"]),
    ({"ModalitiesInStudy": "CT"}, False, ["S2", "S3"]),
    ({"ModalitiesInStudy": "mr"}, False, ["S1", "S5"]),
    ({"ModalitiesInStudy": "s?"}, False, ["S2"]),
    ({"ModalitiesInStudy": "CT\\MR"}, False, ["S1", "S2", "S3", "S5"]),
    ({"00080061": "SR,OT"}, False, ["S4", "S2"]),
    ({"Modality": "SR"}, False, ["S2"]),
    ({"SeriesInstanceUID": "1.2.3.2.2"}, False, ["S2"]),
    ({"SOPInstanceUID": "1.2.3.1.1.3"}, False, ["S1"]),
    ({"SOPClassUID": SR}, False, ["S2"]),
    # the slower path: any attribute of the stored DICOM JSON
    ({"PatientWeight": "70"}, False, ["S1"]),
    ({"PatientWeight": "70.0"}, False, ["S1"]),
    ({"InstitutionName": "*general*"}, False, ["S2"]),
    ({"00091001": "PRIVATE*"}, False, ["S1"]),
    ({"RequestAttributesSequence.ScheduledProcedureStepID": "SPS1"}, False, ["S1"]),
    ({"00400275.00401001": "rp*"}, False, ["S1"]),
    ({"RequestAttributesSequence": ""}, False, ["S4", "S1", "S2", "S3", "S5"]),
    # several filters: all must match
    ({"PatientName": "*", "StudyDate": "20200115"}, False, ["S1"]),
    ({"ModalitiesInStudy": "CT", "PatientID": "PATX1"}, False, ["S2"]),
    ({"InstitutionName": "*", "PatientName": "*a*"}, False, ["S2"]),
]


@pytest.mark.parametrize(("filters", "fuzzy", "expected"), STUDY_CASES)
def test_study_matching(
    store: Store, filters: dict[str, Any], fuzzy: bool, expected: list[str]
) -> None:
    """Each study filter returns exactly the expected studies, in order."""
    rows = list(store.query("studies", filters, fuzzy=fuzzy))
    assert labels(rows, STUDY) == expected


SERIES_CASES: list[tuple[dict[str, Any], list[str]]] = [
    ({}, ["S1a", "S2a", "S2b", "S3a", "S4a", "S5a"]),
    ({"Modality": "CT"}, ["S2a", "S3a"]),
    ({"Modality": "ct,sr"}, ["S2a", "S2b", "S3a"]),
    ({"SeriesNumber": "2"}, ["S2a"]),
    ({"SeriesNumber": "2\\3"}, ["S2a", "S2b"]),
    ({"SeriesNumber": "2.5"}, []),
    ({"StudyInstanceUID": "1.2.3.2"}, ["S2a", "S2b"]),
    ({"SeriesInstanceUID": "1.2.3.2.2,1.2.3.1.1"}, ["S1a", "S2b"]),
    ({"SeriesDescription": "ax*"}, ["S1a"]),
    ({"PerformedProcedureStepStartDate": "20200101-"}, ["S1a"]),
    ({"PerformedProcedureStepStartTime": "1016"}, ["S1a"]),
    ({"PatientName": "gómez*"}, ["S1a"]),
    ({"PatientName": "jose"}, []),
    ({"SOPInstanceUID": "1.2.3.2.1.1"}, ["S2a"]),
    ({"InstanceNumber": "7"}, ["S3a"]),
    # a series' other attributes are its first instance's (thickness 5)
    ({"SliceThickness": "5"}, ["S1a"]),
    ({"SliceThickness": "2.5"}, []),
]


@pytest.mark.parametrize(("filters", "expected"), SERIES_CASES)
def test_series_matching(
    store: Store, filters: dict[str, Any], expected: list[str]
) -> None:
    """Series filters, parent and child attributes included."""
    assert labels(store.query("series", filters), SERIES) == expected


INSTANCE_CASES: list[tuple[dict[str, Any], list[str]]] = [
    ({"SeriesInstanceUID": "1.2.3.1.1"}, ["S1a1", "S1a2", "S1a3"]),
    ({"StudyInstanceUID": "1.2.3.2"}, ["S2a1", "S2b1"]),
    ({"InstanceNumber": "2"}, ["S1a2"]),
    ({"InstanceNumber": ["2", "7"]}, ["S1a2", "S3a1"]),
    ({"SOPClassUID": SR}, ["S2b1"]),
    ({"SOPInstanceUID": "1.2.3.1.1.3,1.2.3.5.1.1"}, ["S1a3", "S5a1"]),
    ({"Rows": "512"}, ["S1a3"]),
    ({"Columns": "128", "Modality": "MR"}, ["S1a1", "S1a2", "S1a3", "S5a1"]),
    ({"SliceThickness": "2.5"}, ["S1a3"]),
    ({"SliceThickness": ["2.5", "5"]}, ["S1a1", "S1a2", "S1a3"]),
    ({"StudyDate": "-20201231", "Modality": "CT"}, ["S2a1"]),
    ({"PatientName": "*", "InstanceNumber": "3"}, ["S1a3"]),
    ({"ModalitiesInStudy": "SR"}, ["S2a1", "S2b1"]),
]


@pytest.mark.parametrize(("filters", "expected"), INSTANCE_CASES)
def test_instance_matching(
    store: Store, filters: dict[str, Any], expected: list[str]
) -> None:
    """Instance filters, by columns and by the stored DICOM JSON."""
    assert labels(store.query("instances", filters), SOP) == expected


def test_rows_carry_the_required_attributes_and_counts(store: Store) -> None:
    """Each level's rows: its required attributes, computed counts, parent UIDs."""
    (s2,) = store.query("studies", {"StudyInstanceUID": "1.2.3.2"})
    assert sorted(s2) == sorted(RETURNED["studies"])
    assert s2["00080061"] == {"vr": "CS", "Value": ["CT", "SR"]}
    assert s2["00201206"] == {"vr": "IS", "Value": [2]}
    assert s2["00201208"] == {"vr": "IS", "Value": [2]}
    assert s2["00100010"] == pn("Yamada^Tarou", "山田^太郎", "やまだ^たろう")
    assert s2["00080090"] == pn("O'Neil^Pat")
    assert s2["00080020"] == el("DA", "20201231")
    assert s2["00100030"] == {"vr": "DA"}  # no value: present and empty
    (s1,) = store.query("studies", {"PatientID": "PAT_1"})
    assert s1["00100030"] == el("DA", "19800101")
    assert s1["00100040"] == el("CS", "M")
    assert s1["00200010"] == el("SH", "S1")
    assert s1["00201208"] == el("IS", 3)
    series = list(store.query("series", {"StudyInstanceUID": "1.2.3.1"}))
    assert [sorted(r) for r in series] == [sorted(RETURNED["series"])]
    assert series[0]["00201209"] == el("IS", 3)
    assert series[0]["00400244"] == el("DA", "20200115")
    assert series[0]["00400245"] == el("TM", "101600")
    assert series[0][STUDY] == el("UI", "1.2.3.1")
    (i3,) = store.query("instances", {"SOPInstanceUID": "1.2.3.1.1.3"})
    assert sorted(i3) == sorted(RETURNED["instances"])
    assert i3[STUDY] == el("UI", "1.2.3.1") and i3[SERIES] == el("UI", "1.2.3.1.1")
    assert i3["00280010"] == el("US", 512)
    assert i3["00280011"] == el("US", 128)
    assert i3["00280100"] == el("US", 16)
    assert i3["00280008"] == el("IS", 1)
    assert i3["00200013"] == el("IS", 3)
    assert i3["00080016"] == el("UI", MR)


def test_include_any_stored_attribute(store: Store) -> None:
    """include: keywords, tags, private tags, sequences, comma lists, "all"."""
    (row,) = store.query(
        "instances",
        {"SOPInstanceUID": "1.2.3.1.1.3"},
        include=[
            "SliceThickness",
            "00091001,RequestAttributesSequence.RequestedProcedureID",
        ],
    )
    assert row["00180050"] == el("DS", 2.5)
    assert row["00091001"] == el("LO", "private one")
    assert row["00400275"]["Value"][0]["00401001"] == el("SH", "RP1")
    # at study level, from the study's first instance; absent: empty
    (study,) = store.query(
        "studies", {"PatientID": "PAT_1"}, include=["SliceThickness", "PatientAge"]
    )
    assert study["00180050"] == el("DS", 5)
    assert study["00101010"] == {"vr": "AS"}
    # a column of the level below comes from the first instance too
    (study,) = store.query("studies", {"PatientID": "PATX1"}, include=["Modality"])
    assert study["00080060"] == el("CS", "CT")
    series = {"SeriesInstanceUID": "1.2.3.1.1"}
    everything = list(store.query("instances", series, include="all"))
    assert [r["00180050"]["Value"] for r in everything] == [[5], [5], [2.5]]
    for r in everything:
        stored = store.dicom_json(r[SOP]["Value"][0])
        assert stored is not None
        assert all(r[k] == v for k, v in stored.items())
        assert list(r) == sorted(r)
    (all_study,) = store.query("studies", {"PatientID": "PAT_1"}, include="all")
    assert all_study["00101030"] == el("DS", 70)
    assert all_study["00201208"] == el("IS", 3)


def test_limit_and_offset(store: Store) -> None:
    """limit/offset page through the same order, in SQL or in Python."""
    every = labels(store.query("instances"), SOP)
    assert len(every) == 8
    for filters in (
        {},
        {"PatientName": "*a*"},
        {"00091001": "private*"},
        {"Rows": "*"},
    ):
        rows = labels(store.query("instances", filters), SOP)
        for offset in (0, 1, 4, 9, 20):
            for limit in (None, 0, 1, 3, 100):
                got = labels(
                    store.query("instances", filters, limit=limit, offset=offset), SOP
                )
                end = None if limit is None else offset + limit
                assert got == rows[offset:end], (filters, offset, limit)


def test_streaming_is_lazy_and_leaves_the_store_usable(db_url: str) -> None:
    """A partly read result holds no lock: the store writes and reads meanwhile."""
    with Store(db_url) as store:
        store.write_batch(_many(CHUNK * 2 + 7, "7"))
        stream = store.query("instances", {"PatientName": "many*"})
        first = next(stream)
        assert first[SOP]["Value"] == ["7.1.1.0"]
        assert store.write_batch(_many(3, "8")) == []
        assert len(list(store.query("studies"))) == 2
        rest = list(stream)
        assert len(rest) == CHUNK * 2 + 6
        many = {"PatientName": "many*"}
        again = store.query("instances", many, offset=CHUNK - 1, limit=3)
        assert [r[SOP]["Value"][0] for r in again] == [
            f"7.1.1.{n}" for n in (CHUNK - 1, CHUNK, CHUNK + 1)
        ]
        unread = store.query("instances")
        next(unread)
        unread.close()  # releases its connection at once
        assert store.stats()["instances"] == CHUNK * 2 + 10


def test_slower_path_across_chunks_of_many_series(db_url: str) -> None:
    """JSON filters and includes over more series than the decoded bases kept
    (each series' JSON is stored against a base of its own)."""
    records = []
    for series in range(80):
        for i in range(8):
            json = {
                "00080018": el("UI", f"6.1.{series}.{i}"),
                "00180050": el("DS", 1 + i % 2),
                "0020000D": el("UI", "6"),
                "0020000E": el("UI", f"6.1.{series}"),
                "00200011": el("IS", series),
                "00200013": el("IS", i),
            }
            name = lambda a, b, c: parse_image_id(wadors_image_id(ROOT, a, b, c, 1))  # noqa: E731
            records.append(build_instance(json, Source(f"/b/{series}/{i}", 1, 1), name))
    with Store(db_url) as store:
        assert store.write_batch(records) == []
        rows = list(
            store.query("instances", {"SliceThickness": "2"}, include=["00180050"])
        )
        assert len(rows) == 80 * 4
        assert {r["00180050"]["Value"][0] for r in rows} == {2}
        series = list(store.query("series", include=["SliceThickness"]))
        assert [r["00180050"]["Value"] for r in series] == [[1]] * 80


def test_values_cut_or_replaced_in_columns_come_from_the_json(db_url: str) -> None:
    """A search column holds text cut at 400 characters, U+FFFD for NUL: the
    row gives the stored element instead; the filter finds what was stored."""
    long_id, odd = "P" * 450, "nul\x00desc"
    json = {
        "00080018": el("UI", "4.1.1"),
        "00081030": el("LO", odd),
        "00100010": pn("Doe^Jane"),
        "00100020": el("LO", long_id),
        "0020000D": el("UI", "4"),
        "0020000E": el("UI", "4.1"),
    }
    name = lambda a, b, c: parse_image_id(wadors_image_id(ROOT, a, b, c, 1))  # noqa: E731
    with Store(db_url) as store:
        store.write_batch([build_instance(json, Source("/c/1", 1, 1), name)])
        (row,) = store.query("studies", {"PatientID": long_id[:400]})
        assert row["00100020"] == el("LO", long_id)
        assert row["00081030"] == el("LO", odd)
        assert row["00100010"] == pn("Doe^Jane")
        (row,) = store.query(
            "instances", {"StudyDescription": odd}, include=["PatientID"]
        )
        assert row["00100020"] == el("LO", long_id)


def _many(n: int, study: str) -> list[InstanceRecord]:
    """``n`` instances of one series, numbered 0..n-1 (sorted by UID alike)."""
    out = []
    for i in range(n):
        json = {
            "00080018": el("UI", f"{study}.1.1.{i}"),
            "00100010": pn(f"Many^{study}"),
            "0020000D": el("UI", study),
            "0020000E": el("UI", f"{study}.1"),
            "00200013": el("IS", i),
        }
        name = lambda a, b, c: parse_image_id(wadors_image_id(ROOT, a, b, c, 1))  # noqa: E731
        out.append(build_instance(json, Source(f"/m/{study}/{i}", 1, 1), name))
    return out


BAD: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("studies", {"PatientNam": "x"}, {}, "PatientNam"),
    ("studies", {"0010001G": "x"}, {}, "0010001G"),
    ("studies", {"": "x"}, {}, "attribute"),
    ("studies", {"StudyDate": "2020-01-01"}, {}, "2020"),
    ("studies", {"StudyDate": "20200231"}, {}, "20200231"),
    ("studies", {"StudyDate": "20201231-20200101"}, {}, "ends before"),
    ("studies", {"StudyDate": "2020*"}, {}, "wildcards"),
    ("studies", {"StudyDate": "-"}, {}, "range"),
    ("studies", {"StudyTime": "25"}, {}, "25"),
    ("studies", {"PatientBirthDate": "x"}, {}, "PatientBirthDate"),
    ("studies", {"AcquisitionDateTime": "2020x"}, {}, "AcquisitionDateTime"),
    ("studies", {"StudyInstanceUID": "1.2.*"}, {}, "1.2.*"),
    ("instances", {"InstanceNumber": "abc"}, {}, "abc"),
    ("studies", {"NumberOfStudyRelatedInstances": "3"}, {}, "computed"),
    ("studies", {"RequestAttributesSequence": "x"}, {}, "sequence"),
    ("studies", {"PixelData": "x"}, {}, "binary"),
    ("studies", {"PatientName": {"a": 1}}, {}, "PatientName"),
    ("studies", {"PatientName": []}, {}, "empty list"),
    ("studies", {}, {"include": ["NoSuchThing"]}, "NoSuchThing"),
    ("studies", {}, {"limit": -1}, "limit"),
    ("studies", {}, {"limit": "5"}, "limit"),
    ("studies", {}, {"offset": -1}, "offset"),
    ("study", {}, {}, "did you mean 'studies'"),
    ("instance", {}, {}, "did you mean 'instances'"),
    ("patients", {}, {}, "level"),
]


@pytest.mark.parametrize(("level", "filters", "options", "named"), BAD)
def test_bad_queries_raise_at_the_call_naming_the_fault(
    store: Store,
    level: str,
    filters: dict[str, Any],
    options: dict[str, Any],
    named: str,
) -> None:
    """A bad query raises QueryError when called (before any row is read)."""
    with pytest.raises(QueryError) as caught:
        store.query(level, filters, **options)  # type: ignore[arg-type]
    assert named in str(caught.value)


def test_dataset_is_the_stored_json_as_pydicom(store: Store) -> None:
    """Store.dataset: a pydicom Dataset of every stored element."""
    ds = store.dataset("1.2.3.1.1.3")
    assert ds is not None
    assert ds.SliceThickness == 2.5
    assert str(ds.PatientName) == "Gómez^José"
    assert ds.RequestAttributesSequence[0].ScheduledProcedureStepID == "SPS1"
    assert ds[0x00091001].value == "private one"
    assert store.dataset("9.9.9") is None


MEMORY_SCRIPT = textwrap.dedent(
    """
    import sys
    from metastore.store import Store

    def peak_kb():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])

    with Store(sys.argv[1]) as store:
        early = None
        n = 0
        for n, row in enumerate(store.query("instances", include=["PatientName"]), 1):
            if n == 2000:
                early = peak_kb()
        print(n, early, peak_kb())
    """
)


def test_memory_stays_flat_while_streaming(db_url: str) -> None:
    """Streaming 40,000 rows peaks no higher than after the first 2,000 (+8 MB)."""
    with Store(db_url) as store:
        store.write_batch(_many(1, "5"))
        with store.engine.begin() as conn:
            _clone_instances(conn, 40_000)
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, db_url],
        capture_output=True,
        text=True,
        check=True,
    )
    n, early, end = map(int, out.stdout.split())
    assert n == 40_001
    assert end - early < 8 * 1024, (early, end)


def _clone_instances(conn: Any, n: int) -> None:
    """Insert ``n`` more rows into ``instances``, copies of the first one
    (same series, source and DICOM JSON; only their UIDs differ)."""
    if conn.dialect.name == "sqlite":
        numbers = (
            "WITH RECURSIVE n(i) AS "
            "(SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :n) SELECT i FROM n"
        )
    else:
        numbers = "SELECT generate_series(1, :n) AS i"
    from sqlalchemy import text

    conn.execute(
        text(
            "INSERT INTO instances (sop_instance_uid, series_id, sop_class_uid, "
            "instance_number, number_of_frames, source_id, dicom_json, "
            "dicom_json_base_id) "
            "SELECT '9.' || CAST(i AS TEXT), x.series_id, x.sop_class_uid, i, 1, "
            "x.source_id, x.dicom_json, x.dicom_json_base_id "
            f"FROM ({numbers}) AS numbers, (SELECT * FROM instances LIMIT 1) AS x"
        ),
        {"n": n},
    )
    # rows inserted past the store's write path: recount as settle would;
    # their UIDs (9.N) sort after the stored ones, so each series' and
    # study's first_instance_id (the lowest-SOP instance) stays right
    conn.execute(text(RECOUNT))


#: Every series' ``instance_count`` counted again (revision 0006's UPDATE).
RECOUNT = (
    "UPDATE series SET instance_count = "
    "(SELECT count(*) FROM instances WHERE instances.series_id = series.id)"
)


def _rival(n: int, referring: str, study_id: str, step_date: str) -> InstanceRecord:
    """Instance ``1.2.3.9.1.n`` of one study and series, attributes of its own."""
    json = {
        "00080018": el("UI", f"1.2.3.9.1.{n}"),
        "00080060": el("CS", "CT"),
        "00080090": pn(referring),
        "0020000D": el("UI", "1.2.3.9"),
        "0020000E": el("UI", "1.2.3.9.1"),
        "00200010": el("SH", study_id),
        "00400244": el("DA", step_date),
    }
    name = lambda a, b, c: parse_image_id(wadors_image_id(ROOT, a, b, c, 1))  # noqa: E731
    return build_instance(json, Source(f"/rival/{n}", 1, 1), name)


def test_0003_columns_follow_the_lowest_sop_instance_uid(db_url: str) -> None:
    """The study and series columns of revision 0003 ((0008,0090)
    ReferringPhysicianName, (0020,0010) StudyID, (0040,0244)
    PerformedProcedureStepStartDate) come from the stored instance with the
    lowest SOP Instance UID, like the other study and series attributes,
    and are read back from the next one's stored JSON when it goes."""

    def shown(store: Store) -> tuple[Any, ...]:
        [study] = store.query("studies", {"StudyInstanceUID": "1.2.3.9"})
        [series] = store.query("series", {"SeriesInstanceUID": "1.2.3.9.1"})
        return (
            study["00080090"]["Value"][0]["Alphabetic"],
            study["00200010"]["Value"],
            series["00400244"]["Value"],
        )

    with Store(db_url) as store:
        assert store.write_batch([_rival(2, "Late^B", "B", "20200202")]) == []
        assert shown(store) == ("Late^B", ["B"], ["20200202"])
        # a lower SOP Instance UID written later takes over
        assert store.write_batch([_rival(1, "Early^A", "A", "20200101")]) == []
        assert shown(store) == ("Early^A", ["A"], ["20200101"])
        # a higher one changes nothing
        assert store.write_batch([_rival(3, "Last^C", "C", "20200303")]) == []
        assert shown(store) == ("Early^A", ["A"], ["20200101"])
        # the lowest goes: the next one's stored JSON decides
        store.prune(["/rival"], {"/rival/2", "/rival/3"})
        assert shown(store) == ("Late^B", ["B"], ["20200202"])


def _ordered(sop: str, institution: str, thickness: int) -> InstanceRecord:
    """Instance ``sop`` of study ``7.7`` (series: ``sop`` but its last part),
    with (0008,0080) InstitutionName and (0018,0050) SliceThickness, no
    columns, of its own; series ``7.7.1`` is CT, ``7.7.2`` MR."""
    series = sop.rpartition(".")[0]
    json = {
        "00080018": el("UI", sop),
        "00080060": el("CS", "CT" if series == "7.7.1" else "MR"),
        "00080080": el("LO", institution),
        "00180050": el("DS", thickness),
        "0020000D": el("UI", "7.7"),
        "0020000E": el("UI", series),
    }
    name = lambda a, b, c: parse_image_id(wadors_image_id(ROOT, a, b, c, 1))  # noqa: E731
    return build_instance(json, Source(f"/ordered/{sop}", 1, 1), name)


#: By code point ``7.7.1.10`` is the lowest SOP Instance UID of study ``7.7``
#: and of series ``7.7.1`` ("1" sorts before "9" and "2").
ORDERED = [("7.7.1.10", "Lowest", 1), ("7.7.1.9", "Other", 5), ("7.7.2.1", "MR", 3)]


def test_include_answers_do_not_depend_on_the_order_of_storing(db_url: str) -> None:
    """The same instances stored one batch each, lowest first and then (after
    a prune) highest first, answer every ``include=`` alike.

    A study's and a series' attributes that are not columns, and a lower
    level's columns named in ``include``, come from their instance with the
    lowest SOP Instance UID, the one their columns come from: not from the
    first stored, which highest first is ``7.7.2.1`` for the study (another
    series, another modality) and ``7.7.1.9`` for series ``7.7.1``, both
    with another InstitutionName and SliceThickness.
    """
    queries: list[tuple[Any, dict[str, Any], Any]] = [
        ("studies", {}, ["InstitutionName", "SliceThickness", "Modality"]),
        ("studies", {}, "all"),
        ("studies", {"InstitutionName": "Lowest"}, ["SliceThickness"]),
        ("series", {}, ["InstitutionName", "SliceThickness"]),
        ("series", {}, "all"),
        ("series", {"InstitutionName": "Lowest"}, ["SliceThickness"]),
    ]
    records = [_ordered(*instance) for instance in ORDERED]
    answers = []
    firsts = []
    with Store(db_url) as store:
        for order in (records, records[::-1]):
            for record in order:
                assert store.write_batch([record]) == []
            with store.engine.connect() as conn:
                first = conn.exec_driver_sql(
                    "SELECT sop_instance_uid FROM instances ORDER BY id LIMIT 1"
                )
                firsts.append(first.scalar_one())
            answers.append(
                [
                    list(store.query(level, filters, include=include))
                    for level, filters, include in queries
                ]
            )
            assert store.prune(["/ordered"], set()) == len(ORDERED)
    assert firsts == ["7.7.1.10", "7.7.2.1"]
    assert answers[0] == answers[1]
    studies, all_studies, lowest_studies, series, all_series, lowest_series = answers[0]
    [study] = studies
    assert study["00080080"] == el("LO", "Lowest")
    assert study["00180050"]["Value"] == [1]
    assert study["00080060"] == el("CS", "CT")
    assert all_studies[0]["00080080"] == el("LO", "Lowest")
    assert [s["0020000D"]["Value"] for s in lowest_studies] == [["7.7"]]
    found = {s["0020000E"]["Value"][0]: s["00080080"]["Value"] for s in series}
    assert found == {"7.7.1": ["Lowest"], "7.7.2": ["MR"]}
    assert {s["0020000E"]["Value"][0] for s in all_series} == {"7.7.1", "7.7.2"}
    assert [s["0020000E"]["Value"] for s in lowest_series] == [["7.7.1"]]
