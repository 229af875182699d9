"""Tests of metastore.modules.frames: multi-frame detection, per-frame combination."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metastore.modules.frames import combine_frame, is_multiframe, number_of_frames


def el(vr: str, *values: Any) -> dict[str, Any]:
    """A DICOM JSON element."""
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def seq(*items: Any) -> dict[str, Any]:
    """A DICOM JSON sequence."""
    return {"vr": "SQ", "Value": list(items)}


def enhanced(n_items: int = 3, nframes: Any = 3) -> dict[str, Any]:
    """An instance with shared and per-frame functional groups."""
    instance: dict[str, Any] = {
        "00080060": el("CS", "MR"),
        "00281050": el("DS", 1),
        "00200032": el("DS", 9, 9, 9),
        "52009229": seq(
            {
                "00289110": seq({"00280030": el("DS", 0.5, 0.5)}),
                "00289132": seq({"00281050": el("DS", 50)}),
            }
        ),
        "52009230": seq(
            *(
                {
                    "00209113": seq({"00200032": el("DS", 0, 0, i)}),
                    **({"00289132": seq({"00281050": el("DS", 100 + i)})} if i else {}),
                }
                for i in range(n_items)
            )
        ),
    }
    if nframes is not None:
        instance["00280008"] = el("IS", nframes)
    return instance


@pytest.mark.parametrize(
    ("instance", "expected"),
    [
        ({}, False),
        ({"00280008": el("IS", 1)}, False),
        ({"00280008": el("IS", 2)}, True),
        ({"00280008": el("IS", "2")}, True),
        ({"00280008": el("IS", "0x2")}, True),
        ({"00280008": el("IS", "2abc")}, False),
        ({"00280008": el("IS")}, False),
        ({"52009230": None}, True),
        ({"52009229": el("SQ")}, True),
    ],
)
def test_is_multiframe(instance: dict[str, Any], expected: bool) -> None:
    """is_multiframe follows metaDataManager: FG keys present or NumberOfFrames > 1."""
    assert is_multiframe(instance) is expected


@pytest.mark.parametrize(
    ("instance", "expected"),
    [
        ({}, 1),
        ({"00280008": el("IS", 5)}, 5),
        ({"00280008": el("IS", "5")}, 5),
        ({"00280008": el("IS", "abc")}, 1),
        ({"00280008": el("IS", 0)}, 1),
        ({"00280008": {"vr": "IS", "Value": []}}, 1),
        (enhanced(nframes=None), 3),
        (enhanced(n_items=2, nframes=3), 3),
    ],
)
def test_number_of_frames(instance: dict[str, Any], expected: int) -> None:
    """NumberOfFrames when valid, else the per-frame item count, else 1."""
    assert number_of_frames(instance) == expected


def test_combine_precedence_per_frame_over_shared_over_instance() -> None:
    """Per-frame macro values win over shared ones, which win over the instance's."""
    instance = enhanced()
    frame2 = combine_frame(instance, 2)
    assert frame2 is not None and frame2.merged
    assert frame2.data["00200032"] == el("DS", 0, 0, 1)  # per-frame position
    assert frame2.data["00281050"] == el("DS", 101)  # per-frame window wins
    assert frame2.data["00280030"] == el("DS", 0.5, 0.5)  # shared spacing
    frame1 = combine_frame(instance, 1)
    assert frame1 is not None
    assert frame1.data["00281050"] == el("DS", 50)  # no per-frame window: shared
    assert frame1.data["52009230"] is instance["52009230"]  # sequences stay in


def test_combine_never_mutates_and_frames_are_independent() -> None:
    """Combining leaves the instance untouched; frame 1 is the same after frame 2."""
    instance = enhanced()
    before = copy.deepcopy(instance)
    first = combine_frame(instance, 1)
    combine_frame(instance, 2)
    again = combine_frame(instance, 1)
    assert instance == before
    assert first is not None and again is not None and first.data == again.data


def test_combine_frame_information_lists() -> None:
    """Frame.shared and Frame.per_frame hold the first item of each macro."""
    frame = combine_frame(enhanced(), 3)
    assert frame is not None
    assert frame.shared == [
        {"00280030": el("DS", 0.5, 0.5)},
        {"00281050": el("DS", 50)},
    ]
    assert frame.per_frame == [
        {"00200032": el("DS", 0, 0, 2)},
        {"00281050": el("DS", 102)},
    ]


def test_single_frame_is_not_merged() -> None:
    """Without functional groups or NumberOfFrames > 1 the frame is the instance."""
    instance = {"00080060": el("CS", "CT")}
    frame = combine_frame(instance, None)
    assert frame is not None and frame.data is instance and not frame.merged
    assert frame.number == 1


@pytest.mark.parametrize("frame", [0, -1, 4, 99])
def test_frames_past_the_end_are_not_images(frame: int) -> None:
    """Divergence 2: frame numbers outside 1..NumberOfFrames give None."""
    assert combine_frame(enhanced(), frame) is None


def test_frame_past_per_frame_items_is_not_an_image() -> None:
    """Divergence 2: NumberOfFrames 3 with 2 per-frame items: frame 3 is None."""
    instance = enhanced(n_items=2, nframes=3)
    assert combine_frame(instance, 2) is not None
    assert combine_frame(instance, 3) is None


def test_single_frame_instance_frame_2_is_not_an_image() -> None:
    """Divergence 2: frame 2 of a single-frame instance is not an image."""
    assert combine_frame({"00080060": el("CS", "CT")}, 2) is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda m: m["52009230"]["Value"].__setitem__(1, None),
        lambda m: m.__setitem__("52009229", el("SQ")),
        lambda m: m.__setitem__("52009229", seq()),
        lambda m: m["52009230"]["Value"][1].__setitem__("00209072", el("LO", None)),
    ],
    ids=["null-per-frame-item", "shared-no-value", "shared-empty", "null-first-value"],
)
def test_uncombinable_frame_is_not_an_image(damage: Any) -> None:
    """Where Cornerstone's combine throws, the frame is not an image (None)."""
    instance = enhanced()
    damage(instance)
    assert combine_frame(instance, 2) is None


def test_odd_functional_group_entries_are_skipped_like_cornerstone() -> None:
    """Non-sequences, empty sequences and string Values in an item are ignored."""
    instance = enhanced()
    item = instance["52009230"]["Value"][0]
    item["00209071"] = seq()
    item["00209072"] = el("LO", "not a sequence")
    item["00209073"] = {"vr": "SQ", "Value": "string"}
    frame = combine_frame(instance, 1)
    assert frame is not None
    assert frame.per_frame == [{"00200032": el("DS", 0, 0, 0)}]


def test_shared_only_instance_is_not_merged() -> None:
    """Shared groups without per-frame groups or NumberOfFrames > 1 are not applied."""
    instance = enhanced(nframes=None)
    del instance["52009230"]
    frame = combine_frame(instance, 1)
    assert frame is not None and not frame.merged and frame.data is instance


ELEMENTS = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["vr", "Value", "0", "length"]), inner, max_size=3
        )
    ),
    max_leaves=8,
)


@given(
    per_frame=ELEMENTS,
    shared=ELEMENTS,
    nframes=ELEMENTS,
    frame=st.integers(-1, 5),
)
def test_combine_frame_never_raises(
    per_frame: Any, shared: Any, nframes: Any, frame: int
) -> None:
    """Whatever the functional groups hold, combine_frame gives a Frame or None."""
    instance = {"52009230": per_frame, "52009229": shared, "00280008": nframes}
    result = combine_frame(instance, frame)
    assert result is None or result.number == frame
