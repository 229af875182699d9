"""DICOM JSON -> Cornerstone module values, one frame at a time.

This package owns the mapping of Cornerstone's WADO-RS metadata provider
(``@cornerstonejs/dicom-image-loader`` 5.14.0): :data:`MODULE_TYPES`,
:func:`build_module` for one type and :func:`frame_modules` for every type of
one frame (the indexer's hot path).  Values equal the real provider's except
the four documented divergences (docs/mapping.md).  Each builder returns the
``TypedDict`` of its type (``metastore.moduletypes``).  This module is the
package's only door: it also exports what the DICOM JSON provider and the
indexer need of the rooms (frames combined once, the frame count,
``multiframeModule``, JavaScript ``parseInt``, the camel-tag spellings).  It
imports ``metastore.errors``, ``metastore.moduletypes`` and
``metastore.types`` only; never pydicom or SQLAlchemy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import cast

from metastore.modules.camel import to_lower_camel_tag, to_upper_camel_tag
from metastore.modules.cine import cine_module
from metastore.modules.frames import (
    Frame,
    combine_frame,
    frames_alike,
    is_multiframe,
    number_of_frames,
)
from metastore.modules.instance import instance_module
from metastore.modules.jsvalues import parse_int
from metastore.modules.lut import modality_lut_module, voi_lut_module
from metastore.modules.multiframe import multiframe_module
from metastore.modules.overlay import overlay_plane_module
from metastore.modules.patient import patient_module, patient_study_module
from metastore.modules.pet import (
    pet_image_module,
    pet_isotope_module,
    pet_series_module,
)
from metastore.modules.pixel import image_pixel_module
from metastore.modules.plane import image_plane_module, nm_multiframe_geometry_module
from metastore.modules.sop import (
    image_url_module,
    sop_common_module,
    transfer_syntax_module,
)
from metastore.modules.study import (
    general_image_module,
    general_series_module,
    general_study_module,
)
from metastore.modules.ultrasound import (
    calibration_module,
    ultrasound_enhanced_region_module,
)
from metastore.moduletypes import FrameModules, ModuleAnswer, ModuleType, typed_lookup
from metastore.types import DicomJson, ModuleValue

__all__ = [
    "ANSWERED_TYPES",
    "MAPPING_VERSION",
    "MODULE_INPUTS",
    "MODULE_TYPES",
    "Builder",
    "Frame",
    "ModuleMemo",
    "build_module",
    "combine_frame",
    "frame_modules",
    "instance_frame_modules",
    "is_multiframe",
    "module_from_frame",
    "multiframe_module",
    "number_of_frames",
    "parse_int",
    "to_lower_camel_tag",
    "to_upper_camel_tag",
]

#: The identity of this mapping: every stored instance records the version
#: whose answers it holds (``instances.mapping_version``), and ``metastore
#: reindex`` recomputes the instances stored by any other.  Move it with
#: every change that alters an answer, and only then: the Cornerstone
#: version, then a revision.  ``tests/test_mapping_version.py`` fails when
#: the answers over the fixture corpus change while it stays put (record
#: the new digest with ``scripts/mapping_digest.py --update``).
MAPPING_VERSION = "5.14-1"

#: A module builder: ``(frame, image_id) -> value``.
Builder = Callable[[Frame, str], ModuleAnswer | None]

#: Every module type the oracle queries, in its order (``ModuleType`` values).
MODULE_TYPES: tuple[str, ...] = tuple(t.value for t in ModuleType)

_BUILDERS: dict[str, Builder] = {
    ModuleType.GENERAL_STUDY: general_study_module,
    ModuleType.GENERAL_SERIES: general_series_module,
    ModuleType.GENERAL_IMAGE: general_image_module,
    ModuleType.PATIENT: patient_module,
    ModuleType.PATIENT_STUDY: patient_study_module,
    ModuleType.NM_MULTIFRAME_GEOMETRY: nm_multiframe_geometry_module,
    ModuleType.IMAGE_PLANE: image_plane_module,
    ModuleType.IMAGE_PIXEL: image_pixel_module,
    ModuleType.VOI_LUT: voi_lut_module,
    ModuleType.MODALITY_LUT: modality_lut_module,
    ModuleType.SOP_COMMON: sop_common_module,
    ModuleType.PET_ISOTOPE: pet_isotope_module,
    ModuleType.PET_SERIES: pet_series_module,
    ModuleType.PET_IMAGE: pet_image_module,
    ModuleType.OVERLAY_PLANE: overlay_plane_module,
    ModuleType.TRANSFER_SYNTAX: transfer_syntax_module,
    ModuleType.MULTIFRAME: multiframe_module,
    ModuleType.ULTRASOUND_ENHANCED_REGION: ultrasound_enhanced_region_module,
    ModuleType.CALIBRATION: calibration_module,
    ModuleType.IMAGE_URL: image_url_module,
    ModuleType.CINE: cine_module,
    ModuleType.INSTANCE: instance_module,
}
# Plain-str keys, so lookups by a str hash the same way.
_BUILDERS = {str(k): v for k, v in _BUILDERS.items()}

#: The types the WADO-RS provider answers (the others are always ``None``).
ANSWERED_TYPES: frozenset[str] = frozenset(_BUILDERS)


def module_from_frame(
    module_type: str,
    frame: Frame,
    image_id: str,
    computed: Mapping[str, ModuleValue] | None = None,
) -> ModuleAnswer | None:
    """One module of an already combined frame.

    Args:
        module_type: A module type string.
        frame: The frame, from :func:`metastore.modules.frames.combine_frame`.
        image_id: The imageId asked about (``imageUrlModule`` uses it).
        computed: For ``instance``: sub-module values to reuse.

    Returns:
        The module value; ``None`` for a type the provider does not answer.

    Raises:
        DicomError: Where Cornerstone throws and no divergence applies (a null
            RadiopharmaceuticalInformationSequence or ultrasound region item).
    """
    if module_type == ModuleType.INSTANCE:
        return instance_module(frame, image_id, computed)
    builder = _BUILDERS.get(module_type)
    if builder is None:
        return None
    return builder(frame, image_id)


@typed_lookup
def build_module(
    module_type: str, instance: DicomJson, image_id: str, frame: int | None
) -> ModuleAnswer | None:
    """One module value for one frame of a stored instance.

    Typed per module type (``metastore.moduletypes.ModuleLookup``):
    ``build_module("imagePlaneModule", ...)`` is an ``ImagePlaneModule |
    None`` to a type checker; a name outside ``ModuleTypeName`` is a type
    error (at run time it gives ``None``).

    Args:
        module_type: A module type string (``"imagePlaneModule"``...).
        instance: The whole instance's DICOM JSON (as added under frame 1).
        image_id: The imageId asked about.
        frame: The 1-based frame number; ``None`` means 1.

    Returns:
        The value as Cornerstone's WADO-RS provider gives it, modulo the four
        divergences; ``None`` for a type the provider does not answer, an
        unknown type, or a frame that is not an image (divergence 2).

    Raises:
        DicomError: Where Cornerstone throws and no divergence applies (a null
            RadiopharmaceuticalInformationSequence or ultrasound region item).
    """
    builder = _BUILDERS.get(module_type)
    if builder is None:
        return None
    combined = combine_frame(instance, frame)
    if combined is None:
        return None
    return builder(combined, image_id)


def frame_modules(
    instance: DicomJson, image_id: str, frame: int | None
) -> FrameModules | None:
    """Every module type of :data:`MODULE_TYPES` for one frame.

    The frame is combined once and shared by all types; ``instance`` reuses
    the twelve sub-modules already built.  Values may share list and dict
    objects with each other and with ``instance`` (the input): treat them as
    read-only.

    Args:
        instance: The whole instance's DICOM JSON (as added under frame 1).
        image_id: The imageId of this frame.
        frame: The 1-based frame number; ``None`` means 1.

    Returns:
        ``{module type: value}`` with every type of :data:`MODULE_TYPES`
        (``None`` for the unanswered ones), or ``None`` when the frame is not
        an image (divergence 2).

    Raises:
        DicomError: When one of the modules would make Cornerstone throw (see
            :func:`build_module`).
    """
    combined = combine_frame(instance, frame)
    if combined is None:
        return None
    return _modules_of(combined, image_id)


def _modules_of(
    combined: Frame, image_id: str, memo: ModuleMemo | None = None
) -> FrameModules:
    """Every module type of one combined frame (:func:`frame_modules`)."""
    out: dict[str, ModuleAnswer | None] = {}
    # the values the memo knows already (its series-level types, when their
    # inputs repeat the last frame's)
    known = _NOTHING if memo is None else memo.begin(combined)
    # MODULE_TYPES and _BUILDERS are read on every call, not planned once:
    # tests/test_mapping_version.py swaps builders and types in and out to
    # show that the mapping's digest follows every answer
    inputs = MODULE_INPUTS
    for module_type in MODULE_TYPES:
        builder = _BUILDERS.get(module_type)
        if builder is None:
            out[module_type] = None
        elif module_type in known:
            out[module_type] = known[module_type]
        elif module_type == ModuleType.INSTANCE:
            out[module_type] = instance_module(combined, image_id, out)
        elif memo is not None and module_type in inputs:
            out[module_type] = memo.build(module_type, builder, combined, image_id)
        else:
            out[module_type] = builder(combined, image_id)
    if memo is not None:
        memo.end()
    # Every key of MODULE_TYPES, each from its own builder (a test checks it)
    return cast("FrameModules", out)


#: Module types whose value is a function of these keys of the frame's
#: (combined) DICOM JSON alone: not of the frame number, the functional
#: group items, the imageId, nor any other key.  ``tests/test_module_memo.py``
#: checks each builder against its list on every oracle case.  These are
#: the study-, series- and equipment-level modules, equal for most
#: instances of a series.
MODULE_INPUTS: dict[str, tuple[str, ...]] = {
    # (0008,1030) (0008,0020) (0008,0030) (0008,0050)
    "generalStudyModule": ("00081030", "00080020", "00080030", "00080050"),
    # (0008,0060) (0020,000E) (0008,103E) (0020,0011) (0020,000D)
    # (0008,0021) (0008,0031) (0008,0022) (0008,0032)
    "generalSeriesModule": (
        "00080060",
        "0020000E",
        "0008103E",
        "00200011",
        "0020000D",
        "00080021",
        "00080031",
        "00080022",
        "00080032",
    ),
    # (0010,0020) PatientID, (0010,0010) PatientName
    "patientModule": ("00100020", "00100010"),
    # (0010,1010) (0010,1020) (0010,0040) (0010,1030)
    "patientStudyModule": ("00101010", "00101020", "00100040", "00101030"),
    # (0028,0002) ... (0028,1203): the pixel description and palettes
    "imagePixelModule": (
        "00280002",
        "00280004",
        "00280010",
        "00280011",
        "00280100",
        "00280101",
        "00280102",
        "00280103",
        "00280006",
        "00280034",
        "00280106",
        "00280107",
        "00281101",
        "00281102",
        "00281103",
        "00281201",
        "00281202",
        "00281203",
    ),
    # (0028,1050) WindowCenter, (0028,1051) WindowWidth, (0028,1056)
    "voiLutModule": ("00281050", "00281051", "00281056"),
    # (0028,1052) RescaleIntercept, (0028,1053) RescaleSlope, (0028,1054)
    "modalityLutModule": ("00281052", "00281053", "00281054"),
    # (0054,0016) RadiopharmaceuticalInformationSequence
    "petIsotopeModule": ("00540016",),
    # (0028,0051) CorrectedImage, (0054,1001) Units, (0054,1102)
    "petSeriesModule": ("00280051", "00541001", "00541102"),
    # (0002,0010) TransferSyntaxUID, (0008,3002) AvailableTransferSyntaxUID
    "transferSyntax": ("00020010", "00083002"),
    # (0018,6011) SequenceOfUltrasoundRegions
    "ultrasoundEnhancedRegionModule": ("00186011",),
    # (0008,0060) Modality and (0018,6011)
    "calibrationModule": ("00080060", "00186011"),
    # (0018,0040) CineRate, (0028,0008) NumberOfFrames
    "cineModule": ("00180040", "00280008"),
}


#: The :data:`MODULE_INPUTS` types whose inputs usually stay the same for a
#: whole series (study, patient, pixel description, isotope...).  The others
#: read elements that often change from one image to the next: acquisition
#: date and time, window, rescale.
_SERIES_TYPES = (
    "generalStudyModule",
    "patientModule",
    "patientStudyModule",
    "imagePixelModule",
    "petIsotopeModule",
    "petSeriesModule",
    "transferSyntax",
    "ultrasoundEnhancedRegionModule",
    "calibrationModule",
    "cineModule",
)
#: Every input of the :data:`_SERIES_TYPES`, each once.
_SERIES_INPUTS = tuple(
    dict.fromkeys(key for name in _SERIES_TYPES for key in MODULE_INPUTS[name])
)


class ModuleMemo:
    """The last value of each :data:`MODULE_INPUTS` type, while its inputs repeat.

    The instances of a series repeat their study, series, patient and pixel
    description elements; building those modules once per run of equal
    inputs (and handing out the same value object, which the store's
    encoding then meets again) saves the indexer's workers most of their
    module building.  One per reading process: it keeps one value per
    module type.

    Inputs are equal when they are the same JSON to the byte: orjson's text
    of the elements (keys in order, ``1`` apart from ``1.0`` and ``true``)
    and which keys are present.  Anything that text could not tell apart
    is built afresh every time: a ``null`` (a JSON null, NaN or infinity),
    a subclass of a JSON type, or anything orjson refuses.  Inputs are DICOM
    JSON as parsed from text or made by ``metastore.dicomjson`` (lists, not
    tuples).

    Each frame starts with :meth:`begin` and ends with :meth:`end`.
    :meth:`begin` compares the inputs of all :data:`_SERIES_TYPES` at once
    with those of the last frame that ended (one text of them all, keyed by
    tag): when they are equal, so are each type's, and their last values
    are handed out without comparing them one by one.
    """

    __slots__ = ("_dumps", "_last", "_next", "_series")

    def __init__(self) -> None:
        # imported here: only the indexer makes memos, and orjson takes
        # ~20 ms to import (the registry and providers import this module)
        import orjson

        self._dumps = functools.partial(
            orjson.dumps, option=orjson.OPT_PASSTHROUGH_SUBCLASS
        )
        self._last: dict[str, tuple[tuple[int, bytes], ModuleAnswer | None]] = {}
        #: The text of the :data:`_SERIES_INPUTS` of the last frame that ended
        #: (``None``: none to compare with), and of this frame.
        self._series: bytes | None = None
        self._next: bytes | None = None

    def begin(self, frame: Frame) -> Mapping[str, ModuleAnswer | None]:
        """Start a frame: compare its series-level inputs with the last frame's.

        Returns:
            The values of the :data:`_SERIES_TYPES` when their inputs are
            the last frame's (the values :meth:`build` would give); else
            nothing.
        """
        data = frame.data
        try:
            text: bytes | None = self._dumps(
                {key: data[key] for key in _SERIES_INPUTS if key in data}
            )
        except TypeError:  # a subclass, a big int...: no text to compare
            text = None
        if text is not None and b"null" in text:
            text = None  # null, NaN and infinities all read null
        same = text is not None and text == self._series
        # Until end(): a frame whose building fails half-way may have
        # changed some of the last values.
        self._series = None
        self._next = text
        if not same:
            return _NOTHING
        # Their inputs are those of the last frame that ended, where they
        # went through build()'s comparison (no null, no subclass: the text
        # of them all had none) and their values were kept.
        last = self._last
        return {name: last[name][1] for name in _SERIES_TYPES}

    def end(self) -> None:
        """End a frame whose modules were all built."""
        self._series = self._next

    def build(
        self, module_type: str, builder: Builder, frame: Frame, image_id: str
    ) -> ModuleAnswer | None:
        """``builder(frame, image_id)``, or the last value if its inputs are equal."""
        get = frame.data.get
        values = []
        present = 0
        bit = 1
        for key in MODULE_INPUTS[module_type]:
            value = get(key, _ABSENT)
            if value is not _ABSENT:
                values.append(value)
                present |= bit
            bit <<= 1
        try:
            text = self._dumps(values)
        except TypeError:  # a subclass, a big int...: no text to compare
            return builder(frame, image_id)
        if b"null" in text:  # null, NaN and infinities all read null
            return builder(frame, image_id)
        inputs = (present, text)
        last = self._last.get(module_type)
        if last is not None and last[0] == inputs:
            return last[1]
        value = builder(frame, image_id)
        self._last[module_type] = (inputs, value)
        return value


_ABSENT = object()
_NOTHING: Mapping[str, ModuleAnswer | None] = {}


def instance_frame_modules(
    instance: DicomJson,
    image_ids: Callable[[int], str],
    last: int,
    memo: ModuleMemo | None = None,
) -> Iterator[tuple[int, str, FrameModules | None]]:
    """:func:`frame_modules` of frames 1 to ``last``, one frame at a time.

    Equal, frame for frame, to ``frame_modules(instance, image_ids(n), n)``,
    only faster when the frames are alike (no per-frame functional groups,
    as in a whole-slide image of 10^5 tiles or a cine loop): frame 1 is
    built, and every later frame shares its values but ``imageUrlModule``,
    made anew from its imageId.  Shared values are the same objects: treat
    them as read-only.

    Args:
        instance: The whole instance's DICOM JSON.
        image_ids: The imageId of frame ``n``.
        last: The last frame to build (at most the instance's frame count).
        memo: Reuse values of :data:`MODULE_INPUTS` types between frames
            and instances whose inputs are equal (:class:`ModuleMemo`).

    Yields:
        ``(frame, image_id, modules)``, ``modules`` ``None`` for a frame that
        is not an image.

    Raises:
        DicomError: As :func:`frame_modules`, for the frame being built.
    """
    first = combine_frame(instance, 1) if last > 1 and frames_alike(instance) else None
    if first is not None and frames_alike(first.data):
        image_id = image_ids(1)
        shared = _modules_of(first, image_id, memo)
        yield 1, image_id, shared
        for frame in range(2, last + 1):
            image_id = image_ids(frame)
            modules = shared.copy()
            # imageUrlModule is the only module whose value differs between
            # frames that combine to the same view (frames_alike): its URLs
            # are made from the imageId.  Every other builder reads the
            # combined frame alone; multiframeModule also reads the frame
            # number, but only to pick a per-frame item, and these have none.
            modules["imageUrlModule"] = image_url_module(first, image_id)
            yield frame, image_id, modules
        return
    for frame in range(1, last + 1):
        image_id = image_ids(frame)
        combined = combine_frame(instance, frame)
        if combined is None:
            yield frame, image_id, None
        else:
            yield frame, image_id, _modules_of(combined, image_id, memo)
