"""Multi-frame handling: which instances are multi-frame and what one frame sees.

This module owns Cornerstone's WADO-RS frame logic (``metaDataManager``'s
``isMultiframe`` and ``combineFrameInstance``): a frame is the instance, then
the first item of every Shared Functional Groups macro, then the first item of
every macro of that frame's Per-Frame Functional Groups item.  Unlike
Cornerstone it never mutates the stored instance, so no frame depends on
another (divergence 4).  It imports only ``metastore.modules.jsvalues`` and
``metastore.types``; never pydicom or SQLAlchemy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from metastore.modules.jsvalues import (
    UNDEFINED,
    get_number_value,
    get_tag_value,
    js_entries,
    js_get,
    js_index,
    js_to_number,
    js_truthy,
    js_values,
    raw_value,
)
from metastore.types import JSON, DicomJson

__all__ = [
    "Frame",
    "combine_frame",
    "frame_information",
    "frames_alike",
    "is_multiframe",
    "number_of_frames",
]

# (5200,9230) PerFrameFunctionalGroupsSequence
PER_FRAME_FUNCTIONAL_GROUPS = "52009230"
# (5200,9229) SharedFunctionalGroupsSequence
SHARED_FUNCTIONAL_GROUPS = "52009229"
# (0028,0008) NumberOfFrames
NUMBER_OF_FRAMES = "00280008"


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame of an instance, as Cornerstone's providers read it.

    Attributes:
        instance: The stored instance (never modified).
        data: The instance with this frame's functional-group items merged
            over it; the instance object itself when nothing is merged.
        number: The 1-based frame number.
        shared: The first item of each Shared Functional Groups macro
            (``multiframeModule.SharedFunctionalInformation``).
        per_frame: The first item of each of this frame's Per-Frame macros
            (``multiframeModule.PerFrameFunctionalInformation``).
        merged: Whether functional groups apply (Cornerstone's combine
            condition: a Per-Frame sequence or NumberOfFrames > 1).
    """

    instance: DicomJson
    data: DicomJson
    number: int
    shared: list[JSON]
    per_frame: list[JSON]
    merged: bool


def is_multiframe(instance: DicomJson) -> bool:
    """Cornerstone ``metaDataManager``'s ``isMultiframe``.

    Args:
        instance: A DICOM JSON instance.

    Returns:
        True when (5200,9230) or (5200,9229) is present (with any value), or
        the first (0028,0008) NumberOfFrames value is truthy and > 1.
    """
    if PER_FRAME_FUNCTIONAL_GROUPS in instance or SHARED_FUNCTIONAL_GROUPS in instance:
        return True
    count = raw_value(instance.get(NUMBER_OF_FRAMES))
    # Cornerstone quirk: `n && n > 1` compares with JS ToNumber, so "2" and
    # "0x2" are multi-frame while "2abc" is not.
    return js_truthy(count) and js_to_number(count) > 1


def number_of_frames(instance: DicomJson) -> int:
    """How many frames the instance claims.

    (0028,0008) NumberOfFrames when it reads (JS ``parseFloat``) as a finite
    number >= 1 (rounded down); else the length of (5200,9230)
    PerFrameFunctionalGroupsSequence when that is a non-empty array; else 1.
    Frames up to this number can still be "not an image" when the per-frame
    sequence is shorter (see :func:`combine_frame`).

    Args:
        instance: A DICOM JSON instance.

    Returns:
        The frame count, at least 1.
    """
    count = get_number_value(instance.get(NUMBER_OF_FRAMES))
    if count is not None and math.isfinite(count) and count >= 1:
        return int(count)
    per_frame = instance.get(PER_FRAME_FUNCTIONAL_GROUPS)
    values = per_frame.get("Value") if isinstance(per_frame, dict) else None
    if isinstance(values, list) and values:
        return len(values)
    return 1


def frames_alike(data: DicomJson) -> bool:
    """Whether every frame of ``data`` combines to the same view but its number.

    True when (5200,9230) PerFrameFunctionalGroupsSequence, read as
    Cornerstone reads it (``getTagValue(..., false)``), is falsy: then every
    frame merges the same shared items over the instance, and only the frame
    number (and the imageId) tells two frames apart.

    Args:
        data: A DICOM JSON instance, or a frame's combined data.
    """
    per_frame_groups = get_tag_value(
        data.get(PER_FRAME_FUNCTIONAL_GROUPS, UNDEFINED), False
    )
    return not js_truthy(per_frame_groups)


def _first_items(item: JSON) -> list[JSON]:
    """The first item of every macro sequence in one functional-group item.

    Mirrors ``Object.values(item).map(it => it.Value?.[0]).filter(object)``:
    non-sequences and empty sequences drop out; arrays and null stay in.

    Raises:
        TypeError: Where Cornerstone throws (a null or missing item, a null
            element).
    """
    firsts: list[JSON] = []
    for element in js_values(item):
        values = js_get(element, "Value")
        if values is None or values is UNDEFINED:
            continue  # `it.Value?.[0]` short-circuits to undefined
        first = js_index(values, 0)
        if first is UNDEFINED:
            continue
        # typeof first === 'object': dicts, arrays and null
        if first is None or isinstance(first, (dict, list)):
            firsts.append(first)
    return firsts


def frame_information(
    per_frame_groups: JSON, shared_groups: JSON, frame: int
) -> tuple[list[JSON], list[JSON]]:
    """Cornerstone ``getFrameInformation``: the macro items of one frame.

    Args:
        per_frame_groups: ``getTagValue(PerFrameFunctionalGroupsSequence, false)``.
        shared_groups: ``getTagValue(SharedFunctionalGroupsSequence, false)``.
        frame: The 1-based frame number.

    Returns:
        ``(shared, per_frame)`` lists of first macro items.

    Raises:
        TypeError: Where Cornerstone throws: no shared item 0 while the shared
            sequence is truthy, no per-frame item ``frame - 1``, null items.
    """
    shared = (
        _first_items(js_index(shared_groups, 0)) if js_truthy(shared_groups) else []
    )
    if js_truthy(per_frame_groups):
        per_frame = _first_items(js_index(per_frame_groups, frame - 1))
    else:
        per_frame = []
    return shared, per_frame


def combine_frame(instance: DicomJson, frame: int | None = None) -> Frame | None:
    """The view of one frame, as ``metaDataManager.get`` builds it.

    Args:
        instance: The instance as added under frame 1 (not modified).
        frame: The 1-based frame number; ``None`` means 1.

    Returns:
        The :class:`Frame`, or ``None`` when this frame is not an image: a
        frame number below 1 or past :func:`number_of_frames`, or a frame
        whose functional groups Cornerstone cannot combine (a missing or null
        per-frame item, an empty shared sequence, a null macro item).
        Cornerstone throws a TypeError for every module of such a frame;
        metastore answers nothing (divergence 2).
    """
    number = 1 if frame is None else frame
    # Divergence 2: frames past the end are not images (Cornerstone throws
    # for a frame past the per-frame items, and answers a single-frame
    # instance's frame 2 with frame 1's data).
    if number < 1 or number > number_of_frames(instance):
        return None
    per_frame_groups = get_tag_value(
        instance.get(PER_FRAME_FUNCTIONAL_GROUPS, UNDEFINED), False
    )
    count = get_tag_value(instance.get(NUMBER_OF_FRAMES, UNDEFINED))
    if not (js_truthy(per_frame_groups) or js_to_number(count) > 1):
        return Frame(instance, instance, number, [], [], merged=False)
    shared_groups = get_tag_value(
        instance.get(SHARED_FUNCTIONAL_GROUPS, UNDEFINED), False
    )
    try:
        shared, per_frame = frame_information(per_frame_groups, shared_groups, number)
        # Divergence 4: merge into a copy; Cornerstone writes into the stored
        # instance, so later frames inherit earlier frames' keys.
        data = dict(instance)
        for item in (*shared, *per_frame):
            # Per-frame values overwrite shared ones, which overwrite the
            # instance's; the macro sequences themselves stay in.
            data.update(js_entries(item))
    except TypeError:
        return None  # Divergence 2: Cornerstone throws for this frame
    return Frame(instance, data, number, shared, per_frame, merged=True)
