"""The multiframe module of the WADO-RS provider.

Owns ``multiframeModule``: NumberOfFrames and the first items of the
per-frame and shared functional groups of one frame.  Combining a frame's
functional groups is ``metastore.modules.frames``'s job; this module only
shapes the answer.  Imports only ``metastore.modules.jsvalues``,
``metastore.modules.frames``, ``metastore.errors`` and ``metastore.moduletypes``;
never pydicom or SQLAlchemy.
"""

from __future__ import annotations

from metastore.errors import DicomError
from metastore.modules.frames import (
    NUMBER_OF_FRAMES,
    PER_FRAME_FUNCTIONAL_GROUPS,
    SHARED_FUNCTIONAL_GROUPS,
    Frame,
    frame_information,
)
from metastore.modules.jsvalues import (
    UNDEFINED,
    get_tag_value,
    js_json,
    js_to_number,
    js_truthy,
)
from metastore.moduletypes import MultiframeModule


def multiframe_module(frame: Frame, image_id: str) -> MultiframeModule:
    """``multiframeModule``: NumberOfFrames and the functional-group items.

    Args:
        frame: The frame to read.
        image_id: The imageId asked about (unused).

    Returns:
        ``{"NumberOfFrames"}`` (``getTagValue``: the first value if truthy,
        else the ``Value`` array, else the element itself), plus
        ``PerFrameFunctionalInformation`` and ``SharedFunctionalInformation``
        (first items of each macro, raw DICOM JSON) when functional groups
        apply.
    """
    data = frame.data
    # Cornerstone quirk: getTagValue, so NumberOfFrames 0 gives [0] and an
    # element without Value gives the element itself
    count = get_tag_value(data.get(NUMBER_OF_FRAMES, UNDEFINED))
    per_frame_groups = get_tag_value(
        data.get(PER_FRAME_FUNCTIONAL_GROUPS, UNDEFINED), False
    )
    number_of_frames = None if count is UNDEFINED else js_json(count)
    if js_truthy(per_frame_groups) or js_to_number(count) > 1:
        shared_groups = get_tag_value(
            data.get(SHARED_FUNCTIONAL_GROUPS, UNDEFINED), False
        )
        try:
            shared, per_frame = frame_information(
                per_frame_groups, shared_groups, frame.number
            )
        except TypeError as exc:  # pragma: no cover - combine_frame failed first
            raise DicomError(f"Cornerstone raises TypeError: {exc}") from exc
        return {
            "NumberOfFrames": number_of_frames,
            "PerFrameFunctionalInformation": [js_json(item) for item in per_frame],
            "SharedFunctionalInformation": [js_json(item) for item in shared],
        }
    return {"NumberOfFrames": number_of_frames}
