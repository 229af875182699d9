"""Done criterion: index pydicom's test files, then `export` equals the oracle.

The oracle's pydicom case set comes from 46 of pydicom's test files.  They
are indexed twice through the ``metastore`` command, under the oracle's
DICOMweb root: once as the Part 10 files themselves, once as one DICOM JSON
file per instance (the cases' metadata).  Both exports must match
Cornerstone's answers under the contract of tests/test_parity.py (the
oracle's values, or the divergent contract where one of the four documented
divergences applies), on SQLite and PostgreSQL.

Two kinds of case are left out, and checked to be reported instead: the
``.dupN`` instances (test files that share a SOP Instance UID with an earlier
one; the oracle renamed them in the URL, metastore stores the first and
reports the others as duplicates) and the two chrSQEncoding files, which have
no UIDs at all (the oracle made some up; metastore reports them invalid).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import test_parity
from click.testing import CliRunner
from dicom_samples import sample_path
from oracle_fixtures import load_cases

from metastore.cli import cli
from metastore.modules.frames import number_of_frames

pytestmark = pytest.mark.oracle

SET = "pydicom_testdata"
ROOT = "http://localhost/dicomweb"
_DUP = re.compile(r"\.dup\d+$")
_UIDS = ("0020000D", "0020000E", "00080018")
_BULK_OVERLAY = "pixelData of a BulkDataURI overlay is not None"


def instance_url(image_id: str) -> str:
    """The instance part of a case imageId (no scheme, no frame)."""
    return image_id.removeprefix("wadors:").rsplit("/frames/", 1)[0]


def stored_cases() -> list[dict[str, Any]]:
    """The cases metastore stores: not a renamed duplicate, with all three UIDs."""
    return [
        case
        for case in load_cases(SET)
        if not _DUP.search(instance_url(case["imageId"]))
        and all(uid in case["metadata"] for uid in _UIDS)
    ]


def frames_past_the_oracle() -> set[str]:
    """imageIds of frames the oracle cases leave out, which metastore stores.

    The oracle made frames 1 to NumberOfFrames only; an instance without
    NumberOfFrames but with per-frame functional groups (liver_1frame.dcm:
    three items) has a frame per item (``metastore.modules.frames.number_of_frames``,
    as Cornerstone combines them), each an image.
    """
    extra = set()
    for case in stored_cases():
        base, _, frame = case["imageId"].rpartition("/frames/")
        if frame == "1":
            for n in range(2, number_of_frames(case["metadata"]) + 1):
                extra.add(f"{base}/frames/{n}")
    return extra - {case["imageId"] for case in load_cases(SET)}


def sources_in_case_order() -> list[str]:
    """Each case source once, in case order (the order duplicates resolve in)."""
    sources: list[str] = []
    for case in load_cases(SET):
        if case["source"] not in sources:
            sources.append(case["source"])
    return sources


def part10_folder(folder: Path) -> Path:
    """The cases' Part 10 files, named so that sorted order is case order."""
    folder.mkdir()
    for i, source in enumerate(sources_in_case_order()):
        name = source.split(":", 1)[1].rsplit("/", 1)[-1]
        (folder / f"{i:03d} {name}").write_bytes(sample_path(name).read_bytes())
    return folder


def json_folder(folder: Path) -> Path:
    """One DICOM JSON file per case instance, in case order."""
    folder.mkdir()
    seen: set[str] = set()
    for case in load_cases(SET):
        url = instance_url(case["imageId"])
        if url not in seen:
            seen.add(url)
            path = folder / f"{len(seen):03d}.json"
            path.write_text(json.dumps(case["metadata"]), encoding="utf-8")
    return folder


def index_and_export(
    folder: Path, db_url: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run `metastore index` then `metastore export`; return the report and answers."""
    runner = CliRunner()
    result = runner.invoke(
        cli, ["index", str(folder), "--wadors-root", ROOT, "--json", "--db", db_url]
    )
    assert result.exit_code == 1, result.output  # the chrSQEncoding files
    report = json.loads(result.stdout)
    result = runner.invoke(cli, ["export", "--db", db_url])
    assert result.exit_code == 0, result.output
    rows = (json.loads(line) for line in result.stdout.splitlines())
    return report, {row["imageId"]: row["modules"] for row in rows}


@pytest.mark.parametrize("form", ["part10", "json"])
def test_export_equals_the_oracle(
    form: str, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every stored image answers every module type as Cornerstone does."""
    make = part10_folder if form == "part10" else json_folder
    report, exported = index_and_export(make(tmp_path / form), db_url)

    wanted = {case["imageId"] for case in stored_cases()}
    assert set(exported) == wanted | frames_past_the_oracle()
    # The parity test's comparator and divergence rules, fed with the export.
    # JSON has no NaN: export writes null, so the oracle's NaNs read as None.
    monkeypatch.setattr(test_parity, "answers", lambda _set: exported)
    monkeypatch.setattr(
        test_parity, "load_expected", _nan_as_none(test_parity.load_expected)
    )
    problems = []
    for image_id in sorted(wanted):
        problems += test_parity.check_image(SET, image_id).problems
    if form == "part10":
        # Read from Part 10, overlay data is kept inline (metastore.dicomjson.convert's
        # DEFAULT_INLINE_TAGS), so those overlays carry their bits where the
        # cases, made with a BulkDataURI for them, cannot.
        inline = [p for p in problems if p.endswith(_BULK_OVERLAY)]
        problems = [p for p in problems if not p.endswith(_BULK_OVERLAY)]
        for problem in inline:
            for overlay in exported[problem.split()[0]]["overlayPlaneModule"][
                "overlays"
            ]:
                bits = overlay["pixelData"]
                assert len(bits) == overlay["rows"] * overlay["columns"]
                assert set(bits) <= {0, 1}
    assert not problems, "\n".join(problems[:30])

    duplicates = {case["imageId"] for case in load_cases(SET)} - wanted
    assert report["duplicates"] == len(
        {instance_url(i) for i in duplicates if _DUP.search(instance_url(i))}
    )
    invalid = sorted(e["reason"] for e in report["errors"] if e["kind"] == "invalid")
    assert invalid == ["missing StudyInstanceUID (0020,000D)"] * 2


def _nan_as_none(load: Any) -> Any:
    """Wrap ``load_expected`` so that NaN values read as None (JSON null)."""

    def load_without_nan(file_name: str) -> dict[str, Any]:
        return _replace_nan(load(file_name))

    return load_without_nan


def _replace_nan(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _replace_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_nan(v) for v in value]
    return value
