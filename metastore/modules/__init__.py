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
    "MODULE_TYPES",
    "Builder",
    "Frame",
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


def _modules_of(combined: Frame, image_id: str) -> FrameModules:
    """Every module type of one combined frame (:func:`frame_modules`)."""
    out: dict[str, ModuleAnswer | None] = {}
    for module_type in MODULE_TYPES:
        if module_type == ModuleType.INSTANCE:
            out[module_type] = instance_module(combined, image_id, out)
            continue
        builder = _BUILDERS.get(module_type)
        out[module_type] = None if builder is None else builder(combined, image_id)
    # Every key of MODULE_TYPES, each from its own builder (a test checks it)
    return cast("FrameModules", out)


#: The only module type whose value differs between frames that combine to
#: the same view (:func:`metastore.modules.frames.frames_alike`): its URLs are made
#: from the imageId.  Every other builder reads the combined frame alone;
#: ``multiframeModule`` also reads the frame number, but only to pick a
#: per-frame item, and frames alike have none.
_FRAME_DEPENDENT = image_url_module


def instance_frame_modules(
    instance: DicomJson, image_ids: Callable[[int], str], last: int
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

    Yields:
        ``(frame, image_id, modules)``, ``modules`` ``None`` for a frame that
        is not an image.

    Raises:
        DicomError: As :func:`frame_modules`, for the frame being built.
    """
    first = combine_frame(instance, 1) if last > 1 and frames_alike(instance) else None
    if first is not None and frames_alike(first.data):
        image_id = image_ids(1)
        shared = _modules_of(first, image_id)
        yield 1, image_id, shared
        for frame in range(2, last + 1):
            image_id = image_ids(frame)
            modules = shared.copy()
            modules["imageUrlModule"] = _FRAME_DEPENDENT(first, image_id)
            yield frame, image_id, modules
        return
    for frame in range(1, last + 1):
        image_id = image_ids(frame)
        yield frame, image_id, frame_modules(instance, image_id, frame)
