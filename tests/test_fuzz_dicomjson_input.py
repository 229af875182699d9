"""Bad DICOM JSON, fuzzed: wrong types never break the mapping or lose valid instances.

Through the public API only: ``frame_modules``, ``DicomJsonProvider`` and
``index_paths`` on DICOM JSON files.  The mapping answers as Cornerstone would
(docs/mapping.md, "Values"), raising nothing but the documented
``DicomError``; the indexer records a bad instance as an error and stores
every valid instance of the same file and run.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dicom_samples import dicom_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stored import query_rows

from metastore import DicomError, DicomJsonProvider, Store, frame_modules, index_paths
from metastore.modules import MODULE_TYPES

IMAGE_ID = "wadors:http://h/studies/1.2/series/1.2.3/instances/1.2.3.4/frames/1"
#: The modules that may raise DicomError (a null sequence item), as documented.
RAISING = {"petIsotopeModule", "ultrasoundEnhancedRegionModule", "calibrationModule"}
BASE = dicom_json()


def instance(n: int, **elements: Any) -> dict[str, Any]:
    """CT_small's DICOM JSON with SOP Instance UID ``1.2.3.n`` and ``elements`` set."""
    out = copy.deepcopy(BASE)
    out["00080018"] = {"vr": "UI", "Value": [f"1.2.3.{n}"]}
    out.update(elements)
    return out


def nested(depth: int, item: Any = None) -> dict[str, Any]:
    """A sequence ``depth`` levels deep; the innermost item is ``item`` (or ``{}``)."""
    inner: Any = {} if item is None else item
    element: dict[str, Any] = {"vr": "SQ", "Value": [inner]}
    for _ in range(depth):
        element = {"vr": "SQ", "Value": [{"00081115": element}]}
    return element


def modules(inst: dict[str, Any]) -> dict[str, Any]:
    """``frame_modules`` of frame 1, which must be an image."""
    result = frame_modules(inst, IMAGE_ID, 1)
    assert result is not None
    assert list(result) == list(MODULE_TYPES)
    return result


# -- wrong types, one at a time, with the answer Cornerstone gives ------------

RAW_CASES = [
    # (element, generalSeriesModule.modality) -- getValue(Value[0]) as JS indexes
    ({"vr": "CS"}, None),  # no Value
    ({"vr": "CS", "Value": None}, None),
    ({"vr": "CS", "Value": []}, None),
    ({"vr": "CS", "Value": 7}, None),  # (7)[0] is undefined
    ({"vr": "CS", "Value": "MR"}, "M"),  # "MR"[0]
    ({"vr": "CS", "Value": {}}, None),
    ({"vr": "CS", "Value": {"0": "PT"}}, "PT"),  # an object with key "0"
    ({"vr": "CS", "Value": [12]}, 12),  # numbers for strings stay numbers
    ({"vr": "CS", "Value": [None]}, None),
    ({"vr": "CS", "Value": [["US"]]}, ["US"]),
    ({"vr": "ZZ", "Value": ["OT"]}, "OT"),  # an unknown VR is not looked at
    ("CT", None),  # the element itself is a string
    (None, None),
    (5, None),
]


@pytest.mark.parametrize(("element", "want"), RAW_CASES)
def test_raw_field_of_wrong_type(element: Any, want: Any) -> None:
    """A raw field reads Value[0] as JavaScript would, whatever the types."""
    got = modules(instance(1, **{"00080060": element}))
    assert got["generalSeriesModule"]["modality"] == want
    assert got["sopCommonModule"]["sopInstanceUID"] == "1.2.3.1"


NUMBER_CASES = [
    # (Rows element, imagePixelModule.rows) -- parseFloat(Value[0])
    ({"vr": "US", "Value": ["512"]}, 512.0),  # strings for numbers
    ({"vr": "US", "Value": [" 64mm"]}, 64.0),
    ({"vr": "US", "Value": ["abc"]}, math.nan),
    ({"vr": "US", "Value": [None]}, math.nan),  # parseFloat(null)
    ({"vr": "US", "Value": [True]}, math.nan),
    ({"vr": "US", "Value": [[3, 4]]}, 3.0),  # String([3, 4]) == "3,4"
    ({"vr": "US", "Value": [{"a": 1}]}, math.nan),
    ({"vr": "US", "Value": [10**400]}, math.inf),  # a huge JSON integer
    ({"vr": "US", "Value": ["1e999"]}, math.inf),
    ({"vr": "US", "Value": ["-" + "9" * 400]}, -math.inf),
    ({"vr": "US", "Value": "7"}, 7.0),  # "7"[0]
    ({"vr": "US", "Value": 7}, None),
    ({"vr": "US"}, None),
]


@pytest.mark.parametrize(("element", "want"), NUMBER_CASES)
def test_number_field_of_wrong_type(element: Any, want: float | None) -> None:
    """A number field is JS parseFloat of Value[0]: NaN, inf or None, never a raise."""
    got = modules(instance(1, **{"00280010": element}))["imagePixelModule"]["rows"]
    if want is None or not math.isnan(want):
        assert got == want
    else:
        assert isinstance(got, float) and math.isnan(got)


PN_CASES = [
    ({"vr": "PN", "Value": ["Doe^John"]}, "Doe^John"),  # PN as a plain string
    ({"vr": "PN", "Value": [42]}, 42),
    ({"vr": "PN", "Value": [{"Alphabetic": 7}]}, {"Alphabetic": 7}),
    ({"vr": "PN", "Value": "Doe"}, "D"),
    ({"vr": "PN", "Value": [None]}, None),
]


@pytest.mark.parametrize(("element", "want"), PN_CASES)
def test_person_name_of_wrong_type(element: Any, want: Any) -> None:
    """patientName is Value[0] as it is, a string or a number included."""
    got = modules(instance(1, **{"00100010": element}))["patientModule"]
    assert got["patientName"] == want


def test_geometry_vectors_of_wrong_type_fall_back_to_defaults() -> None:
    """IOP/IPP/spacing that are not arrays of enough numbers give the defaults."""
    got = modules(
        instance(
            1,
            **{
                "00200037": {"vr": "DS", "Value": "1\\0\\0\\0\\1\\0"},
                "00200032": {"vr": "DS", "Value": [1, 2]},
                "00280030": {"vr": "DS", "Value": None},
            },
        )
    )["imagePlaneModule"]
    assert got["imageOrientationPatient"] == [1, 0, 0, 0, 1, 0]
    assert got["imagePositionPatient"] == [0, 0, 0]
    assert got["pixelSpacing"] is None
    assert got["usingDefaultValues"] is True


@pytest.mark.parametrize("depth", [50, 60, 200])
def test_deeply_nested_sequences_are_answered(depth: int) -> None:
    """Sequences nested 50+ deep, in any tag or functional group, never raise."""
    inst = instance(
        1,
        **{
            "00081115": nested(depth),
            "00540016": nested(depth),
            "00186011": nested(depth),
            "52009229": nested(depth),
        },
    )
    got = modules(inst)
    assert (
        got["petIsotopeModule"]["radiopharmaceuticalInfo"]["radionuclideHalfLife"]
        is None
    )
    assert len(got["ultrasoundEnhancedRegionModule"]) == 1


@pytest.mark.parametrize("item", [1, "x", [1, 2], True])
def test_sequence_items_that_are_not_objects(item: Any) -> None:
    """Items that are numbers, strings or arrays are read as JS reads them."""
    inst = instance(
        1,
        **{
            "00540016": {"vr": "SQ", "Value": [item]},
            "00186011": {"vr": "SQ", "Value": [item]},
            "00081115": {"vr": "SQ", "Value": [item, None]},
        },
    )
    got = modules(inst)
    assert (
        got["petIsotopeModule"]["radiopharmaceuticalInfo"]["radionuclideTotalDose"]
        is None
    )
    assert got["ultrasoundEnhancedRegionModule"][0]["regionFlags"] is None


@pytest.mark.parametrize("tag", ["00540016", "00186011"])
def test_null_item_raises_only_the_documented_error(tag: str) -> None:
    """A null PET/US sequence item raises DicomError, as Cornerstone throws."""
    inst = instance(
        1, **{tag: {"vr": "SQ", "Value": [None]}, "00080060": {"Value": ["US"]}}
    )
    with pytest.raises(DicomError, match=r"^Cornerstone raises"):
        frame_modules(inst, IMAGE_ID, 1)


def test_lowercase_and_non_hex_keys_are_not_tags() -> None:
    """Keys Cornerstone would not look up (lowercase, non-hex) change no answer."""
    inst = instance(
        1,
        **{
            "0008103e": {"vr": "LO", "Value": ["lower"]},
            "GGGGGGGG": {"vr": "LO", "Value": ["not hex"]},
            "0028001": {"vr": "US", "Value": [9]},
            "": {"vr": "US", "Value": [9]},
        },
    )
    got = modules(inst)
    want = modules(instance(1))
    assert got["generalSeriesModule"] == want["generalSeriesModule"]
    assert got["imagePixelModule"] == want["imagePixelModule"]


# -- random wrong types ---------------------------------------------------------

TAGS = [
    "00080060", "00080008", "00100010", "00100020", "00280010", "00280011",
    "00280030", "00200037", "00200032", "00281050", "00281051", "00280008",
    "52009230", "52009229", "00540016", "00186011", "00020010", "60003000",
    "60000010", "00181072", "00080018", "0020000D", "0020000E",
]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["Value", "vr", "0", "length", "00080060"]),
            inner,
            max_size=3,
        )
    ),
    max_leaves=12,
)
elements = st.one_of(
    json_values,
    st.fixed_dictionaries({"vr": st.text(max_size=3)}),
    st.fixed_dictionaries(
        {
            "vr": st.sampled_from(["SQ", "CS", "ZZ", "PN", "DS", "US", ""]),
            "Value": json_values,
        }
    ),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    replaced=st.dictionaries(st.sampled_from(TAGS), elements, min_size=1, max_size=6),
    frame=st.integers(min_value=-1, max_value=3),
)
def test_random_wrong_types_only_raise_the_documented_error(
    replaced: dict[str, Any], frame: int
) -> None:
    """Any JSON in any element: answers or None, DicomError only where documented."""
    inst = instance(1, **copy.deepcopy(replaced))
    frame_id = IMAGE_ID.removesuffix("1") + str(frame)
    provider = DicomJsonProvider()
    provider.add(IMAGE_ID, inst)
    raised = set()
    for module_type in MODULE_TYPES:
        try:
            provider.get(module_type, frame_id)
        except DicomError as exc:
            assert module_type in RAISING, (module_type, exc)
            assert str(exc).startswith("Cornerstone raises")
            raised.add(module_type)
    try:
        result = frame_modules(inst, frame_id, frame)
    except DicomError:
        assert raised, "frame_modules raised where no module does"
        return
    assert result is None or list(result) == list(MODULE_TYPES)
    if frame < 1:
        assert result is None  # divergence 2


# -- the indexer on bad DICOM JSON files ------------------------------------------


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A store on a fresh database (SQLite and PostgreSQL)."""
    with Store(db_url) as s:
        yield s


def stored_uids(store: Store) -> set[str]:
    """The SOP Instance UIDs the store holds."""
    return {row["SOPInstanceUID"] for row in query_rows(store, "instances")}


BAD_INSTANCES: dict[str, Any] = {
    "no SOP UID": {"00080018": {"vr": "UI"}},
    "SOP UID null": {"00080018": {"vr": "UI", "Value": None}},
    "SOP UID a number": {"00080018": {"vr": "UI", "Value": 5}},
    "SOP UID an object": {"00080018": {"vr": "UI", "Value": [{"a": 1}]}},
    "SOP UID true": {"00080018": {"vr": "UI", "Value": [True]}},
    "study UID a float": {"0020000D": {"vr": "UI", "Value": [1.5]}},
    "series UID an int": {"0020000E": {"vr": "UI", "Value": [3]}},
    "study UID lowercase key": {"0020000D": None},
    "null US region": {"00186011": {"vr": "SQ", "Value": [None]}},
}


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_instances_of_a_file_never_lose_the_good_ones(
    store: Store, tmp_path: Path, workers: int
) -> None:
    """Each bad item of a metadata array is an error; the valid ones are stored."""
    items: list[Any] = [instance(100)]
    for n, (name, change) in enumerate(BAD_INSTANCES.items(), 1):
        bad = instance(n)
        if name == "study UID lowercase key":
            bad["0020000d"] = bad.pop("0020000D")
        else:
            bad.update(change)
        items += [bad, instance(100 + n)]
    items += [[], "x", None, 7, {}]  # items that are not objects at all
    path = tmp_path / "studies 1.json"
    path.write_text(json.dumps(items))
    # a second file of the same run, valid, in a deep folder
    good = tmp_path / "z" / "deep" / "good.json"
    good.parent.mkdir(parents=True)
    good.write_text(json.dumps(instance(200)))
    report = index_paths(store, [tmp_path], workers=workers)
    want = {f"1.2.3.{100 + n}" for n in range(len(BAD_INSTANCES) + 1)} | {"1.2.3.200"}
    assert stored_uids(store) == want
    assert report.indexed == 2 and report.failed == 0
    errors = [e for e in store.errors() if e.kind == "invalid"]
    # a null US region item makes Cornerstone throw: that instance is invalid too
    assert len(errors) == len(BAD_INSTANCES) + 5
    assert {e.location for e in errors} == {str(path)}
    assert all(e.reason.startswith("instance ") for e in errors)
    reasons = " | ".join(e.reason for e in errors)
    assert "SOPInstanceUID (0008,0018) is true (a JSON boolean)" in reasons
    assert "StudyInstanceUID (0020,000D) is 1.5 (a JSON number)" in reasons


@pytest.mark.parametrize(
    ("tag", "value"),
    [
        ("00200013", 10**30),
        ("00200011", 10**30),
        ("00200013", -(10**19)),
        ("00200013", 2**31),
    ],
    ids=["InstanceNumber", "SeriesNumber", "negative InstanceNumber", "2**31"],
)
def test_huge_integers_do_not_stop_the_run(
    store: Store, tmp_path: Path, tag: str, value: int
) -> None:
    """An IS value past a column's range is stored as NULL, never ending the run."""
    bad = instance(1, **{tag: {"vr": "IS", "Value": [value]}})
    bad["0020000E"] = {"vr": "UI", "Value": ["1.2.3.9"]}  # a series of its own
    (tmp_path / "a.json").write_text(json.dumps(bad))
    (tmp_path / "b.json").write_text(json.dumps(instance(2)))
    report = index_paths(store, [tmp_path], workers=1)
    assert report.ok
    found = query_rows(store, "instances", include=["SeriesNumber"])
    rows = {row["SOPInstanceUID"]: row for row in found}
    assert set(rows) == {"1.2.3.1", "1.2.3.2"}
    field = "InstanceNumber" if tag == "00200013" else "SeriesNumber"
    if -(2**31) <= value < 2**31:
        assert rows["1.2.3.1"][field] == value
    else:  # past 32 bits: NULL on both backends, so they answer alike
        assert rows["1.2.3.1"][field] is None
    assert rows["1.2.3.2"]["InstanceNumber"] == 1


@pytest.mark.parametrize("frames", ["1000000000", 10**30])
def test_absurd_frame_count_fails_that_instance_only(
    store: Store, tmp_path: Path, frames: str | int
) -> None:
    """NumberOfFrames 10**9 fails its instance (naming the tag); the others stay."""
    items = [
        instance(1),
        instance(2, **{"00280008": {"vr": "IS", "Value": [frames]}}),
        instance(3),
    ]
    (tmp_path / "a.json").write_text(json.dumps(items))
    report = index_paths(store, [tmp_path], workers=1)
    assert stored_uids(store) == {"1.2.3.1", "1.2.3.3"}
    (error,) = [e for e in report.errors if e.kind == "invalid"]
    assert error.reason.startswith("instance 2:") and "(0028,0008)" in error.reason


def test_huge_values_elsewhere_are_stored(store: Store, tmp_path: Path) -> None:
    """Huge numbers in module fields and private tags are stored and answered."""
    big = instance(
        1,
        **{
            "00280010": {"vr": "US", "Value": [10**400]},
            "00091001": {"vr": "DS", "Value": [10**30, "1e999"]},
            "00081030": {"vr": "LO", "Value": ["x" * 100_000]},
        },
    )
    (tmp_path / "a.json").write_text(json.dumps(big))
    report = index_paths(store, [tmp_path], workers=1)
    assert report.ok and stored_uids(store) == {"1.2.3.1"}
    image_id = next(iter(store.export()))[0]
    stored = store.image_modules(image_id)
    assert stored is not None
    assert stored["imagePixelModule"]["rows"] == math.inf
    assert stored["generalStudyModule"]["studyDescription"] == "x" * 100_000


#: NumberOfFrames is left out: a huge one is a huge (valid) frame count.
INDEX_TAGS = [tag for tag in TAGS if tag != "00280008"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bad=st.lists(
        st.dictionaries(st.sampled_from(INDEX_TAGS), elements, min_size=1, max_size=4),
        min_size=1,
        max_size=3,
    )
)
def test_random_bad_items_never_lose_valid_ones(bad: list[dict[str, Any]]) -> None:
    """Random wrong types in some items of an array: every valid item is stored."""
    items = [instance(1)]
    for n, change in enumerate(bad, 2):
        item = instance(n, **change)
        item["00080018"] = {"vr": "UI", "Value": [f"1.2.3.{n}"]}  # keep it identifiable
        item["00200013"] = {"vr": "IS", "Value": [n]}  # identifiable too
        items.append(item)
    items.append(instance(99))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.json"
        path.write_text(json.dumps(items))
        with Store(f"sqlite:///{Path(tmp) / 'db.sqlite'}") as store:
            report = index_paths(store, [path], workers=1)
            stored = stored_uids(store)
            errors = store.errors()
    assert {"1.2.3.1", "1.2.3.99"} <= stored
    assert report.indexed == 1
    # every other item is either stored or recorded, never silently lost
    for n in range(2, len(bad) + 2):
        uid = f"1.2.3.{n}"
        assert uid in stored or any(
            e.reason.startswith(f"instance {n}:") for e in errors
        ), (uid, errors)
