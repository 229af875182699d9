"""Instance records from DICOM JSON: UIDs, searchable attributes, frames."""

from __future__ import annotations

from typing import Any

import pytest
from dicom_samples import CT, dicom_json

from metastore.attributes import date_value, int_value, person_name_text, text_value
from metastore.errors import IndexingError
from metastore.imageid import parse_image_id, wadors_image_id
from metastore.index.extract import MAX_FRAMES, build_instance
from metastore.records import Source

SOURCE = Source("/data/x.json", 10, 20)


def name_of(study: str, series: str, sop: str) -> Any:
    """Frame-1 imageId under a test root."""
    return parse_image_id(wadors_image_id("http://h", study, series, sop, 1))


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"Alphabetic": "Yamada^Tarou"}, "Yamada^Tarou"),
        (
            {
                "Alphabetic": "Yamada^Tarou",
                "Ideographic": "山田^太郎",
                "Phonetic": "やまだ^たろう",
            },
            "Yamada^Tarou=山田^太郎=やまだ^たろう",
        ),
        ({"Alphabetic": "A", "Phonetic": "P"}, "A==P"),
        ({"Ideographic": "山田"}, "=山田"),
        ("Plain^String", "Plain^String"),
        ({}, None),
    ],
)
def test_person_name_text_joins_groups_like_part10(
    value: Any, text: str | None
) -> None:
    """PN objects become Alphabetic=Ideographic=Phonetic, trailing groups dropped."""
    assert (
        person_name_text({"00100010": {"vr": "PN", "Value": [value]}}, "00100010")
        == text
    )


def test_person_name_text_of_several_values_and_none() -> None:
    """Several names are joined with a backslash; a missing Value gives None."""
    two = {"x": {"vr": "PN", "Value": [{"Alphabetic": "A"}, {"Alphabetic": "B"}]}}
    assert person_name_text(two, "x") == "A\\B"
    assert person_name_text({"x": {"vr": "PN"}}, "x") is None


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ([5], 5),
        (["12"], 12),
        ([" 7 "], 7),
        ([3.0], 3),
        ([2.5], None),
        (["x"], None),
        ([True], None),
        ([], None),
    ],
)
def test_int_value_is_lenient(value: list[Any], number: int | None) -> None:
    """IS values sent as numbers or strings give ints; anything else gives None."""
    assert int_value({"00200013": {"vr": "IS", "Value": value}}, "00200013") == number


def test_text_value_strips_and_ignores_objects() -> None:
    """Strings are stripped, empty ones are None, objects are not text."""
    instance = {"a": {"Value": [" CT "]}, "b": {"Value": [""]}, "c": {"Value": [{}]}}
    assert [text_value(instance, k) for k in "abcd"] == ["CT", None, None, None]


@pytest.mark.parametrize(
    ("value", "date"),
    [
        ("20200131", "20200131"),
        ("1997.04.24", "19970424"),
        (" 20200131 ", "20200131"),
        ("2020-01-31", None),
        ("20200131-20200201", None),
        ("", None),
    ],
)
def test_date_value_is_yyyymmdd_or_none(value: str, date: str | None) -> None:
    """Study dates are stored as eight digits (ACR-NEMA dots removed) or not at all."""
    assert date_value({"00080020": {"vr": "DA", "Value": [value]}}, "00080020") == date


def test_build_instance_fills_every_field() -> None:
    """CT_small's DICOM JSON gives a record with all searchable attributes."""
    record = build_instance(dicom_json(CT), SOURCE, name_of)
    assert record.source == SOURCE
    assert record.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert record.study_time == "072730"
    assert record.series_number == 1
    assert record.instance_number == 1
    assert record.accession_number is None
    assert [i.frame for i in record.images] == [1]
    assert record.images[0].modules["generalSeriesModule"]["modality"] == "CT"


@pytest.mark.parametrize(
    ("tag", "reason"),
    [
        ("0020000D", "missing StudyInstanceUID (0020,000D)"),
        ("0020000E", "missing SeriesInstanceUID (0020,000E)"),
        ("00080018", "missing SOPInstanceUID (0008,0018)"),
    ],
)
def test_missing_uid_names_the_tag(tag: str, reason: str) -> None:
    """Each missing UID makes the instance invalid with a reason naming it."""
    instance = dicom_json(CT)
    del instance[tag]
    with pytest.raises(IndexingError) as info:
        build_instance(instance, SOURCE, name_of)
    assert (info.value.source, info.value.reason) == (SOURCE.location, reason)


@pytest.mark.parametrize(
    ("tag", "value", "reason"),
    [
        ("00080018", True, "SOPInstanceUID (0008,0018) is true (a JSON boolean)"),
        ("0020000D", 1.5, "StudyInstanceUID (0020,000D) is 1.5 (a JSON number)"),
        ("0020000E", 7, "SeriesInstanceUID (0020,000E) is 7 (a JSON number)"),
        (
            "00080018",
            {"a": 1},
            'SOPInstanceUID (0008,0018) is {"a": 1} (a JSON object)',
        ),
    ],
)
def test_uid_that_is_not_a_json_string_is_invalid(
    tag: str, value: Any, reason: str
) -> None:
    """A UI value is a JSON string; true or 1.5 is not stored as "True" or "1.5"."""
    instance = dicom_json(CT)
    instance[tag] = {"vr": "UI", "Value": [value]}
    with pytest.raises(IndexingError) as info:
        build_instance(instance, SOURCE, name_of)
    assert info.value.reason == f"{reason}, not a string"


def test_sop_class_uid_that_is_not_a_string_is_not_stored() -> None:
    """The optional (0008,0016) SOPClassUID of the wrong type is left out."""
    instance = dicom_json(CT)
    instance["00080016"] = {"vr": "UI", "Value": [False]}
    assert build_instance(instance, SOURCE, name_of).sop_class_uid is None


def test_uid_with_a_slash_is_invalid() -> None:
    """A UID that would break a wadors URL is refused, not mangled."""
    instance = dicom_json(CT)
    instance["00080018"] = {"vr": "UI", "Value": ["1.2/3"]}
    with pytest.raises(IndexingError, match="sop_instance_uid"):
        build_instance(instance, SOURCE, name_of)


def _enhanced(per_frame: int, number_of_frames: int | None) -> dict[str, Any]:
    """CT_small made enhanced: a per-frame item with a position for each frame."""
    instance = dicom_json(CT)
    items = [
        {
            "00209113": {
                "vr": "SQ",
                "Value": [{"00200032": {"vr": "DS", "Value": [0, 0, float(n)]}}],
            }
        }
        for n in range(1, per_frame + 1)
    ]
    instance["52009230"] = {"vr": "SQ", "Value": items}
    instance.pop("00280008", None)
    if number_of_frames is not None:
        instance["00280008"] = {"vr": "IS", "Value": [number_of_frames]}
    return instance


def test_per_frame_groups_without_number_of_frames_give_one_image_per_frame() -> None:
    """Without NumberOfFrames, the per-frame functional groups count the frames."""
    record = build_instance(_enhanced(3, None), SOURCE, name_of)
    assert record.number_of_frames == 3
    assert [i.frame for i in record.images] == [1, 2, 3]
    assert [i.image_id.endswith(f"/frames/{i.frame}") for i in record.images] == [
        True
    ] * 3
    positions = [
        i.modules["imagePlaneModule"]["imagePositionPatient"] for i in record.images
    ]
    assert positions == [[0, 0, 1.0], [0, 0, 2.0], [0, 0, 3.0]]


def test_number_of_frames_wins_over_the_per_frame_count() -> None:
    """NumberOfFrames wins; frames past the per-frame groups are not images."""
    record = build_instance(_enhanced(2, 3), SOURCE, name_of)
    assert record.number_of_frames == 3
    assert [i.frame for i in record.images] == [1, 2]


def test_a_frame_whose_modules_raise_makes_the_instance_invalid() -> None:
    """A DicomError from one frame's modules is an IndexingError naming the frame."""
    instance = dicom_json(CT)
    instance["00186011"] = {"vr": "SQ", "Value": [None]}  # Cornerstone throws
    with pytest.raises(IndexingError) as info:
        build_instance(instance, SOURCE, name_of)
    assert info.value.source == SOURCE.location
    assert info.value.reason.startswith("frame 1 of 1: ")


def test_huge_frame_count_past_per_frame_groups_builds_only_real_frames() -> None:
    """A NumberOfFrames far past the per-frame groups costs only the real frames."""
    instance = _enhanced_with_frames(3)
    instance["00280008"] = {"vr": "IS", "Value": [10**8]}
    record = build_instance(instance, Source("/x.dcm", 1, 1), _wadors)
    assert [image.frame for image in record.images] == [1, 2, 3]
    assert record.number_of_frames == 10**8


def test_absurd_frame_count_is_refused_with_a_clear_reason() -> None:
    """Without per-frame groups, a frame count past MAX_FRAMES fails that instance."""
    instance = _enhanced_with_frames(3)
    del instance["52009230"]
    instance["00280008"] = {"vr": "IS", "Value": [MAX_FRAMES + 1]}
    with pytest.raises(IndexingError, match=r"\(0028,0008\) NumberOfFrames 1000001"):
        build_instance(instance, Source("/x.dcm", 1, 1), _wadors)


def _enhanced_with_frames(n: int) -> dict:
    """A small DICOM JSON instance with shared and ``n`` per-frame groups."""

    def seq(*items):
        return {"vr": "SQ", "Value": list(items)}

    return {
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "0020000E": {"vr": "UI", "Value": ["1.2.3.4"]},
        "00080018": {"vr": "UI", "Value": ["1.2.3.4.5"]},
        "00080060": {"vr": "CS", "Value": ["MR"]},
        "00280008": {"vr": "IS", "Value": [n]},
        "52009229": seq({"00289110": seq({"00280030": {"vr": "DS", "Value": [1, 1]}})}),
        "52009230": seq(
            *[
                {"00209113": seq({"00200032": {"vr": "DS", "Value": [0, 0, i]}})}
                for i in range(n)
            ]
        ),
    }


def _wadors(study: str, series: str, instance: str):
    """imageId of frame 1 of an instance under a test root."""
    return parse_image_id(
        f"wadors:http://h/studies/{study}/series/{series}/instances/{instance}/frames/1"
    )
