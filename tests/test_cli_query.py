"""`metastore query` as a skin: arguments to ``Store.query``, rows to output.

``Store.query`` is replaced by a fake in these tests ONLY (it returns fixed
DICOM JSON rows and records its arguments), so they check what the command
does: how ATTR=VALUE, the aliases, --include, --fuzzy, --limit and --offset
reach the library, and how rows are written (JSON Lines, table, CSV, and
imageIds on instance rows).  The real query layer's behaviour (matching
rules, levels, errors) is tested in its own tests.  The database and
``Store.image_ids`` are real, on both backends.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from click.testing import CliRunner, Result
from dicom_samples import CT, EMRI, copy, sample_path

from metastore.cli import cli
from metastore.store import Store

ROOT = "http://localhost/dicomweb"
MR = pydicom.dcmread(sample_path(EMRI), stop_before_pixels=True)

STUDY_ROW = {
    "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
    "00080061": {"vr": "CS", "Value": ["CT", "PT"]},
    "00201206": {"vr": "IS", "Value": [2]},
    "00081030": {"vr": "LO"},
}
INSTANCE_ROW = {
    "0020000D": {"vr": "UI", "Value": [MR.StudyInstanceUID]},
    "0020000E": {"vr": "UI", "Value": [MR.SeriesInstanceUID]},
    "00080018": {"vr": "UI", "Value": [MR.SOPInstanceUID]},
    "00180050": {"vr": "DS", "Value": [2.5]},
}


class FakeQuery:
    """A stand-in for ``Store.query``: fixed rows, and the calls it got.

    An instance, not a function, so it is not bound: no ``self`` store.
    """

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.calls: list[dict[str, Any]] = []

    def __call__(
        self,
        level: str,
        filters: Any = None,
        *,
        include: Any = (),
        limit: int | None = None,
        offset: int = 0,
        fuzzy: bool = False,
    ) -> Iterator[dict[str, Any]]:
        self.calls.append(
            {
                "level": level,
                "filters": filters,
                "include": include,
                "limit": limit,
                "offset": offset,
                "fuzzy": fuzzy,
            }
        )
        yield from self.rows


@pytest.fixture
def indexed(db_url: str, tmp_path: Path) -> str:
    """A database holding CT_small and the 10-frame MR."""
    copy(CT, tmp_path / "src" / "ct.dcm")
    copy(EMRI, tmp_path / "src" / "mr.dcm")
    args = ["index", str(tmp_path / "src"), "--wadors-root", ROOT, "--db", db_url]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return db_url


def fake(monkeypatch: pytest.MonkeyPatch, *rows: dict[str, Any]) -> FakeQuery:
    stand_in = FakeQuery(list(rows))
    monkeypatch.setattr(Store, "query", stand_in, raising=False)
    return stand_in


def run(db_url: str, *args: str) -> Result:
    return CliRunner().invoke(
        cli, ["query", *args, "--db", db_url], catch_exceptions=False
    )


@pytest.mark.parametrize(
    ("args", "level", "filters"),
    [
        (["studies"], "studies", None),
        (["studies", "PatientName=doe*"], "studies", {"PatientName": "doe*"}),
        (["series", "00100010=Doe^J*"], "series", {"00100010": "Doe^J*"}),
        (["studies", "StudyDate=2020-"], "studies", {"StudyDate": "2020-"}),
        (["studies", "PatientID="], "studies", {"PatientID": ""}),
        (["studies", "X=a=b"], "studies", {"X": "a=b"}),
        (
            ["studies", "Modality=CT", "Modality=PT"],
            "studies",
            {"Modality": ["CT", "PT"]},
        ),
        (
            ["studies", "--modality", "CT", "--modality", "PT"],
            "studies",
            {"ModalitiesInStudy": ["CT", "PT"]},
        ),
        (["series", "--modality", "MR"], "series", {"Modality": "MR"}),
        (
            ["instances", "--patient-id", "P1", "--patient-name", "doe*"],
            "instances",
            {"PatientID": "P1", "PatientName": "doe*"},
        ),
        (
            ["studies", "--accession", "A1", "--description", "head*"],
            "studies",
            {"AccessionNumber": "A1", "StudyDescription": "head*"},
        ),
        (["series", "--description", "ax*"], "series", {"SeriesDescription": "ax*"}),
        (
            ["studies", "--date", "20200101-20201231"],
            "studies",
            {"StudyDate": "20200101-20201231"},
        ),
        (
            ["studies", "--date-from", "20200101", "--date-to", "20201231"],
            "studies",
            {"StudyDate": "20200101-20201231"},
        ),
        (["studies", "--date-to", "20201231"], "studies", {"StudyDate": "-20201231"}),
        (
            ["studies", "--patient-id", "P1", "PatientID=P2"],
            "studies",
            {"PatientID": ["P2", "P1"]},
        ),
    ],
)
def test_filters_reach_the_library(
    indexed: str,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    level: str,
    filters: Any,
) -> None:
    """ATTR=VALUE (keyword or tag) and the aliases become Store.query filters;
    a repeated ATTR or option is a list (any of)."""
    stand_in = fake(monkeypatch)
    result = run(indexed, *args)
    assert result.exit_code == 0, result.output
    assert stand_in.calls == [
        {
            "level": level,
            "filters": filters,
            "include": (),
            "limit": None,
            "offset": 0,
            "fuzzy": False,
        }
    ]


def test_include_fuzzy_limit_offset_reach_the_library(
    indexed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--include (repeated), --fuzzy, --limit and --offset are passed on."""
    stand_in = fake(monkeypatch)
    args = ["--include", "SliceThickness", "--include", "00291010", "--fuzzy"]
    result = run(indexed, "series", *args, "--limit", "5", "--offset", "10")
    assert result.exit_code == 0, result.output
    call = stand_in.calls[0]
    assert call["include"] == ("SliceThickness", "00291010")
    assert (call["fuzzy"], call["limit"], call["offset"]) == (True, 5, 10)
    run(indexed, "series", "--include", "all")
    assert stand_in.calls[1]["include"] == "all"


@pytest.mark.parametrize("bad", ["PatientName", "=doe", " =x"])
def test_bad_attr_value_is_a_usage_error(
    indexed: str, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    """An argument that is not ATTR=VALUE: exit 2 naming it; no query made."""
    stand_in = fake(monkeypatch)
    result = run(indexed, "studies", bad)
    assert result.exit_code == 2
    assert repr(bad) in result.stderr and "ATTR=VALUE" in result.stderr
    assert stand_in.calls == []


def test_query_error_is_one_line(indexed: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A QueryError from the library is one Error: line and exit 2."""
    from metastore.errors import QueryError

    def refuse(store: Store, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        raise QueryError("unknown attribute 'PatientNam'")

    monkeypatch.setattr(Store, "query", refuse, raising=False)
    result = run(indexed, "studies", "PatientNam=x")
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: unknown attribute 'PatientNam'"


def test_jsonl_rows_are_keyword_rows(
    indexed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JSON Lines: keywords, PN as a DICOM string, numbers, lists, the UID first."""
    fake(monkeypatch, STUDY_ROW, STUDY_ROW)
    result = run(indexed, "studies", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows == 2 * [
        {
            "StudyInstanceUID": "1.2.3",
            "PatientName": "Doe^Jane",
            "ModalitiesInStudy": ["CT", "PT"],
            "NumberOfStudyRelatedSeries": 2,
            "StudyDescription": None,
        }
    ]
    assert next(iter(rows[0])) == "StudyInstanceUID"


def test_level_uids_always_present(
    indexed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row without one of the level's UIDs still has the key (null)."""
    fake(monkeypatch, {"00100020": {"vr": "LO", "Value": ["P1"]}})
    result = run(indexed, "series")
    row = json.loads(result.stdout)
    assert row == {
        "StudyInstanceUID": None,
        "SeriesInstanceUID": None,
        "PatientID": "P1",
    }


def test_instance_rows_carry_every_frames_image_id(
    indexed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Instance rows add imageIds: the stored imageId of each frame, in order."""
    fake(monkeypatch, INSTANCE_ROW)
    result = run(indexed, "instances")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    base = (
        f"wadors:{ROOT}/studies/{MR.StudyInstanceUID}/series/{MR.SeriesInstanceUID}"
        f"/instances/{MR.SOPInstanceUID}/frames/"
    )
    assert row["imageIds"] == [f"{base}{n}" for n in range(1, 11)]
    assert row["SliceThickness"] == 2.5
    assert list(row)[:3] == ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]
    with Store(indexed, read_only=True, create=False) as store:
        assert store.image_ids(MR.SOPInstanceUID) == row["imageIds"]
        assert store.image_ids("9.9.9") == []


def test_csv(indexed: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """CSV: a header of keywords, multi-values joined by backslashes, null empty."""
    fake(monkeypatch, STUDY_ROW)
    result = run(indexed, "studies", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows == [
        [
            "StudyInstanceUID",
            "PatientName",
            "ModalitiesInStudy",
            "NumberOfStudyRelatedSeries",
            "StudyDescription",
        ],
        ["1.2.3", "Doe^Jane", "CT\\PT", "2", ""],
    ]


def test_csv_names_a_column_seen_too_late(
    indexed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attribute first seen past the header's rows is named on stderr."""
    monkeypatch.setattr("metastore.cli.reading.CSV_HEADER_ROWS", 1)
    late = {**STUDY_ROW, "00100020": {"vr": "LO", "Value": ["P1"]}}
    fake(monkeypatch, STUDY_ROW, late)
    result = run(indexed, "studies", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 3
    assert "PatientID: not in the CSV columns" in result.stderr


def test_table(indexed: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A table: keyword columns, a rule, one line per row; --table still works."""
    fake(monkeypatch, STUDY_ROW)
    for args in (["--format", "table"], ["--table"]):
        result = run(indexed, "studies", *args)
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert lines[0].split()[:2] == ["StudyInstanceUID", "PatientName"]
        assert set(lines[1]) <= {"─", " "}
        assert lines[2].split() == ["1.2.3", "Doe^Jane", "CT\\PT", "2"]
    fake(monkeypatch)
    assert run(indexed, "studies", "--table").stdout.strip() == "(no rows)"
