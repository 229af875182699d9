"""Geometry modules of the WADO-RS provider: image plane and NM geometry.

Owns ``imagePlaneModule`` (orientation, position and spacing with
Cornerstone's defaults) and ``nmMultiframeGeometryModule``, and the NM
fallback that reads geometry from (0054,0022) DetectorInformationSequence for
reconstructed tomography.  Divergence 1 lives here: an instance without
Modality is a non-NM image instead of a TypeError.  Imports only
``jsvalues``, ``frames``, ``metastore.moduletypes`` and ``metastore.types``;
never pydicom or SQLAlchemy.
"""

from __future__ import annotations

from metastore.modules.frames import Frame
from metastore.modules.jsvalues import (
    UNDEFINED,
    get_number_value,
    get_number_values,
    get_tag_value,
    get_value,
    js_get,
    js_index,
    js_json,
    js_truthy,
    parse_float,
    raw_value,
)
from metastore.moduletypes import ImagePlaneModule, NmMultiframeGeometryModule
from metastore.types import JSON, DicomJson

# (0008,0008) ImageType values 3 that make an NM image reconstructable
_NM_RECONSTRUCTABLE = ("RECON TOMO", "RECON GATED TOMO")


def _is_nm_modality(data: DicomJson) -> bool:
    """Cornerstone ``isNMModality``: ``Modality.includes('NM')``.

    Divergence 1: Cornerstone throws a TypeError when (0008,0060) Modality is
    absent (``undefined.includes``) or not text; metastore treats such an
    instance as non-NM, so the geometry falls back to the defaults.
    """
    modality = raw_value(data.get("00080060"))
    if isinstance(modality, (str, list)):
        return "NM" in modality  # String/Array.prototype.includes
    return False  # Divergence 1 (Cornerstone: TypeError)


def _image_sub_type(data: DicomJson, index: int) -> object:
    """``getImageTypeSubItemFromMetadata``: ImageType value ``index``, raw."""
    image_type = get_tag_value(data.get("00080008", UNDEFINED), False)
    if js_truthy(image_type):
        return js_index(image_type, index)
    return UNDEFINED


def _is_nm_reconstructable(sub_type: JSON) -> bool:
    """``isNMReconstructable``: strict comparison with the two RECON types."""
    return isinstance(sub_type, str) and sub_type in _NM_RECONSTRUCTABLE


def _detector_vector(data: DicomJson, key: str, length: int) -> list[float] | None:
    """A vector from the first (0054,0022) DetectorInformationSequence item."""
    if not _is_nm_reconstructable(_image_sub_type(data, 2)):
        return None
    detector = get_tag_value(data.get("00540022", UNDEFINED))
    if not js_truthy(detector):
        return None
    return get_number_values(js_get(detector, key), length)


def _orientation(data: DicomJson) -> list[float] | None:
    """``extractOrientationFromMetadata``: (0020,0037) or the NM fallback."""
    orientation = get_number_values(data.get("00200037"), 6)  # ImageOrientationPatient
    # Cornerstone quirk: too few values count as missing; NM RECON images then
    # read (0054,0022) DetectorInformationSequence
    if orientation is None and _is_nm_modality(data):
        orientation = _detector_vector(data, "00200037", 6)
    return orientation


def _position(data: DicomJson) -> list[float] | None:
    """``extractPositionFromMetadata``: (0020,0032) or the NM fallback."""
    position = get_number_values(data.get("00200032"), 3)  # ImagePositionPatient
    if position is None and _is_nm_modality(data):
        position = _detector_vector(data, "00200032", 3)
    return position


def nm_multiframe_geometry_module(
    frame: Frame, image_id: str
) -> NmMultiframeGeometryModule:
    """``nmMultiframeGeometryModule``.

    Args:
        frame: The frame to read.
        image_id: The imageId asked about (unused).

    Returns:
        The module dict: orientation and position without defaults,
        ``imageType`` only the first ImageType value, ``imageSubType`` the
        third.  Without Modality it is computed as for a non-NM image
        (divergence 1).
    """
    data = frame.data
    sub_type = _image_sub_type(data, 2)
    reconstructable = _is_nm_reconstructable(sub_type) and _is_nm_modality(data)
    return {
        "modality": get_value(data.get("00080060")),
        # Cornerstone quirk: only the first (0008,0008) ImageType value
        "imageType": get_value(data.get("00080008")),
        "imageSubType": None if sub_type is UNDEFINED else js_json(sub_type),
        "imageOrientationPatient": _orientation(data),
        "imagePositionPatient": _position(data),
        "sliceThickness": get_number_value(data.get("00180050")),  # (0018,0050)
        "spacingBetweenSlices": get_number_value(data.get("00180088")),  # (0018,0088)
        "pixelSpacing": get_number_values(data.get("00280030"), 2),  # (0028,0030)
        "numberOfFrames": get_number_value(data.get("00280008")),  # (0028,0008)
        "isNMReconstructable": reconstructable,
    }


def image_plane_module(frame: Frame, image_id: str) -> ImagePlaneModule:
    """``imagePlaneModule``.

    Args:
        frame: The frame (functional groups merged: per-frame position and
            shared orientation and spacing apply).
        image_id: The imageId asked about (unused).

    Returns:
        The module dict.  Missing orientation defaults to ``[1,0,0,0,1,0]``,
        missing position to ``[0,0,0]``, missing spacing to row/column 1 with
        ``pixelSpacing`` left ``None``; any default sets
        ``usingDefaultValues``.  Without Modality this never raises
        (divergence 1).
    """
    data = frame.data
    orientation = _orientation(data)
    position = _position(data)
    pixel_spacing = get_number_values(
        data.get("00280030"), 2
    )  # (0028,0030) PixelSpacing
    using_defaults = False
    if pixel_spacing is not None:
        # PixelSpacing is (row spacing, column spacing)
        row_spacing: float = pixel_spacing[0]
        column_spacing: float = pixel_spacing[1]
    else:
        using_defaults = True
        # Cornerstone quirk: pixelSpacing stays None while row/column are 1
        row_spacing = column_spacing = 1.0
    if orientation is not None:
        row_cosines = [parse_float(v) for v in orientation[:3]]
        column_cosines = [parse_float(v) for v in orientation[3:6]]
    else:
        row_cosines = [1.0, 0.0, 0.0]
        column_cosines = [0.0, 1.0, 0.0]
        using_defaults = True
        orientation = [*row_cosines, *column_cosines]
    if position is None:
        position = [0.0, 0.0, 0.0]
        using_defaults = True
    return {
        "frameOfReferenceUID": get_value(data.get("00200052")),  # (0020,0052)
        "rows": get_number_value(data.get("00280010")),
        "columns": get_number_value(data.get("00280011")),
        "imageOrientationPatient": orientation,
        "rowCosines": row_cosines,
        "columnCosines": column_cosines,
        "imagePositionPatient": position,
        "sliceThickness": get_number_value(data.get("00180050")),  # (0018,0050)
        "sliceLocation": get_number_value(data.get("00201041")),  # (0020,1041)
        "pixelSpacing": pixel_spacing,
        "rowPixelSpacing": row_spacing,
        "columnPixelSpacing": column_spacing,
        "usingDefaultValues": using_defaults,
    }
