"""Building :class:`~metastore.records.InstanceRecord` from one DICOM JSON instance.

Owns what the indexer extracts from an instance: its three UIDs (an instance
without them is invalid), the attributes people search by, the frame count
and, per frame, the imageId and the Cornerstone modules from
``metastore.modules.frame_modules``.  It reads DICOM JSON only (no pydicom)
and imports nothing of the store.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from metastore.attributes import (
    first_value,
    int_value,
    search_attributes,
    text_value,
)
from metastore.errors import DicomError, IndexingError
from metastore.modules import (
    MAPPING_VERSION,
    ModuleMemo,
    instance_frame_modules,
    number_of_frames,
)
from metastore.records import ImageRecord, InstanceRecord, LazyImages, Source
from metastore.types import DicomJson


class FrameNames(Protocol):
    """Names the frames of one instance: an :class:`ImageId` is one."""

    def with_frame(self, frame: int) -> str:
        """The imageId of 1-based frame ``frame``."""
        ...


#: ``(study, series, instance) -> names of its frames`` (an imageId of the
#: instance): how a source names its instances; frame N is ``.with_frame(N)``.
ImageIdFactory = Callable[[str, str, str], FrameNames]

# (tag, keyword) of the UIDs every stored instance needs.
_STUDY_UID = ("0020000D", "StudyInstanceUID")
_SERIES_UID = ("0020000E", "SeriesInstanceUID")
_SOP_INSTANCE_UID = ("00080018", "SOPInstanceUID")


def instance_uids(instance: DicomJson) -> tuple[str, str, str]:
    """Return the study, series and SOP instance UIDs of an instance.

    Raises:
        ValueError: A UID is missing, empty or not a JSON string; the
            message names the tag.
    """
    uids = []
    for tag, keyword in (_STUDY_UID, _SERIES_UID, _SOP_INSTANCE_UID):
        value = first_value(instance, tag)
        if value is not None and not isinstance(value, str):
            # A UI value is a JSON string (PS3.18 F.2.3): true or 1.5 would be
            # stored as "True" or "1.5", an identifier nobody sent.
            raise ValueError(
                f"{keyword} ({tag[:4]},{tag[4:]}) is {_json_text(value)}, not a string"
            )
        uid = text_value(instance, tag)
        if uid is None:
            raise ValueError(f"missing {keyword} ({tag[:4]},{tag[4:]})")
        uids.append(uid)
    return uids[0], uids[1], uids[2]


def uid_value(instance: DicomJson, tag: str) -> str | None:
    """An optional UID (a JSON string), or ``None`` if it is absent or not text."""
    value = first_value(instance, tag)
    return text_value(instance, tag) if isinstance(value, str) else None


def _json_text(value: Any) -> str:
    """``value`` as JSON, short, with its JSON type: ``1.5 (a JSON number)``."""
    kind = {
        bool: "boolean",
        int: "number",
        float: "number",
        dict: "object",
        list: "array",
    }
    text = json.dumps(value, default=str)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{text} (a JSON {kind.get(type(value), type(value).__name__)})"


#: The most frames one instance may have.  Every frame is one image with its
#: own rows, so a damaged (0028,0008) NumberOfFrames such as 10**9 must be
#: refused rather than indexed for hours; real instances (even whole-slide
#: images) stay well below this.  Memory does not depend on it: see
#: :data:`EAGER_FRAMES`.
MAX_FRAMES = 1_000_000

#: An instance with more image frames than this keeps its images lazy
#: (:class:`~metastore.records.LazyImages`): they are built again, a chunk at
#: a time, while the store writes them, instead of being held all at once
#: (about 10 KB a frame).  Reading still builds every frame once, to find a
#: frame that makes the instance invalid and to count the images.
EAGER_FRAMES = 1000


def _image_frames(instance: DicomJson, frames: int) -> int:
    """How many of ``frames`` can be images.

    With a (5200,9230) PerFrameFunctionalGroupsSequence, frames past its
    items are not images (divergence 2: every module is None), so they need
    not be built one by one.
    """
    per_frame = instance.get("52009230")
    items = per_frame.get("Value") if isinstance(per_frame, dict) else None
    if isinstance(items, list):
        return min(frames, len(items))
    return frames


def build_instance(
    instance: DicomJson,
    source: Source,
    image_id: ImageIdFactory,
    memo: ModuleMemo | None = None,
) -> InstanceRecord:
    """Build the record of one instance, with one image per frame.

    Frames for which ``frame_modules`` gives no answer (not an image, e.g. a
    waveform) get no image record; the instance is still stored.  A frame
    whose modules cannot be built (Cornerstone would throw, or the JSON is
    shaped so that building fails) makes the whole instance invalid: storing
    some of its frames would answer for an instance only in part.

    Args:
        instance: The instance in DICOM JSON form.
        source: Where it was read from.
        image_id: Names the instance (its frame 1).
        memo: Shared by the instances a process reads in a row: their
            study- and series-level modules are built once while their
            inputs repeat (``metastore.modules.ModuleMemo``).

    Raises:
        IndexingError: The instance lacks a UID (the reason names the tag),
            or a frame's modules cannot be built (the reason names the frame).
    """
    try:
        study, series, sop_instance = instance_uids(instance)
        base = image_id(study, series, sop_instance)
    except ValueError as exc:  # a missing UID, or one with "/"
        raise IndexingError(source.location, str(exc)) from None
    frames = number_of_frames(instance)
    last = _image_frames(instance, frames)
    if last > MAX_FRAMES:
        raise IndexingError(
            source.location,
            f"(0028,0008) NumberOfFrames {frames} is more than the {MAX_FRAMES} "
            "frames metastore indexes per instance",
        )
    lazy = last > EAGER_FRAMES
    images: list[ImageRecord] = []
    count = 0
    frame = 0
    try:
        for frame, frame_id, modules in instance_frame_modules(
            instance, base.with_frame, last, None if lazy else memo
        ):
            if modules is not None:
                count += 1
                if not lazy:
                    images.append(ImageRecord(frame_id, frame, modules))
    except (DicomError, ArithmeticError, LookupError, TypeError, ValueError) as e:
        # Hand-made JSON can break a module builder: one bad instance
        # must fail on its own (reading.py records it), not end the run.
        reason = " ".join(str(e).split()) or type(e).__name__
        if not isinstance(e, DicomError):
            reason = f"{type(e).__name__}: {reason}"
        raise IndexingError(
            source.location, f"frame {frame + 1} of {frames}: {reason}"
        ) from None
    # The store reads the same attributes again from the stored DICOM JSON
    # (metastore.attributes), so they come from one function.
    found = search_attributes(instance)
    return InstanceRecord(
        source=source,
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=sop_instance,
        sop_class_uid=uid_value(instance, "00080016"),
        patient_id=found.patient_id,
        patient_name=found.patient_name,
        study_date=found.study_date,
        study_time=found.study_time,
        accession_number=found.accession_number,
        study_description=found.study_description,
        modality=found.modality,
        series_number=found.series_number,
        series_description=found.series_description,
        instance_number=int_value(instance, "00200013"),
        number_of_frames=frames,
        dicom_json=instance,
        images=_FrameImages(instance, base, last, count) if lazy else images,
        mapping_version=MAPPING_VERSION,
    )


class _FrameImages(LazyImages):
    """The images of frames 1 to ``last`` of an instance, built when iterated.

    :func:`build_instance` has built every frame once already, so building
    them again cannot fail and gives ``count`` images.
    """

    __slots__ = ("_base", "_count", "_instance", "_last")

    def __init__(self, instance: DicomJson, base: FrameNames, last: int, count: int):
        self._instance = instance
        self._base = base
        self._last = last
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[ImageRecord]:
        for frame, image_id, modules in instance_frame_modules(
            self._instance, self._base.with_frame, self._last
        ):
            if modules is not None:
                yield ImageRecord(image_id, frame, modules)

    @property
    def first_image_id(self) -> str:
        return self._base.with_frame(1)

    def __getstate__(self) -> tuple[DicomJson, FrameNames, int, int]:
        return self._instance, self._base, self._last, self._count

    def __setstate__(self, state: tuple[DicomJson, FrameNames, int, int]) -> None:
        self._instance, self._base, self._last, self._count = state
