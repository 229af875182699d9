"""``metastore.keywords``: pydicom's data dictionary, without importing pydicom.

Its lookups read pydicom's tables as data until ``pydicom.datadict`` is
loaded, then call datadict itself.  Both ways must answer alike: every
standard entry, the repeating groups (``50xx``, ``60xx``, ``7Fxx``...) at
several groups, private tags and unknown ones are compared with
``pydicom.datadict``.  The first case runs in a fresh interpreter, so that
the data path is really taken (this test process has pydicom loaded).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pydicom import datadict
from pydicom._dicom_dict import DicomDictionary, RepeatersDictionary

import metastore.keywords as kw

ROOT = Path(__file__).resolve().parent.parent


def _probe_tags() -> list[int]:
    """Standard tags, every repeater at four groups, private and unknown tags."""
    tags = list(DicomDictionary)
    for mask in RepeatersDictionary:
        for digit in "02EF":
            tags.append(int(mask.replace("x", digit), 16))
    tags += [0x00091010, 0x00290010, 0x7FE10010, 0x60010010]  # private
    tags += [0x00080001, 0x12340000, 0xFFFFFFFF, 0x00000000]  # odd ones
    return tags


def test_without_pydicom_answers_as_datadict() -> None:
    """A fresh process (pydicom never imported) gives datadict's answers."""
    tags = _probe_tags()
    keywords = sorted({entry[4] for entry in DicomDictionary.values()})
    keywords += ["NoSuchKeyword", "patientname", ""]
    code = (
        "import json, sys\n"
        "import metastore.keywords as kw\n"
        "tags, words = json.load(sys.stdin)\n"
        "first = [kw.keyword_of(f'{t:08X}') for t in tags]\n"
        "again = [kw.keyword_of(f'{t:08X}') for t in tags]  # memoised now\n"
        "assert again == first, 'memoised keywords differ'\n"
        "out = [first,\n"
        "       [kw.dictionary_vr(t) for t in tags],\n"
        "       [kw.tag_for_keyword(w) for w in words],\n"
        "       sorted(m for m in sys.modules if m.split('.')[0] == 'pydicom')]\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps([tags, keywords]),
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    names, vrs, numbers, loaded = json.loads(result.stdout)
    assert loaded == []  # the data path, not pydicom's package
    assert names == [datadict.keyword_for_tag(t) for t in tags]
    expected_vrs = []
    for t in tags:
        try:
            expected_vrs.append(datadict.dictionary_VR(t))
        except KeyError:
            expected_vrs.append(None)
    assert vrs == expected_vrs
    assert numbers == [datadict.tag_for_keyword(w) for w in keywords]
    # the comparison is not vacuous: repeaters and unknown tags were met
    assert "OverlayRows" in names and "" in names and None in vrs


def test_with_pydicom_loaded_uses_datadict() -> None:
    """Once pydicom is loaded, an entry a program adds is found too."""
    tag = 0x00FE0001  # a public group PS3.6 does not use
    assert kw.keyword_of("00FE0001") == ""
    datadict.add_dict_entry(tag, "LO", "MetastoreProbe", "Probe")
    try:
        assert kw.tag_for_keyword("MetastoreProbe") == tag
        assert kw.keyword_of("00FE0001") == "MetastoreProbe"
        assert kw.dictionary_vr(tag) == "LO"
    finally:
        del datadict.DicomDictionary[tag]
        del datadict.keyword_dict["MetastoreProbe"]
    assert kw.keyword_of("00FE0001") == ""


def test_tag_of_spellings() -> None:
    """Keywords and the three tag spellings give the DICOM JSON key."""
    for name in (
        "PatientName",
        "00100010",
        "0010,0010",
        "(0010,0010)",
        " PatientName ",
    ):
        assert kw.tag_of(name) == "00100010"
    assert kw.tag_of("(0029,1010)") == "00291010"
