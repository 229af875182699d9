"""Differential tests against the real Cornerstone (oracle fixtures).

Every case of a fixture set is added to one :class:`DicomJsonProvider` in file
order, then every module type is asked for every imageId, as
``run_oracle.mjs`` does.  Each answer must equal the oracle's, field for
field, except where one of the four divergences applies; those outputs are
checked against the divergent contract instead and counted apart.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pytest
from oracle_fixtures import OracleError, differences, load_cases, load_expected

from metastore.errors import DicomError
from metastore.modules import MODULE_TYPES
from metastore.providers.dicomjson import DicomJsonProvider

pytestmark = pytest.mark.oracle

#: (case set, expected file).  The synthetic set is compared with the
#: ``--isolate`` run: each frame on its own (divergence 4).
SETS = {
    "pydicom_testdata": "expected_pydicom_testdata.json",
    "synthetic": "expected_synthetic_isolated.json",
    "extra": "expected_extra.json",
}

GEOMETRY = ("imagePlaneModule", "nmMultiframeGeometryModule")


def expected_file(set_name: str) -> str:
    """The oracle output a set is compared with (``expected_<set>.json`` by default)."""
    return SETS.get(set_name, f"expected_{set_name}.json")


@dataclass
class Tally:
    """Counts of one imageId's (or one set's) outputs."""

    checked: int = 0
    equal: int = 0
    divergent: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.checked += other.checked
        self.equal += other.equal
        self.divergent.update(other.divergent)
        self.problems.extend(other.problems)


@cache
def answers(set_name: str) -> dict[str, dict[str, Any]]:
    """Every module of every imageId of a set, through the public provider."""
    provider = DicomJsonProvider()
    cases = load_cases(set_name)
    for case in cases:
        provider.add(case["imageId"], copy.deepcopy(case["metadata"]))
    out: dict[str, dict[str, Any]] = {}
    for case in cases:
        image_id = case["imageId"]
        row: dict[str, Any] = {}
        for module_type in MODULE_TYPES:
            try:
                row[module_type] = provider.get(module_type, image_id)
            except Exception as exc:  # recorded, then reported by the test
                row[module_type] = exc
        out[image_id] = row
    return out


def _case(set_name: str, image_id: str) -> dict[str, Any]:
    return next(c for c in load_cases(set_name) if c["imageId"] == image_id)


def _non_nm_geometry(set_name: str, image_id: str, module_type: str) -> Any:
    """What the module gives for the same instance with a non-NM Modality."""
    case = _case(set_name, image_id)
    provider = DicomJsonProvider()
    metadata = copy.deepcopy(case["metadata"])
    metadata["00080060"] = {"vr": "CS", "Value": ["OT"]}
    provider.add(image_id, metadata)
    value = provider.get(module_type, image_id)
    if module_type == "nmMultiframeGeometryModule":
        modality = case["metadata"].get("00080060", {}).get("Value")
        value["modality"] = (
            modality[0] if isinstance(modality, list) and modality else None
        )
    elif value["usingDefaultValues"] is not True:
        raise AssertionError(f"{image_id}: geometry is missing, defaults must be used")
    return value


def _overlay_groups(metadata: dict[str, Any]) -> list[str]:
    return [f"{g:04X}" for g in range(0x6000, 0x6020, 2) if f"{g:04X}3000" in metadata]


def _past_end(case: dict[str, Any]) -> bool:
    """Whether a frame is past the end of its multi-frame instance (divergence 2).

    Written independently of ``metastore.modules.frames``: NumberOfFrames when it is
    a plain integer >= 1 (a JSON number or a string such as ``"+3"``), else
    the per-frame item count, else 1; only for instances Cornerstone's
    manager treats as multi-frame (a single-frame instance added under a
    frame's own imageId answers for it).
    """
    meta = case["metadata"]
    values = meta.get("00280008", {}).get("Value")
    first = values[0] if isinstance(values, list) and values else None
    declared = None
    if isinstance(first, int) and not isinstance(first, bool):
        declared = first
    elif isinstance(first, str):
        try:  # "3", " 3 ", "+3", "3.000e+00": a plain number, however written
            number = float(first.strip())
        except ValueError:
            number = math.nan
        if number.is_integer():
            declared = int(number)
    items = meta.get("52009230", {}).get("Value")
    count = len(items) if isinstance(items, list) else None
    multiframe = "52009230" in meta or "52009229" in meta or (declared or 0) > 1
    limit = declared if declared and declared >= 1 else (count or 1)
    return multiframe and case["frame"] > limit


def check_image(
    set_name: str, image_id: str, actual: dict[str, Any] | None = None
) -> Tally:
    """Compare one imageId's answers with the oracle's; divergences apart.

    ``actual`` is metastore's row for the imageId (default: :func:`answers`,
    every case of the set in one provider).
    """
    expected = load_expected(expected_file(set_name))[image_id]
    actual = answers(set_name)[image_id] if actual is None else actual
    case = _case(set_name, image_id)
    tally = Tally()
    # Cornerstone cannot combine the frame: every module throws.
    uncombinable = isinstance(expected["generalStudyModule"], OracleError)
    past_end = _past_end(case) or uncombinable
    for module_type, exp in expected.items():
        act = actual[module_type]
        tally.checked += 1
        where = f"{image_id} {module_type}"
        if past_end:
            # Divergence 2: not an image, no answer (Cornerstone throws or
            # answers with another frame's data).
            tally.divergent["2: frame past the end"] += 1
            if act is not None:
                tally.problems.append(
                    f"{where}: expected None past the end, got {act!r}"[:300]
                )
            continue
        if isinstance(act, Exception):
            if isinstance(exp, OracleError) and isinstance(act, DicomError):
                tally.equal += 1  # an error matches an error, as compare.py
            else:
                tally.problems.append(
                    f"{where}: raised {act!r}, expected {exp!r}"[:300]
                )
            continue
        if isinstance(exp, OracleError):
            # Divergence 1: no (or no text) Modality -> a non-NM image.
            tally.divergent["1: geometry without Modality"] += 1
            if module_type not in GEOMETRY or "includes" not in exp.message:
                tally.problems.append(f"{where}: unexpected oracle error {exp}")
                continue
            want = _non_nm_geometry(set_name, image_id, module_type)
            diff = differences(want, act, where)
            tally.problems.extend(diff)
            continue
        if (
            module_type == "overlayPlaneModule"
            and _overlay_groups(case["metadata"])
            and exp
        ):
            # Divergence 3: the real overlays, Cornerstone always gives [].
            tally.divergent["3: overlays"] += 1
            tally.problems.extend(_check_overlays(where, case["metadata"], exp, act))
            continue
        if module_type == "instance" and exp and act:
            overlays = actual["overlayPlaneModule"]["overlays"]
            if act.get("Overlays") != overlays:
                tally.problems.append(
                    f"{where}: Overlays differ from overlayPlaneModule"
                )
            exp = {k: v for k, v in exp.items() if k != "Overlays"}
            act = {k: v for k, v in act.items() if k != "Overlays"}
            if overlays:
                tally.divergent["3: instance.Overlays"] += 1
                diff = differences(exp, act, where)
                tally.problems.extend(diff)
                continue
        diff = differences(exp, act, where)
        if diff:
            tally.problems.extend(diff)
        else:
            tally.equal += 1
    return tally


def _check_overlays(
    where: str, metadata: dict[str, Any], exp: Any, act: Any
) -> list[str]:
    """The overlay module lists every group with OverlayData, bits or None."""
    problems: list[str] = []
    if exp != {"overlays": []}:
        problems.append(f"{where}: the oracle now reads overlays: {exp!r}")
    groups = _overlay_groups(metadata)
    if not isinstance(act, dict) or len(act.get("overlays", [])) != len(groups):
        return [
            *problems,
            f"{where}: expected {len(groups)} overlays, got {act!r}"[:300],
        ]
    for group, overlay in zip(groups, act["overlays"], strict=True):
        data = metadata[f"{group}3000"]
        if "BulkDataURI" in data and overlay["pixelData"] is not None:
            problems.append(f"{where}: pixelData of a BulkDataURI overlay is not None")
        if "InlineBinary" in data and not isinstance(overlay["pixelData"], list):
            problems.append(f"{where}: pixelData of an inline overlay is not a list")
        rows = metadata.get(f"{group}0010", {}).get("Value", [None])[0]
        numeric = isinstance(rows, (int, float)) and not isinstance(rows, bool)
        if numeric and overlay["rows"] != rows:
            problems.append(f"{where}: rows {overlay['rows']!r} != {rows!r}")
        origin = metadata.get(f"{group}0050", {}).get("Value")
        if origin and (overlay["x"] != origin[1] - 1 or overlay["y"] != origin[0] - 1):
            problems.append(f"{where}: x/y do not follow OverlayOrigin {origin}")
    return problems


def _image_ids(set_name: str) -> list[str]:
    return [c["imageId"] for c in load_cases(set_name)]


def _param(set_name: str) -> list[Any]:
    return [
        pytest.param(
            set_name,
            image_id,
            id=f"{set_name}-{i}-{_case(set_name, image_id)['source']}",
        )
        for i, image_id in enumerate(_image_ids(set_name))
    ]


@pytest.mark.parametrize(
    ("set_name", "image_id"), [p for name in SETS for p in _param(name)]
)
def test_image_matches_oracle(set_name: str, image_id: str) -> None:
    """Every module of this imageId equals Cornerstone's, or its divergent contract."""
    tally = check_image(set_name, image_id)
    assert not tally.problems, "\n".join(tally.problems[:30])
    assert tally.equal + sum(tally.divergent.values()) == tally.checked


@pytest.mark.parametrize("set_name", list(SETS))
def test_set_is_fully_equal(set_name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Outside the counted divergences, 100% of a set's outputs are equal."""
    total = Tally()
    for image_id in _image_ids(set_name):
        total.add(check_image(set_name, image_id))
    divergent = sum(total.divergent.values())
    with capsys.disabled():
        print(
            f"\nparity {set_name}: {total.checked} outputs checked, "
            f"{total.equal} equal, "
            f"{divergent} divergent {dict(total.divergent)}"
        )
    assert not total.problems
    assert total.equal == total.checked - divergent
    assert total.equal > 0


def test_sequential_run_differs_only_by_divergence_4() -> None:
    """Cornerstone's in-order run leaks frame 1's window into frame 2; ours does not."""
    sequential = load_expected("expected_synthetic.json")
    isolated = load_expected("expected_synthetic_isolated.json")
    ours = answers("synthetic")
    changed = {
        (image_id, t)
        for image_id, mods in isolated.items()
        for t, v in mods.items()
        if differences(v, sequential[image_id][t])
    }
    assert changed, "the fixtures should show the leak"
    assert {_case("synthetic", i)["source"] for i, _ in changed} == {
        "synthetic:enhanced-voi-leak"
    }
    for image_id, module_type in changed:
        assert not differences(
            isolated[image_id][module_type], ours[image_id][module_type]
        )
        assert differences(
            sequential[image_id][module_type], ours[image_id][module_type]
        )


def test_answers_do_not_depend_on_query_order() -> None:
    """Asking the frames of a multi-frame instance in reverse gives the same answers."""
    provider = DicomJsonProvider()
    cases = load_cases("synthetic")
    for case in cases:
        provider.add(case["imageId"], copy.deepcopy(case["metadata"]))
    forward = {c["imageId"]: provider.get("voiLutModule", c["imageId"]) for c in cases}
    provider2 = DicomJsonProvider()
    for case in cases:
        provider2.add(case["imageId"], copy.deepcopy(case["metadata"]))
    backward = {
        c["imageId"]: provider2.get("voiLutModule", c["imageId"])
        for c in reversed(cases)
    }
    for image_id, value in forward.items():
        assert not differences(value, backward[image_id]), image_id


def test_nan_survives_as_float() -> None:
    """A NaN Cornerstone gives (parseFloat of null) is float('nan') here."""
    ours = answers("synthetic")
    image_id = next(
        c["imageId"]
        for c in load_cases("synthetic")
        if c["source"] == "synthetic:parsefloat-corners"
    )
    value = ours[image_id]["generalSeriesModule"]["seriesNumber"]
    assert isinstance(value, float) and math.isnan(value)
