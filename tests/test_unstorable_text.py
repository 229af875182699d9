"""Text no database column holds: file names that are not UTF-8, NUL, lone surrogates.

POSIX file names are bytes (Python hands undecodable ones over as lone
surrogates), and DICOM JSON may carry ``\\u0000`` or an unpaired ``\\ud800``.
Neither UTF-8 nor PostgreSQL's text type can hold those, and before these
tests one such file or value failed the write of its whole batch and ended
the run with a traceback.  Each test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import random
import string
import subprocess
import sys
from pathlib import Path

import pytest
from dicom_samples import write_ct
from hypothesis import given
from hypothesis import strategies as st
from stored import query_rows
from test_store import make_instance

from metastore import Store, file_location, index_paths, parse_image_id
from metastore.errors import QueryError
from metastore.locations import location_of
from metastore.records import ErrorRecord, InstanceRecord
from metastore.store.encode import storable

linux_only = pytest.mark.skipif(
    sys.platform != "linux", reason="needs file names that are arbitrary bytes"
)


def _bad_name(folder: Path, name: bytes) -> Path:
    """A path under ``folder`` whose last part is the bytes ``name``."""
    return Path(os.fsdecode(os.path.join(os.fsencode(folder), name)))


# -- location_of ------------------------------------------------------------


def test_a_utf8_path_is_its_own_location() -> None:
    assert location_of("/data/科室 ü/ct?1#%.dcm") == "/data/科室 ü/ct?1#%.dcm"


def test_undecodable_bytes_are_escaped_as_hex() -> None:
    path = os.fsdecode(b"/data/M\xfcller.dcm")  # Latin-1, not UTF-8
    location = location_of(path)
    assert location == "/data/M\ufffdFCller.dcm"
    assert location.encode("utf-8")  # printable, storable


# Characters that matter to the escape: the escape character itself, what
# follows it in an escape, and lone surrogates of both kinds.
_ALPHABET = st.sampled_from(
    ["\ufffd", "F", "C", "u", "0", "D", "a", "/", "\udcfc", "\udc80", "\ud800"]
)


@given(st.lists(_ALPHABET, max_size=8), st.lists(_ALPHABET, max_size=8))
def test_distinct_paths_keep_distinct_locations(a: list[str], b: list[str]) -> None:
    one, other = "".join(a), "".join(b)
    if one != other:
        assert location_of(one) != location_of(other)
    assert storable(location_of(one)) == location_of(one)


# -- indexing ---------------------------------------------------------------


@linux_only
def test_a_file_name_that_is_not_utf8_is_indexed(db_url: str, tmp_path: Path) -> None:
    """Indexed with the others, found unchanged on a rerun, pruned when gone."""
    root = tmp_path / "archive"
    good = write_ct(root / "good.dcm", 1)
    bad = write_ct(_bad_name(root, b"M\xfcller \xff.dcm"), 2)
    with Store(db_url) as store:
        report = index_paths(store, [root], workers=1)
        assert (report.indexed, report.failed) == (2, 0)
        image_ids = [image_id for image_id, _ in store.export()]
        assert len(image_ids) == 2
        # the imageId still leads back to the very file
        paths = {file_location(parse_image_id(i))[0] for i in image_ids}
        assert paths == {good, bad}

        again = index_paths(store, [root], workers=1)
        assert (again.unchanged, again.indexed) == (2, 0)

        bad.unlink()
        pruned = index_paths(store, [root], workers=1, prune=True)
        assert pruned.unchanged == 1
        assert [file_location(i)[0] for i, _ in store.export()] == [good]


@linux_only
def test_a_folder_named_in_latin1_is_a_root_for_prune(
    db_url: str, tmp_path: Path
) -> None:
    """The roots given to known_sources and prune are escaped like locations."""
    root = _bad_name(tmp_path, b"\xc9tude")
    write_ct(root / "a.dcm", 1)
    gone = write_ct(root / "b.dcm", 2)
    with Store(db_url) as store:
        assert index_paths(store, [root], workers=1).indexed == 2
        assert index_paths(store, [root], workers=1).unchanged == 2
        gone.unlink()
        index_paths(store, [root], workers=1, prune=True)
        assert store.stats()["instances"] == 1


def _instance(sop: str, patient_id: str, description: str) -> dict[str, object]:
    return {
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
        "00080018": {"vr": "UI", "Value": [sop]},
        "0020000D": {"vr": "UI", "Value": [f"1.2.826.0.1.{sop[6]}\u0000"]},
        "0020000E": {"vr": "UI", "Value": [f"1.2.826.0.1.9.{sop[6]}"]},
        "00100020": {"vr": "LO", "Value": [patient_id]},
        "00081030": {"vr": "LO", "Value": [description]},
        "00280010": {"vr": "US", "Value": [4]},
        "00280011": {"vr": "US", "Value": [4]},
    }


def test_nul_and_lone_surrogates_in_dicom_json(db_url: str, tmp_path: Path) -> None:
    """Stored with the valid instances of the same batch; modules keep the text.

    UI padding (a trailing NUL) is stripped from the stored UIDs and the
    imageIds; the search attributes get U+FFFD; the module values, stored as
    bytes, answer exactly what the DICOM JSON said.
    """
    (tmp_path / "a.json").write_text(json.dumps([_instance("1.2.3.1", "ok", "x")]))
    odd = [_instance("1.2.3.2\u0000", "nul\u0000id", "lone \ud800 half")]
    # json.dumps keeps the lone surrogate as an escape, as a server would send it
    (tmp_path / "b.json").write_text(json.dumps(odd))
    with Store(db_url) as store:
        report = index_paths(store, [tmp_path], workers=1)
        assert (report.indexed, report.failed) == (2, 0)
        exported = dict(store.export())
        ids = sorted(exported)
        assert all("\x00" not in i for i in ids)
        assert ids[1].startswith("wadors:file://")
        assert "/studies/1.2.826.0.1.2/series/1.2.826.0.1.9.2/" in ids[1]
        assert ids[1].endswith("/instances/1.2.3.2/frames/1")
        patient = exported[ids[1]]["patientModule"]
        assert patient["patientID"] == "nul\u0000id"
        study = exported[ids[1]]["generalStudyModule"]
        assert study["studyDescription"] == "lone \ud800 half"
        found = query_rows(store, "instances", {"PatientID": "nul\ufffdid"})
        assert [row["SOPInstanceUID"] for row in found] == ["1.2.3.2"]


def test_export_prints_what_orjson_refuses(db_url: str, tmp_path: Path) -> None:
    """``metastore export`` and ``get`` write lone surrogates as JSON escapes."""
    odd = [_instance("1.2.3.2", "lone \udc00", "big")]
    (tmp_path / "b.json").write_text(json.dumps(odd))
    with Store(db_url) as store:
        index_paths(store, [tmp_path], workers=1)
        (image_id,) = [i for i, _ in store.export()]
    run = [sys.executable, "-m", "metastore"]
    out = subprocess.run(
        [*run, "export", "--db", db_url], capture_output=True, check=True
    )
    (line,) = out.stdout.splitlines()
    row = json.loads(line)
    assert row["imageId"] == image_id
    assert row["modules"]["patientModule"]["patientID"] == "lone \udc00"
    got = subprocess.run(
        [*run, "get", "--db", db_url, "patientModule", image_id],
        capture_output=True,
        check=True,
    )
    assert json.loads(got.stdout)["patientID"] == "lone \udc00"


def test_identifiers_with_nul_make_only_that_instance_invalid(db_url: str) -> None:
    """A UID with a NUL inside (not padding) is refused, its batch stored."""

    def record(sop: str, location: str) -> InstanceRecord:
        return make_instance(location, sop, patient_id="p\x00")

    with Store(db_url) as store:
        errors = store.write_batch(
            [record("1.2.3.4.5", "/a.dcm"), record("1.2\x003", "/b.dcm")],
            [ErrorRecord("/c\udcff.dcm", "unreadable", "bad \x00 reason")],
        )
        assert [(e.location, e.kind) for e in errors] == [("/b.dcm", "invalid")]
        assert "sop_instance_uid holds a NUL" in errors[0].reason
        assert store.stats()["instances"] == 1
        stored = [(e.location, e.kind, e.reason) for e in store.errors()]
        assert stored[0] == ("/c\ufffd.dcm", "unreadable", "bad \ufffd reason")
        assert stored[1][:2] == ("/b.dcm", "invalid")


def test_a_modality_longer_than_its_column_is_cut(db_url: str, tmp_path: Path) -> None:
    """A non-conformant 40-character Modality is searchable by its first 16."""
    instance = _instance("1.2.3.2", "p", "d")
    instance["00080060"] = {"vr": "CS", "Value": ["A" * 40]}
    (tmp_path / "b.json").write_text(json.dumps([instance]))
    with Store(db_url) as store:
        assert index_paths(store, [tmp_path], workers=1).indexed == 1
        (row,) = query_rows(store, "series", {"Modality": "A" * 16})
        # the row gives the stored element, not the cut column (docs/query.md)
        assert row["Modality"] == instance["00080060"]["Value"][0]
        ((_, modules),) = store.export()
        assert modules["generalSeriesModule"]["modality"] == "A" * 40


def test_a_source_the_database_refuses_fails_alone(db_url: str, tmp_path: Path) -> None:
    """The rest of its batch is stored; it is reported and the run goes on.

    A location of 3,000 bytes is fine for SQLite but more than a PostgreSQL
    B-tree entry holds (the unique index on ``sources.location``): the batch
    is then written again source by source.
    """
    good = write_ct(tmp_path / "a" / "good.dcm", 1)
    deep = tmp_path / "b"
    letters = string.ascii_letters + string.digits
    for n in range(15):  # incompressible: index entries are not compressed then
        deep /= "".join(random.Random(n).choices(letters, k=200))
    write_ct(deep / "deep.dcm", 2)
    write_ct(tmp_path / "c" / "also good.dcm", 3)
    with Store(db_url) as store:
        report = index_paths(store, [tmp_path], workers=1)
        if store.engine.dialect.name == "sqlite":
            assert (report.indexed, report.failed) == (3, 0)
            return
        assert (report.indexed, report.failed, report.instances) == (2, 1, 2)
        (error,) = report.errors
        assert error.kind == "invalid"
        assert "the database refused it" in error.reason
        assert "index row size" in error.reason
        assert store.stats()["instances"] == 2
        assert good.as_posix() in {e.location for e in store.errors()} | {
            str(file_location(i)[0]) for i, _ in store.export()
        }
        (stored,) = store.errors()
        assert stored.location.endswith("...")
        assert index_paths(store, [tmp_path], workers=1).unchanged == 2


def test_search_attributes_past_an_index_entry_are_cut(
    db_url: str, tmp_path: Path
) -> None:
    """An 8,000-character Patient ID is stored (its first 400 for search)."""
    long_id = "".join(random.Random(7).choices(string.ascii_letters, k=8000))
    instance = _instance("1.2.3.2", long_id, long_id)
    instance["00100010"] = {"vr": "PN", "Value": [{"Alphabetic": long_id}]}
    (tmp_path / "b.json").write_text(json.dumps([instance]))
    with Store(db_url) as store:
        assert index_paths(store, [tmp_path], workers=1).indexed == 1
        (row,) = query_rows(store, "studies", {"PatientID": long_id[:400]})
        # the row gives the stored elements, not the cut columns (docs/query.md)
        assert (row["PatientID"], row["PatientName"]) == (long_id, long_id)
        ((_, modules),) = store.export()
        assert modules["patientModule"]["patientID"] == long_id


def test_query_filters_with_nul_or_surrogates_match_what_was_stored(
    db_url: str, tmp_path: Path
) -> None:
    """A filter is data on both backends, whatever its characters."""
    odd = [_instance("1.2.3.2", "nul\u0000id", "d")]
    (tmp_path / "b.json").write_text(json.dumps(odd))
    with Store(db_url) as store:
        index_paths(store, [tmp_path], workers=1)
        assert len(query_rows(store, "studies", {"PatientID": "nul\x00id"})) == 1
        assert len(query_rows(store, "studies", {"PatientID": "NUL\x00*"})) == 1
        for text in ("a\x00b", "a\udcffb", "\ud800*"):
            both = {"PatientName": text, "SeriesDescription": text}
            assert query_rows(store, "series", both) == []
            uid = {"StudyInstanceUID": text}
            if "*" in text:  # a wildcard in a UID is refused (docs/query.md)
                with pytest.raises(QueryError):
                    query_rows(store, "instances", uid)
            else:
                assert query_rows(store, "instances", uid) == []


def test_lookups_by_unstorable_identifiers_find_nothing(db_url: str) -> None:
    """The provider and the store answer "nothing", never a driver error."""
    from metastore import DatabaseProvider

    with Store(db_url) as store, DatabaseProvider(store) as provider:
        for text in ("wadors:x\x00/frames/1", "wadors:\udcff/frames/1"):
            assert provider.get("imagePlaneModule", text) is None
            assert store.image_modules(text) is None
        for uid in ("1.2\x00", "1.2\ud800"):
            assert provider.load_series(uid) == []
            assert store.dicom_json(uid) is None
