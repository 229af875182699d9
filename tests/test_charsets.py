"""Patient names in every character set pydicom supports survive indexing and search.

For each (0008,0005) SpecificCharacterSet term of ``pydicom.charset`` (ISO
2022 code extensions with their escape sequences included), a file whose
PatientName pydicom wrote in that charset is indexed; the name is then found
by an exact, a case-changed and a wildcard query, and ``patientModule``
answers the name exactly as pydicom decodes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dicom_samples import write_ct
from pydicom.charset import python_encoding
from pydicom.valuerep import PersonName
from stored import query_rows

from metastore import Store, index_paths, wadors_image_id

ROOT = "https://pacs/dicomweb"
LATIN = "Doe^John"
#: A name for each Python codec pydicom maps a term to.
NAMES = {
    "iso8859": "Doe^John",
    "shift_jis": "ﾔﾏﾀﾞ^ﾀﾛｳ",
    "latin_1": "Müller^Jürgen",
    "iso8859_2": "Dvořák^Antonín",
    "iso8859_3": "Ġużeppi^Ħabib",
    "iso8859_4": "Bērziņš^Jānis",
    "iso_ir_126": "Διονυσιος^Ελενη",
    "iso_ir_127": "قباني^لنزار",
    "iso_ir_138": "שרון^דבורה",
    "iso_ir_144": "Иванов^Пётр",
    "iso_ir_148": "Çelik^Şükrü",
    "iso_ir_166": "สมชาย^ใจดี",
    "iso2022_jp": "Yamada^Tarou=山田^太郎=やまだ^たろう",
    "euc_kr": "Hong^Gildong=洪^吉洞=홍^길동",
    "iso2022_jp_2": "Yamada^Tarou=山田^太郎=やまだ^たろう",
    "iso_ir_58": "Zhang^XiaoDong=张^小东",
    "UTF8": "Wang^XiaoDong=王^小東=Ваня",
    "GB18030": "Wang^XiaoDong=王^小东",
    "GBK": "Wang^XiaoDong=王^小东",
    "GB2312": "Zhang^XiaoDong=张^小东",
}


def charset_value(term: str) -> str | list[str]:
    """(0008,0005) for ``term``: code extensions come after the default G0 set."""
    if term in MULTI_BYTE_2022:
        return ["", term]
    return term


#: Terms pydicom 3.0 reads but cannot write a name in: the text it writes reads
#: back as mojibake or "?" (ISO 2022 GB2312/GBK need escape sequences pydicom
#: does not emit; IR 159 needs characters of JIS X 0212 only).
PYDICOM_CANNOT_WRITE = {
    "ISO 2022 58",
    "ISO 2022 GBK",
    "ISO 2022 IR 159",
    "ISO 2022 IR 58",
}
TERMS = sorted(set(python_encoding) - PYDICOM_CANNOT_WRITE)
#: ISO 2022 terms of multi-byte sets: they extend the default repertoire.
MULTI_BYTE_2022 = {
    "ISO 2022 IR 87", "ISO 2022 IR 159", "ISO 2022 IR 149", "ISO 2022 IR 58",
    "ISO 2022 58", "ISO 2022 GBK",
}  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """One CT per charset term: ``{term: (path, SOP Instance UID)}``."""
    root = tmp_path_factory.mktemp("charsets")
    out = {}
    for n, term in enumerate(TERMS, 1):
        path = write_ct(root / f"{n:02d}.dcm", n, study=n, patient_name="x")
        ds = pydicom.dcmread(path)
        ds.SpecificCharacterSet = charset_value(term)
        ds.PatientName = NAMES[python_encoding[term]]
        ds.save_as(path, enforce_file_format=True)
        out[term] = (path, str(ds.SOPInstanceUID))
    return out


@pytest.fixture(scope="module")
def decoded(files: dict[str, tuple[Path, str]]) -> dict[str, PersonName]:
    """The PatientName of each file as pydicom reads it back."""
    return {
        term: pydicom.dcmread(path).PatientName for term, (path, _) in files.items()
    }


@pytest.fixture
def store(db_url: str, files: dict[str, tuple[Path, str]]) -> Iterator[Store]:
    """A store holding every charset file (SQLite and PostgreSQL)."""
    with Store(db_url) as s:
        report = index_paths(s, [path for path, _ in files.values()], wadors_root=ROOT)
        assert report.ok and report.indexed == len(files)
        yield s


def text(name: PersonName) -> str:
    """The name as Part 10 text (``A=I=P``, trailing empty groups dropped)."""
    groups = [name.alphabetic, name.ideographic, name.phonetic]
    return "=".join(groups).rstrip("=")


def named(store: Store, pattern: str) -> list[dict[str, Any]]:
    """The instances ``pattern`` finds by (0010,0010) PatientName, with it."""
    return query_rows(
        store, "instances", {"PatientName": pattern}, include=["PatientName"]
    )


def test_pydicom_writes_every_name(decoded: dict[str, PersonName]) -> None:
    """The names round-trip through pydicom itself (else the test proves nothing)."""
    for term, name in decoded.items():
        assert text(name) == NAMES[python_encoding[term]], term


def test_every_name_is_found_and_answered(
    store: Store,
    files: dict[str, tuple[Path, str]],
    decoded: dict[str, PersonName],
) -> None:
    """Exact, case-changed and wildcard queries find it; patientModule decodes it."""
    for term in TERMS:
        name = text(decoded[term])
        _, sop_uid = files[term]
        # several terms share a name (Latin names in ISO_IR 6, 100, 2022...)
        same = {
            files[other][1]
            for other, pn in decoded.items()
            if text(pn).casefold() == name.casefold()
        }
        found = named(store, name)
        assert {row["SOPInstanceUID"] for row in found} == same
        assert {row["PatientName"] for row in found} == {name}
        for variant in (name.upper(), name.lower(), name.swapcase()):
            if variant.casefold() == name.casefold():
                hits = named(store, variant)
                assert {row["SOPInstanceUID"] for row in hits} == same, variant
        found = [row for row in found if row["SOPInstanceUID"] == sop_uid]
        # wildcards: a prefix, a suffix, one character, in any script
        for pattern in (
            name[:3] + "*",
            "*" + name[-2:],
            "?" + name[1:],
            name[:-1] + "?",
        ):
            matched = named(store, pattern)
            assert sop_uid in {row["SOPInstanceUID"] for row in matched}, pattern
        study, series = found[0]["StudyInstanceUID"], found[0]["SeriesInstanceUID"]
        modules = store.image_modules(wadors_image_id(ROOT, study, series, sop_uid, 1))
        assert modules is not None
        want = {"Alphabetic": decoded[term].alphabetic}
        if decoded[term].ideographic:
            want["Ideographic"] = decoded[term].ideographic
        if decoded[term].phonetic:
            want["Phonetic"] = decoded[term].phonetic
        assert modules["patientModule"]["patientName"] == want
