"""Ultrasound region modules of the WADO-RS provider.

Owns ``ultrasoundEnhancedRegionModule`` (a bare array of region dicts, or
``null``) and ``calibrationModule`` (the same regions, for Modality US only),
both from (0018,6011) SequenceOfUltrasoundRegions.  Imports only
``metastore.modules.jsvalues``, ``metastore.modules.frames``, ``metastore.errors``,
``metastore.moduletypes`` and ``metastore.types``; never pydicom or SQLAlchemy.
"""

from __future__ import annotations

from typing import cast

from metastore.errors import DicomError
from metastore.modules.frames import Frame
from metastore.modules.jsvalues import (
    get_first_number_value,
    get_sequence_items,
    raw_value,
)
from metastore.moduletypes import (
    CalibrationModule,
    UltrasoundEnhancedRegionModule,
    UltrasoundRegion,
)
from metastore.types import JSON, DicomJson

# Output key -> tag in a SequenceOfUltrasoundRegions item, in Cornerstone's
# key order.
_REGION_FIELDS = (
    ("regionLocationMinY0", "0018601A"),  # (0018,601A) RegionLocationMinY0
    ("regionLocationMaxY1", "0018601E"),  # (0018,601E) RegionLocationMaxY1
    ("regionLocationMinX0", "00186018"),  # (0018,6018) RegionLocationMinX0
    ("regionLocationMaxX1", "0018601C"),  # (0018,601C) RegionLocationMaxX1
    ("referencePixelX0", "00186020"),  # (0018,6020) ReferencePixelX0
    ("referencePixelY0", "00186022"),  # (0018,6022) ReferencePixelY0
    ("physicalDeltaX", "0018602C"),  # (0018,602C) PhysicalDeltaX
    ("physicalDeltaY", "0018602E"),  # (0018,602E) PhysicalDeltaY
    ("physicalUnitsXDirection", "00186024"),  # (0018,6024)
    ("physicalUnitsYDirection", "00186026"),  # (0018,6026)
    # Cornerstone names (0018,602A) ReferencePixelPhysicalValueY and
    # (0018,6028) ReferencePixelPhysicalValueX "referencePhysicalPixelValue*"
    ("referencePhysicalPixelValueY", "0018602A"),
    ("referencePhysicalPixelValueX", "00186028"),
    ("regionSpatialFormat", "00186012"),  # (0018,6012) RegionSpatialFormat
    ("regionDataType", "00186014"),  # (0018,6014) RegionDataType
    ("regionFlags", "00186016"),  # (0018,6016) RegionFlags
    ("transducerFrequency", "00186030"),  # (0018,6030) TransducerFrequency
)


def _region(item: JSON) -> UltrasoundRegion:
    """One region dict: the first number of each field, ``None`` if missing."""
    if item is None:
        raise DicomError(
            "Cornerstone raises TypeError: a (0018,6011) "
            "SequenceOfUltrasoundRegions item is null"
        )
    # Cornerstone quirk: a missing field is null, not undefined
    region = {key: get_first_number_value(item, tag) for key, tag in _REGION_FIELDS}
    return cast("UltrasoundRegion", region)  # the 16 keys of _REGION_FIELDS


def us_enhanced_regions(data: DicomJson) -> list[UltrasoundRegion] | None:
    """Cornerstone ``getUSEnhancedRegions``.

    Args:
        data: The frame's DICOM JSON.

    Returns:
        One dict of the 16 region fields per (0018,6011) item, or ``None``
        when the sequence is missing or empty (or its ``Value`` is an object
        without a ``length``).

    Raises:
        DicomError: When an item is ``null`` (Cornerstone throws).
    """
    items = get_sequence_items(data.get("00186011"))
    if not items:
        return None  # Cornerstone quirk: null, where the URI provider gives []
    return [_region(item) for item in items]


def ultrasound_enhanced_region_module(
    frame: Frame, image_id: str
) -> UltrasoundEnhancedRegionModule | None:
    """``ultrasoundEnhancedRegionModule``: the region array itself, or ``None``.

    Args:
        frame: The frame to read.
        image_id: The imageId asked about (unused).

    Returns:
        A list of region dicts (not wrapped in a dict), or ``None``.

    Raises:
        DicomError: When a region item is ``null`` (Cornerstone throws).
    """
    return us_enhanced_regions(frame.data)


def calibration_module(frame: Frame, image_id: str) -> CalibrationModule | None:
    """``calibrationModule``: ``{sequenceOfUltrasoundRegions}`` for US only.

    Args:
        frame: The frame to read.
        image_id: The imageId asked about (unused).

    Returns:
        ``None`` unless (0008,0060) Modality is exactly ``"US"``; else a dict
        whose ``sequenceOfUltrasoundRegions`` may be ``None``.

    Raises:
        DicomError: When a region item is ``null`` (Cornerstone throws).
    """
    data = frame.data
    # Cornerstone quirk: strict equality, so "US " or ["US"] do not count
    if raw_value(data.get("00080060")) != "US":
        return None
    return {"sequenceOfUltrasoundRegions": us_enhanced_regions(data)}
