"""Tests of metastore.modules: the public entry points and the divergences.

Oracle parity itself is in test_parity.py; here: MODULE_TYPES, build_module
versus frame_modules, divergences 1-3 stated directly, overlays checked bit
for bit against pydicom's ``overlay_array`` (recorded by make_extra_cases.py),
and property tests on mutated DICOM JSON.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle_fixtures import FIXTURES, load_cases, load_expected

from metastore.errors import DicomError
from metastore.modules import (
    ANSWERED_TYPES,
    MODULE_TYPES,
    build_module,
    frame_modules,
)
from metastore.modules.jsvalues import Undefined
from metastore.types import ModuleType

#: Modules Cornerstone can throw for (null sequence items) outside divergences.
RAISING = {"petIsotopeModule", "ultrasoundEnhancedRegionModule", "calibrationModule"}


def _case(set_name: str, source: str, frame: int = 1) -> dict[str, Any]:
    return next(
        c for c in load_cases(set_name) if c["source"] == source and c["frame"] == frame
    )


def _all_cases() -> list[tuple[str, dict[str, Any]]]:
    return [
        (name, c)
        for name in ("pydicom_testdata", "synthetic", "extra")
        for c in load_cases(name)
    ]


def test_module_types_are_the_oracle_types_in_order() -> None:
    """MODULE_TYPES is ModuleType's values, in the order the oracle queries them."""
    assert tuple(t.value for t in ModuleType) == MODULE_TYPES
    expected = load_expected("expected_pydicom_testdata.json")
    assert tuple(next(iter(expected.values()))) == MODULE_TYPES
    assert set(MODULE_TYPES) - ANSWERED_TYPES == {
        "frameOfReferenceModule",
        "scalingModule",
        "patientDemographicModule",
        "ecgModule",
    }


@pytest.mark.parametrize("module_type", ["scalingModule", "ecgModule", "nope", ""])
def test_unanswered_and_unknown_types_give_none(module_type: str) -> None:
    """build_module answers None for types the WADO-RS provider does not answer."""
    case = _case("pydicom_testdata", "pydicom:CT_small.dcm")
    assert build_module(module_type, case["metadata"], case["imageId"], 1) is None


@pytest.mark.parametrize(
    ("set_name", "case"),
    _all_cases(),
    ids=[f"{n}-{i}-{c['source']}" for i, (n, c) in enumerate(_all_cases())],
)
def test_frame_modules_equals_build_module(set_name: str, case: dict[str, Any]) -> None:
    """frame_modules gives, per type, what build_module gives for the same frame."""
    firsts = [c for c in load_cases(set_name) if c["source"] == case["source"]]
    first = next((c for c in firsts if c["frame"] == 1), case)
    instance, image_id, frame = first["metadata"], case["imageId"], case["frame"]
    single: dict[str, Any] = {}
    raised = set()
    for module_type in MODULE_TYPES:
        try:
            single[module_type] = build_module(module_type, instance, image_id, frame)
        except DicomError:
            raised.add(module_type)
    assert raised <= RAISING
    if raised:
        with pytest.raises(DicomError):
            frame_modules(instance, image_id, frame)
        return
    together = frame_modules(instance, image_id, frame)
    if together is None:
        assert all(v is None for v in single.values())
        return
    assert list(together) == list(MODULE_TYPES)
    assert json.dumps(together, sort_keys=True, default=str) == json.dumps(
        single, sort_keys=True, default=str
    )


def _geometry_case(**changes: Any) -> dict[str, Any]:
    instance = copy.deepcopy(
        _case("pydicom_testdata", "pydicom:CT_small.dcm")["metadata"]
    )
    for key, value in changes.items():
        if value is None:
            instance.pop(key, None)
        else:
            instance[key] = value
    return instance


@pytest.mark.parametrize("missing", ["00200037", "00200032"])
def test_divergence_1_no_modality_uses_defaults(missing: str) -> None:
    """Divergence 1: no Modality and no IOP/IPP gives defaults, not a TypeError."""
    instance = _geometry_case(**{"00080060": None, missing: None})
    plane = build_module("imagePlaneModule", instance, "wadors:x/frames/1", 1)
    assert plane["usingDefaultValues"] is True
    if missing == "00200037":
        assert plane["imageOrientationPatient"] == [1, 0, 0, 0, 1, 0]
        assert plane["rowCosines"] == [1, 0, 0] and plane["columnCosines"] == [0, 1, 0]
    else:
        assert plane["imagePositionPatient"] == [0, 0, 0]
    nm = build_module("nmMultiframeGeometryModule", instance, "wadors:x/frames/1", 1)
    assert nm["modality"] is None and nm["isNMReconstructable"] is False
    key = "imageOrientationPatient" if missing == "00200037" else "imagePositionPatient"
    assert nm[key] is None


def test_divergence_1_recon_tomo_without_modality_is_not_reconstructable() -> None:
    """Divergence 1: RECON TOMO without Modality is a non-NM image, not a TypeError."""
    instance = _geometry_case(
        **{
            "00080060": None,
            "00080008": {"vr": "CS", "Value": ["A", "B", "RECON TOMO"]},
        }
    )
    nm = build_module("nmMultiframeGeometryModule", instance, "wadors:x/frames/1", 1)
    assert nm["imageSubType"] == "RECON TOMO" and nm["isNMReconstructable"] is False


def test_nm_fallback_reads_detector_geometry() -> None:
    """NM RECON TOMO without IOP/IPP takes them from DetectorInformationSequence."""
    case = _case("synthetic", "synthetic:nm-recon-tomo")
    plane = build_module("imagePlaneModule", case["metadata"], case["imageId"], 1)
    detector = case["metadata"]["00540022"]["Value"][0]
    assert plane["imageOrientationPatient"] == detector["00200037"]["Value"]
    assert plane["imagePositionPatient"] == detector["00200032"]["Value"]
    assert plane["usingDefaultValues"] is False


def test_divergence_2_frames_past_the_end() -> None:
    """Divergence 2: frames past the per-frame items or NumberOfFrames give None."""
    case = _case("synthetic", "synthetic:enhanced-pffg-short")
    assert frame_modules(case["metadata"], case["imageId"], 3) is None
    assert frame_modules(case["metadata"], case["imageId"], 2) is not None
    ct = _case("pydicom_testdata", "pydicom:CT_small.dcm")
    assert frame_modules(ct["metadata"], ct["imageId"], 2) is None
    for module_type in MODULE_TYPES:
        assert build_module(module_type, ct["metadata"], ct["imageId"], 2) is None


def _overlay_truth() -> dict[str, dict[str, Any]]:
    path = FIXTURES / "overlays_pydicom.json"
    truth: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return truth


@pytest.mark.parametrize("image_id", sorted(_overlay_truth()))
def test_divergence_3_overlay_bits_match_pydicom(image_id: str) -> None:
    """Divergence 3: overlay bits equal pydicom's overlay_array, group by group."""
    truth = _overlay_truth()[image_id]
    case = next(c for c in load_cases("extra") if c["imageId"] == image_id)
    meta = case["metadata"]
    module = build_module("overlayPlaneModule", meta, image_id, case["frame"])
    overlays = module["overlays"]
    assert len(overlays) == len(truth)
    for (group, want), overlay in zip(sorted(truth.items()), overlays, strict=True):
        rows, columns = want["shape"]
        assert (overlay["rows"], overlay["columns"]) == (rows, columns)
        origin = meta[f"{group}0050"]["Value"]
        assert (overlay["x"], overlay["y"]) == (origin[1] - 1, origin[0] - 1)
        data = meta[f"{group}3000"]
        if "BulkDataURI" in data:
            assert overlay["pixelData"] is None
            continue
        bits = overlay["pixelData"]
        assert "".join(map(str, bits[: rows * columns])) == want["bits"]
        assert len(bits) % 16 == 0 and len(bits) >= rows * columns  # bytes x 8, OW
        assert set(bits) <= {0, 1}
    instance = build_module("instance", meta, image_id, case["frame"])
    assert instance["Overlays"] == overlays


def test_divergence_3_overlay_text_fields() -> None:
    """Description, label and ROI values come back as trimmed strings, type raw."""
    case = next(
        c for c in load_cases("extra") if c["source"] == "extra:overlays-groups"
    )
    overlays = build_module("overlayPlaneModule", case["metadata"], case["imageId"], 1)[
        "overlays"
    ]
    first, second, last = overlays
    assert (first["description"], first["label"], first["type"]) == (
        "graphics",
        "LBL",
        "G",
    )
    assert (second["roiArea"], second["roiMean"], second["roiStandardDeviation"]) == (
        "24",
        "12.5",
        "3.25",
    )
    assert second["type"] == "R" and second["description"] is None
    assert last["description"] == "padded"


def test_divergence_3_bulkdata_overlay_has_no_bits() -> None:
    """An overlay whose data is a BulkDataURI is listed with pixelData None."""
    case = _case("synthetic", "synthetic:overlay-bulkdata")
    (overlay,) = build_module(
        "overlayPlaneModule", case["metadata"], case["imageId"], 1
    )["overlays"]
    assert overlay["pixelData"] is None
    assert (overlay["rows"], overlay["columns"], overlay["x"], overlay["y"]) == (
        128,
        128,
        0,
        0,
    )


def test_overlay_without_origin_gives_nan_position() -> None:
    """Without OverlayOrigin, x and y are NaN (undefined - 1 in JavaScript)."""
    meta = {"60003000": {"vr": "OW", "InlineBinary": "AAA="}}
    (overlay,) = build_module("overlayPlaneModule", meta, "wadors:x/frames/1", 1)[
        "overlays"
    ]
    assert math.isnan(overlay["x"]) and math.isnan(overlay["y"])
    assert overlay["pixelData"] == [0] * 16 and overlay["rows"] is None


def test_null_sequence_items_raise_like_cornerstone() -> None:
    """Null radiopharmaceutical/region items raise DicomError; instance swallows."""
    for source, types in (
        ("extra:pet-null-item", {"petIsotopeModule"}),
        (
            "extra:us-region-null-item",
            {"ultrasoundEnhancedRegionModule", "calibrationModule"},
        ),
    ):
        case = _case("extra", source)
        for module_type in types:
            with pytest.raises(DicomError, match="Cornerstone raises"):
                build_module(module_type, case["metadata"], case["imageId"], 1)
        instance = build_module("instance", case["metadata"], case["imageId"], 1)
        assert "RadiopharmaceuticalInfo" not in instance
        assert instance["SOPInstanceUID"] == case["metadata"]["00080018"]["Value"][0]


def test_instance_keeps_none_valued_keys() -> None:
    """The instance module keeps sub-module keys that hold None, UpperCamel-cased."""
    case = _case("pydicom_testdata", "pydicom:CT_small.dcm")
    instance = build_module("instance", case["metadata"], case["imageId"], 1)
    assert "SeriesDescription" in instance and "VOILUTFunction" in instance
    assert "SOPClassUID" in instance and "NumberOfFrames" in instance
    assert "ImagePositionPatient" not in instance and "PatientName" not in instance


# -- property tests ------------------------------------------------------------

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.sampled_from(
        ["", " 7 ", "3.5mm", "abc", "NM", "US", "RECON TOMO", "1\\2", "0x2"]
    )
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["vr", "Value", "0", "length", "Alphabetic"]), inner
        )
    ),
    max_leaves=10,
)
BASES = [
    ("pydicom_testdata", "pydicom:CT_small.dcm"),
    ("pydicom_testdata", "pydicom-data:emri_small.dcm"),
    ("pydicom_testdata", "pydicom-data:OBXXXX1A.dcm"),
    ("synthetic", "synthetic:pet-full"),
    ("synthetic", "synthetic:nm-recon-tomo"),
    ("extra", "extra:overlays-groups"),
    ("extra", "extra:enhanced-strings"),
]


def _mutate(instance: dict[str, Any], data: st.DataObject) -> None:
    """Apply a few random, type-breaking edits to top-level or nested elements."""
    for _ in range(data.draw(st.integers(1, 6))):
        target = instance
        if data.draw(st.booleans()):  # sometimes go into a sequence item
            sequences = [
                item
                for element in instance.values()
                if isinstance(element, dict) and isinstance(element.get("Value"), list)
                for item in element["Value"]
                if isinstance(item, dict)
            ]
            if sequences:
                target = data.draw(st.sampled_from(sequences))
        if not target:
            continue
        key = data.draw(st.sampled_from(sorted(target)))
        action = data.draw(st.integers(0, 5))
        element = target[key]
        if action == 0:
            del target[key]
        elif action == 1:
            target[key] = data.draw(JSON_VALUES)
        elif action == 2 and isinstance(element, dict):
            element["Value"] = data.draw(JSON_VALUES)
        elif action == 3 and isinstance(element, dict):
            element.pop("Value", None)
        elif (
            action == 4
            and isinstance(element, dict)
            and isinstance(element.get("Value"), list)
        ):
            element["Value"] = [
                v if isinstance(v, dict) else str(v) for v in element["Value"]
            ]
        elif (
            action == 5
            and isinstance(element, dict)
            and isinstance(element.get("Value"), list)
        ):
            element["Value"] = [data.draw(JSON_VALUES), *element["Value"]]


def _plain_json(value: Any) -> bool:
    """Only JSON types (and NaN/inf floats) anywhere: no leaked undefined."""
    if isinstance(value, Undefined):
        return False
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_json(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(base=st.sampled_from(BASES), frame=st.integers(0, 4), data=st.data())
def test_mutated_json_never_breaks_the_modules(
    base: tuple[str, str], frame: int, data: st.DataObject
) -> None:
    """Random wrong types or missing/non-array Values never raise, but as contracted."""
    instance = copy.deepcopy(_case(*base)["metadata"])
    _mutate(instance, data)
    image_id = "wadors:http://h/studies/1/series/2/instances/3/frames/1"
    raised = set()
    for module_type in MODULE_TYPES:
        try:
            value = build_module(module_type, instance, image_id, frame)
        except DicomError as exc:
            assert module_type in RAISING, (module_type, exc)
            raised.add(module_type)
            continue
        assert _plain_json(value), (module_type, value)
    try:
        result = frame_modules(instance, image_id, frame)
    except DicomError:
        assert raised
        return
    assert not raised
    assert result is None or list(result) == list(MODULE_TYPES)


def test_ow_overlay_listed_byte_by_byte_reads_as_bytes() -> None:
    """OW OverlayData sent as one JSON number per byte gives the same bits as words."""
    case = next(
        c for c in load_cases("extra") if c["source"] == "extra:overlays-value-and-bulk"
    )
    meta = copy.deepcopy(case["metadata"])
    words = meta["60003000"]["Value"]
    as_bytes = [b for w in words for b in (w & 0xFF, w >> 8)]
    want = build_module("overlayPlaneModule", meta, case["imageId"], 1)["overlays"][0]
    meta["60003000"] = {"vr": "OW", "Value": as_bytes[: math.ceil(10 * 10 / 8)]}
    got = build_module("overlayPlaneModule", meta, case["imageId"], 1)["overlays"][0]
    assert got["pixelData"][:100] == want["pixelData"][:100]
