"""Small sample archives for the indexer and CLI tests, built from pydicom's files.

Everything is written under a test's ``tmp_path``: copies of pydicom's test
files, CT instances with fresh UIDs, zips, DICOM JSON and junk.  Plain
functions (not fixtures) so each test says what it builds.
"""

from __future__ import annotations

import json
import random
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pydicom
from pydicom.data import get_charset_files, get_testdata_file, get_testdata_files

#: pydicom's CT_small.dcm (explicit VR little endian, one frame, 39206 bytes).
CT = "CT_small.dcm"
#: An enhanced MR of 10 frames (from the pydicom-data package).
EMRI = "emri_small.dcm"


def sample_path(name: str) -> Path:
    """The path of one of pydicom's test files (charset files included)."""
    found = get_testdata_file(name)
    if found is None:
        hits = [f for f in get_charset_files(f"**/{name}") if Path(f).name == name]
        hits += [f for f in get_testdata_files(f"**/{name}") if Path(f).name == name]
        found = sorted(hits)[0] if hits else None
    if found is None:
        raise LookupError(f"pydicom test file {name} not found")
    return Path(str(found))


def copy(name: str, dest: Path) -> Path:
    """Copy a pydicom test file to ``dest`` (a file path); return ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sample_path(name), dest)
    return dest


def write_ct(
    dest: Path,
    n: int,
    *,
    patient_name: str = "Doe^Jane",
    study: int = 1,
    series: int = 1,
    modality: str = "CT",
    study_date: str = "20200115",
) -> Path:
    """Write CT_small.dcm with UIDs of its own (instance ``n`` of a series)."""
    ds = pydicom.dcmread(sample_path(CT))
    root = "1.2.826.0.1.3680043.8.498.77"
    ds.StudyInstanceUID = f"{root}.{study}"
    ds.SeriesInstanceUID = f"{root}.{study}.{series}"
    ds.SOPInstanceUID = f"{root}.{study}.{series}.{n}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientName = patient_name
    ds.Modality = modality
    ds.StudyDate = study_date
    ds.InstanceNumber = n
    dest.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dest, enforce_file_format=True)
    return dest


def dicom_json(name: str = CT) -> dict[str, Any]:
    """The DICOM JSON of a pydicom test file, as a DICOMweb server gives it."""
    ds = pydicom.dcmread(sample_path(name), stop_before_pixels=True)
    instance: dict[str, Any] = ds.to_json_dict(
        bulk_data_threshold=1024, bulk_data_element_handler=lambda e: "http://x/bulk"
    )
    instance["00020010"] = {"vr": "UI", "Value": [str(ds.file_meta.TransferSyntaxUID)]}
    return instance


def write_json(dest: Path, document: Any) -> Path:
    """Write a JSON document (an instance object or a WADO-RS metadata array)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(document), encoding="utf-8")
    return dest


def junk(dest: Path, size: int = 3000, seed: int = 7) -> Path:
    """Write ``size`` bytes of deterministic random junk."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(random.Random(seed).randbytes(size))
    return dest


def truncated(dest: Path, name: str = CT, keep: int = 20000) -> Path:
    """Write the first ``keep`` bytes of a test file (cut inside its pixel data)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(sample_path(name).read_bytes()[:keep])
    return dest


def zip_of(dest: Path, members: dict[str, bytes | Path]) -> Path:
    """Write a deflated zip archive of ``{member name: bytes or file}``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            data = content.read_bytes() if isinstance(content, Path) else content
            zf.writestr(name, data)
    return dest


def mixed_archive(root: Path) -> Path:
    """A folder with every kind of source; see the counts in :data:`MIXED`."""
    write_ct(root / "ct" / "one.dcm", 1)
    write_ct(root / "ct" / "two.dcm", 2)
    copy(EMRI, root / "mr" / "enhanced")  # no suffix: recognised by content
    copy("MR_small.dcm", root / "sub dir é" / "mr small.dcm")
    write_json(root / "json" / "series.json", [dicom_json("MR2_UNCR.dcm")])
    copy("DICOMDIR", root / "DICOMDIR")
    (root / "README.txt").write_text("not DICOM\n")
    (root / "empty.dcm").write_bytes(b"")
    junk(root / "junk.bin")
    truncated(root / "cut.dcm")
    zip_of(
        root / "more.zip",
        {"a/rt.dcm": sample_path("rtdose.dcm"), "a/notes.txt": b"hello", "b/": b""},
    )
    return root


#: What indexing :func:`mixed_archive` gives.
MIXED = {
    "files_seen": 12,  # the zip's folder entry is not a source
    "indexed": 6,  # two CTs, the enhanced MR, MR_small, the JSON file, rtdose
    "skipped": 5,  # DICOMDIR, README, empty, junk, notes.txt
    "failed": 1,  # cut.dcm
    "images": 1 + 1 + 10 + 1 + 1 + 15,
}
