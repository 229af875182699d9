"""Reading one source: Part 10 headers, truncation, DICOM JSON, zips, imageIds."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from dicom_samples import (
    CT,
    EMRI,
    copy,
    dicom_json,
    junk,
    sample_path,
    truncated,
    write_json,
    zip_of,
)

from metastore.index.discovery import Entry, discover
from metastore.index.read import ReadCache, read_entry
from metastore.records import Outcome

ROOT = "http://localhost/dicomweb"
CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
CT_SERIES = "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"
CT_SOP = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
CT_URL = f"{ROOT}/studies/{CT_STUDY}/series/{CT_SERIES}/instances/{CT_SOP}"


def read(path: Path, root: str | None = None) -> list[Outcome]:
    """Read every source under ``path``."""
    zips = ReadCache()
    try:
        return [
            read_entry(entry, root, zips)
            for entry in discover([path])
            if isinstance(entry, Entry)
        ]
    finally:
        zips.close()


def read_one(path: Path, root: str | None = None) -> Outcome:
    """Read the single source at ``path``."""
    (outcome,) = read(path, root)
    return outcome


def test_part10_file_gives_one_record_with_searchable_attributes(
    tmp_path: Path,
) -> None:
    """CT_small.dcm becomes one instance with its UIDs and search attributes."""
    outcome = read_one(copy(CT, tmp_path / "ct.dcm"))
    assert outcome.status == "indexed"
    (instance,) = outcome.instances
    assert (
        instance.study_instance_uid,
        instance.series_instance_uid,
        instance.sop_instance_uid,
    ) == (CT_STUDY, CT_SERIES, CT_SOP)
    assert instance.patient_name == "CompressedSamples^CT1"
    assert instance.patient_id == "1CT1"
    assert instance.modality == "CT"
    assert instance.study_date == "20040119"
    assert instance.number_of_frames == 1
    assert instance.source.location == str(tmp_path / "ct.dcm")


def test_without_root_file_imageids_and_bulk_uris(tmp_path: Path) -> None:
    """Without a root, frames are wadouri file URIs; bulk data points into the file."""
    path = copy(CT, tmp_path / "a b" / "ct é.dcm")
    (instance,) = read_one(path).instances
    uri = path.as_uri()
    assert [i.image_id for i in instance.images] == [f"wadouri:{uri}?frame=1"]
    pixel = instance.dicom_json["7FE00010"]
    assert pixel == {"vr": "OW", "BulkDataURI": f"{uri}#bulkdata/7FE00010"}


def test_with_root_wadors_imageids_and_bulk_uris(tmp_path: Path) -> None:
    """Under a root, frames and bulk data use the WADO-RS instance URL."""
    (instance,) = read_one(copy(CT, tmp_path / "ct"), ROOT + "/").instances
    assert [i.image_id for i in instance.images] == [f"wadors:{CT_URL}/frames/1"]
    assert (
        instance.dicom_json["7FE00010"]["BulkDataURI"] == f"{CT_URL}/bulkdata/7FE00010"
    )
    assert instance.dicom_json["00020010"] == {
        "vr": "UI",
        "Value": ["1.2.840.10008.1.2.1"],
    }


def test_multiframe_gives_one_image_per_frame(tmp_path: Path) -> None:
    """An enhanced MR of 10 frames gives imageIds for frames 1 to 10."""
    (instance,) = read_one(copy(EMRI, tmp_path / "mr"), ROOT).instances
    assert instance.number_of_frames == 10
    assert [i.frame for i in instance.images] == list(range(1, 11))
    assert instance.images[9].image_id.endswith("/frames/10")


def test_part10_and_json_of_one_instance_answer_alike(tmp_path: Path) -> None:
    """Under one root, the Part 10 file and its DICOM JSON give the same images."""
    (from_file,) = read_one(copy(CT, tmp_path / "ct.dcm"), ROOT).instances
    path = write_json(tmp_path / "ct.json", dicom_json(CT))
    (from_json,) = read_one(path, ROOT).instances
    assert [i.image_id for i in from_file.images] == [
        i.image_id for i in from_json.images
    ]
    assert (
        from_file.images[0].modules["imagePlaneModule"]
        == (from_json.images[0].modules["imagePlaneModule"])
    )


def test_json_without_root_uses_its_own_uri_as_root(tmp_path: Path) -> None:
    """A DICOM JSON file without a root gets wadors imageIds under its file URI."""
    path = write_json(tmp_path / "meta data.json", dicom_json(CT))
    (instance,) = read_one(path).instances
    assert instance.images[0].image_id == (
        f"wadors:{path.as_uri()}/studies/{CT_STUDY}/series/{CT_SERIES}"
        f"/instances/{CT_SOP}/frames/1"
    )


def test_json_array_gives_every_instance_and_reports_invalid_ones(
    tmp_path: Path,
) -> None:
    """A WADO-RS metadata array is read item by item; a bad item is an error."""
    broken = dicom_json("MR_small.dcm")
    del broken["0020000E"]
    path = write_json(tmp_path / "series.json", [dicom_json(CT), broken, 7])
    outcome = read_one(path)
    assert outcome.status == "indexed"
    assert [i.sop_instance_uid for i in outcome.instances] == [CT_SOP]
    assert [(e.kind, e.reason) for e in outcome.errors] == [
        ("invalid", "instance 2: missing SeriesInstanceUID (0020,000E)"),
        ("invalid", "instance 3: not a DICOM JSON object"),
    ]


@pytest.mark.parametrize(
    "content",
    [b'{"name": "package", "version": "1"}', b"[1, 2, 3]", b"[]", b"{ not json"],
)
def test_json_that_is_not_dicom_is_skipped(tmp_path: Path, content: bytes) -> None:
    """JSON (or JSON-looking text) that is not DICOM JSON is skipped, not failed."""
    (tmp_path / "x.json").write_bytes(content)
    outcome = read_one(tmp_path / "x.json")
    assert (outcome.status, outcome.reason) == ("skipped", "not DICOM")


def test_broken_dicom_json_fails(tmp_path: Path) -> None:
    """Text that starts like DICOM JSON but does not parse is a failure."""
    text = write_json(tmp_path / "a.json", dicom_json(CT)).read_text()
    (tmp_path / "a.json").write_text(text[: len(text) // 2])
    outcome = read_one(tmp_path / "a.json")
    assert outcome.status == "failed"
    assert outcome.errors[0].kind == "unreadable"
    assert "invalid DICOM JSON" in outcome.errors[0].reason


def test_missing_uid_makes_the_instance_invalid(tmp_path: Path) -> None:
    """An instance without SOPInstanceUID is invalid, and the reason names the tag."""
    instance = dicom_json(CT)
    del instance["00080018"]
    outcome = read_one(write_json(tmp_path / "a.json", instance))
    assert outcome.status == "failed"
    (error,) = outcome.errors
    assert (error.kind, error.reason) == (
        "invalid",
        "missing SOPInstanceUID (0008,0018)",
    )


@pytest.mark.parametrize("keep", [140, 1000, 3000, 20000, 39000])
def test_truncated_part10_fails(tmp_path: Path, keep: int) -> None:
    """A Part 10 file cut in its header or its pixel data is failed, not indexed."""
    outcome = read_one(truncated(tmp_path / "cut", CT, keep))
    assert outcome.status == "failed"
    (error,) = outcome.errors
    assert error.kind == "unreadable"
    assert "truncated" in error.reason
    assert error.location == str(tmp_path / "cut")


def test_truncated_encapsulated_pixel_data_fails(tmp_path: Path) -> None:
    """Encapsulated pixel data that ends before its delimiter is truncation."""
    data = sample_path("JPEG2000.dcm").read_bytes()
    (tmp_path / "j2k").write_bytes(data[:-100])
    outcome = read_one(tmp_path / "j2k")
    assert outcome.status == "failed"
    assert "pixel data" in outcome.errors[0].reason


def test_complete_encapsulated_file_is_read(tmp_path: Path) -> None:
    """The fragment walk accepts a complete JPEG 2000 file."""
    assert read_one(copy("JPEG2000.dcm", tmp_path / "j2k")).status == "indexed"


@pytest.mark.parametrize(
    "name", ["rtstruct.dcm", "ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm"]
)
def test_preamble_less_datasets_are_read(tmp_path: Path, name: str) -> None:
    """Raw datasets without preamble (as pydicom reads them with force) are indexed."""
    outcome = read_one(copy(name, tmp_path / "raw"))
    assert outcome.status == "indexed", outcome.errors


@pytest.mark.parametrize(
    ("name", "reason"),
    [("DICOMDIR", "DICOMDIR"), ("README.txt", "not DICOM"), ("zipMR.gz", "not DICOM")],
)
def test_non_images_are_skipped(tmp_path: Path, name: str, reason: str) -> None:
    """DICOMDIRs and files that are not DICOM are skipped, with the reason."""
    outcome = read_one(copy(name, tmp_path / "x"))
    assert (outcome.status, outcome.reason, outcome.errors) == ("skipped", reason, [])


def test_empty_and_junk_files_are_skipped(tmp_path: Path) -> None:
    """A zero-byte file and random bytes are skipped as not DICOM."""
    (tmp_path / "empty").write_bytes(b"")
    junk(tmp_path / "junk")
    outcomes = read(tmp_path)
    assert [(o.status, o.reason) for o in outcomes] == [
        ("skipped", "empty"),
        ("skipped", "not DICOM"),
    ]


def test_zip_members_are_read_in_place(tmp_path: Path) -> None:
    """Members of a zip are read through the archive; locations name the member."""
    archive = zip_of(tmp_path / "a.zip", {"x/ct é.dcm": sample_path(CT)})
    outcome = read_one(archive)
    assert outcome.status == "indexed"
    (instance,) = outcome.instances
    assert instance.source.location == f"{archive}!/x/ct é.dcm"
    assert instance.images[0].image_id == (
        f"wadouri:{archive.as_uri()}!/x/ct%20%C3%A9.dcm?frame=1"
    )


def test_damaged_zip_member_fails_and_the_others_are_read(tmp_path: Path) -> None:
    """A member whose compressed data is damaged fails; its neighbours are read."""
    archive = zip_of(
        tmp_path / "a.zip",
        {"1.dcm": sample_path(CT), "2.dcm": sample_path("MR_small.dcm")},
    )
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("1.dcm")
    data = bytearray(archive.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + 10
    data[start : start + 200] = bytes(200)  # wreck the deflate stream
    archive.write_bytes(bytes(data))
    first, second = read(archive)
    assert first.status == "failed"
    assert first.errors[0].kind == "unreadable"
    assert second.status == "indexed"


def test_nested_zip_is_skipped(tmp_path: Path) -> None:
    """A zip inside a zip is not opened."""
    inner = zip_of(tmp_path / "inner.zip", {"ct.dcm": sample_path(CT)})
    outer = zip_of(tmp_path / "outer" / "outer.zip", {"inner.zip": inner})
    outcome = read_one(outer)
    assert (outcome.status, outcome.reason) == ("skipped", "nested zip archive")
