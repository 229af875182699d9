"""Study- and series-level modules built once while their inputs repeat (ModuleMemo).

The indexer builds the :data:`metastore.modules.MODULE_INPUTS` types once per
run of equal inputs.  That is exact only if each builder reads nothing but
its declared keys of the frame's data: checked on every oracle case with a
dict that records what is read, and a frame whose number, functional groups,
instance and imageId are all changed.  Then every oracle case set goes
through ``instance_frame_modules`` with one memo (in order, twice, and
backwards) and without: the same values, types and key order included.
The series-level types are compared all at once while a series runs on,
and a frame whose building fails is never the one compared with.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from oracle_fixtures import load_cases

from metastore.modules import (
    _BUILDERS,
    MODULE_INPUTS,
    Frame,
    ModuleMemo,
    combine_frame,
    instance_frame_modules,
    number_of_frames,
)

SETS = ("pydicom_testdata", "synthetic", "extra", "fuzz")
IMAGE_ID = "wadors:http://x/studies/1/series/2/instances/3/frames/1"


class Reads(dict[str, Any]):
    """A frame's data that remembers which keys were read."""

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        self.read.add("*every key*")
        return super().__iter__()

    def keys(self) -> Any:
        self.read.add("*every key*")
        return super().keys()

    def items(self) -> Any:
        self.read.add("*every key*")
        return super().items()

    def values(self) -> Any:
        self.read.add("*every key*")
        return super().values()


def _strict(value: Any) -> str:
    """Type-strict text (1, 1.0 and true differ; NaN is NaN), keys in order."""
    return json.dumps(value, default=repr)


def _outcome(build: Any, frame: Frame, image_id: str) -> str:
    try:
        return _strict(build(frame, image_id))
    except Exception as exc:
        return f"raises {type(exc).__name__}: {exc}"


def _frames(metadata: dict[str, Any]) -> Iterator[Frame]:
    for number in range(1, min(number_of_frames(metadata), 3) + 1):
        frame = combine_frame(metadata, number)
        if frame is not None:
            yield frame


@pytest.mark.parametrize("set_name", SETS)
def test_builders_read_only_their_declared_inputs(set_name: str) -> None:
    """Each memoised builder reads its declared keys, and nothing else of the frame."""
    checked = 0
    for case in load_cases(set_name):
        for frame in _frames(case["metadata"]):
            for module_type, inputs in MODULE_INPUTS.items():
                build = _BUILDERS[module_type]
                expected = _outcome(build, frame, IMAGE_ID)
                data = Reads(frame.data)
                other = Frame(
                    instance={},
                    data=data,
                    number=frame.number + 1000,
                    shared=[{"00280030": {"vr": "DS", "Value": [9]}}],
                    per_frame=[None],
                    merged=not frame.merged,
                )
                assert _outcome(build, other, "wadouri:elsewhere") == expected, (
                    module_type,
                    case["imageId"],
                )
                assert data.read <= set(inputs), (module_type, data.read - set(inputs))
                checked += 1
    assert checked > 100


@pytest.mark.parametrize("set_name", SETS)
def test_a_memo_gives_what_building_gives(set_name: str) -> None:
    """Every case set, in order, twice, and backwards: the same with a memo."""
    cases = load_cases(set_name)
    memo = ModuleMemo()
    reused = 0
    for case in [*cases, *cases, *reversed(cases)]:
        metadata = case["metadata"]
        last = min(number_of_frames(metadata), 3)

        def image_ids(n: int, image_id: str = case["imageId"]) -> str:
            return f"{image_id}#{n}"

        try:
            plain = list(instance_frame_modules(metadata, image_ids, last))
        except Exception as exc:
            with pytest.raises(type(exc)):
                list(instance_frame_modules(metadata, image_ids, last, memo))
            continue
        memoised = list(instance_frame_modules(metadata, image_ids, last, memo))
        assert _strict(memoised) == _strict(plain), case["imageId"]
        for (_, _, ours), (_, _, theirs) in zip(memoised, plain, strict=True):
            if ours is not None and theirs is not None:
                reused += sum(ours[t] is not theirs[t] for t in MODULE_INPUTS)
    assert reused > 0


def _instance(**elements: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
        "00080018": {"vr": "UI", "Value": ["1.2.3.4"]},
        "00080060": {"vr": "CS", "Value": ["CT"]},
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "0020000E": {"vr": "UI", "Value": ["1.2.3.1"]},
        "00280010": {"vr": "US", "Value": [64]},
        "00280011": {"vr": "US", "Value": [64]},
    }
    base.update({k: v for k, v in elements.items() if v is not None})
    for key, value in elements.items():
        if value is None:
            base.pop(key, None)
    return base


#: Inputs JSON tells apart that Python's == does not, or barely does.
LOOKALIKES: list[tuple[str, list[Any]]] = [
    ("00200011", [{"vr": "IS", "Value": [1]}, {"vr": "IS", "Value": [1.0]}]),
    ("00200011", [{"vr": "IS", "Value": [True]}, {"vr": "IS", "Value": [1]}]),
    ("00281053", [{"vr": "DS", "Value": [0.0]}, {"vr": "DS", "Value": [-0.0]}]),
    ("00281053", [{"vr": "DS", "Value": [math.nan]}, {"vr": "DS", "Value": [None]}]),
    ("00281052", [{"vr": "DS", "Value": [math.inf]}, {"vr": "DS", "Value": [None]}]),
    ("00081030", [{"vr": "LO", "Value": ["a"]}, {"vr": "LO", "Value": ["a "]}]),
    ("00080060", [{"vr": "CS", "Value": ["US"]}, {"vr": "CS", "Value": [["US"]]}]),
    ("00100010", [{"vr": "PN"}, None]),
    ("00100010", [{"vr": "PN", "Value": [{"Alphabetic": "A"}]}, None]),
    ("00020010", [{"vr": "UI", "Value": [""]}, {"vr": "UI", "Value": []}]),
]


@pytest.mark.parametrize(("key", "values"), LOOKALIKES)
def test_a_memo_tells_apart_what_json_tells_apart(key: str, values: list[Any]) -> None:
    """Alternating inputs that compare equal in Python: each gets its own value."""
    memo = ModuleMemo()
    for value in [*values, *values, *reversed(values)]:
        instance = _instance(**{key: value})
        plain = list(instance_frame_modules(instance, lambda n: IMAGE_ID, 1))
        memoised = list(instance_frame_modules(instance, lambda n: IMAGE_ID, 1, memo))
        assert _strict(memoised) == _strict(plain), value


def test_a_memo_tells_which_key_holds_a_value() -> None:
    """The same element under another input key is another input."""
    memo = ModuleMemo()
    element = {"vr": "LO", "Value": ["A1"]}
    description = _instance(**{"00081030": element})  # (0008,1030) StudyDescription
    accession = _instance(**{"00080050": element})  # (0008,0050) AccessionNumber
    for instance in (description, accession, description):
        plain = list(instance_frame_modules(instance, lambda n: IMAGE_ID, 1))
        memoised = list(instance_frame_modules(instance, lambda n: IMAGE_ID, 1, memo))
        assert _strict(memoised) == _strict(plain)


def _series_run() -> list[dict[str, Any]]:
    """Instances of one series: image-level elements change, series-level ones not."""
    run = []
    for n in range(1, 5):
        run.append(
            _instance(
                **{
                    "00080018": {"vr": "UI", "Value": [f"1.2.3.4.{n}"]},
                    "00200032": {"vr": "DS", "Value": [0.0, 0.0, float(n)]},
                    # (0028,1050) WindowCenter changes every other image
                    "00281050": {"vr": "DS", "Value": [40.0 + n // 2]},
                    "00281051": {"vr": "DS", "Value": [400.0]},
                    "00081030": {"vr": "LO", "Value": ["CHEST"]},
                }
            )
        )
    return run


def test_series_level_values_are_handed_out_while_all_their_inputs_repeat() -> None:
    """One comparison of all series-level inputs: the same objects as building once."""
    memo = ModuleMemo()
    values = []
    for instance in _series_run():
        plain = list(instance_frame_modules(instance, lambda n: IMAGE_ID, 1))
        memoised = list(instance_frame_modules(instance, lambda n: IMAGE_ID, 1, memo))
        assert _strict(memoised) == _strict(plain)
        values.append(memoised[0][2])
    first, *rest = values
    assert first is not None
    for later in rest:
        assert later is not None
        for module_type in ("generalStudyModule", "imagePixelModule", "cineModule"):
            assert later[module_type] is first[module_type]
        assert later["sopCommonModule"] is not first["sopCommonModule"]
    # compared on its own: equal for images 2 and 3, not for 1 and 2
    assert values[2]["voiLutModule"] is values[1]["voiLutModule"]
    assert values[1]["voiLutModule"] is not values[0]["voiLutModule"]


def test_a_frame_that_fails_half_way_is_never_compared_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A frame that raises after some series-level modules were built is no reference.

    Its study differs from the frames around it, and its building fails
    after generalStudyModule was built (and memoised) for it: the next
    frame, whose series-level inputs equal the frame before, must not get
    the failed frame's study.
    """
    import metastore.modules as modules

    def fails_on_other(frame: Frame, image_id: str) -> Any:
        if "OTHER" in json.dumps(frame.data.get("00081030")):
            raise ValueError("a builder fails")
        return None

    # (generalImageModule, never memoised, comes after generalStudyModule)
    monkeypatch.setitem(modules._BUILDERS, "generalImageModule", fails_on_other)
    study = "00081030"  # (0008,1030) StudyDescription
    first = _instance(**{study: {"vr": "LO", "Value": ["CHEST"]}})
    other = _instance(**{study: {"vr": "LO", "Value": ["OTHER"]}})
    memo = ModuleMemo()
    for instance in (first, first):
        list(instance_frame_modules(instance, lambda n: IMAGE_ID, 1, memo))
    with pytest.raises(ValueError):
        list(instance_frame_modules(other, lambda n: IMAGE_ID, 1, memo))
    [(_, _, again)] = instance_frame_modules(first, lambda n: IMAGE_ID, 1, memo)
    assert again is not None
    assert again["generalStudyModule"]["studyDescription"] == "CHEST"
