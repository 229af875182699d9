"""PET modules of the WADO-RS provider.

Owns ``petIsotopeModule`` (from the first (0054,0016)
RadiopharmaceuticalInformationSequence item), ``petSeriesModule`` and
``petImageModule``.  SUV scaling itself (``scalingModule``) is not answered by
this provider.  Imports only ``jsvalues``, ``frames``,
``metastore.errors`` and ``metastore.moduletypes``; never pydicom or SQLAlchemy.
"""

from __future__ import annotations

from metastore.errors import DicomError
from metastore.modules.frames import Frame
from metastore.modules.jsvalues import (
    UNDEFINED,
    get_number_value,
    get_value,
    js_get,
    js_to_string,
    raw_value,
)
from metastore.moduletypes import PetImageModule, PetIsotopeModule, PetSeriesModule


def pet_isotope_module(frame: Frame, image_id: str) -> PetIsotopeModule | None:
    """``petIsotopeModule``: ``{radiopharmaceuticalInfo: {...}}`` or ``None``.

    Args:
        frame: The frame to read.
        image_id: The imageId asked about (unused).

    Returns:
        ``None`` unless (0054,0016) RadiopharmaceuticalInformationSequence has
        an item; else the start time and date-time (raw, default ``""``) and
        the total dose and half life (``parseFloat``) of the first item only.

    Raises:
        DicomError: When the first item is ``null`` (Cornerstone throws a
            TypeError reading a property of null).
    """
    info = raw_value(frame.data.get("00540016"))
    if info is UNDEFINED:
        return None
    if info is None:
        raise DicomError(
            "Cornerstone raises TypeError: the first "
            "(0054,0016) RadiopharmaceuticalInformationSequence item is null"
        )
    return {
        "radiopharmaceuticalInfo": {
            # (0018,1072) RadiopharmaceuticalStartTime, raw TM text
            # Cornerstone quirk: the two times default to "" (not undefined)
            "radiopharmaceuticalStartTime": get_value(js_get(info, "00181072"), 0, ""),
            # (0018,1078) RadiopharmaceuticalStartDateTime, raw DT text
            "radiopharmaceuticalStartDateTime": get_value(
                js_get(info, "00181078"), 0, ""
            ),
            # (0018,1074) RadionuclideTotalDose, (0018,1075) RadionuclideHalfLife
            "radionuclideTotalDose": get_number_value(js_get(info, "00181074")),
            "radionuclideHalfLife": get_number_value(js_get(info, "00181075")),
        }
    }


def pet_series_module(frame: Frame, image_id: str) -> PetSeriesModule:
    """``petSeriesModule``: corrected image, units and decay correction.

    Args:
        frame: The frame to read.
        image_id: The imageId asked about (unused).

    Returns:
        The module dict, for any modality.  ``correctedImage`` is every
        (0028,0051) CorrectedImage value joined with a backslash.
    """
    data = frame.data
    element = data.get("00280051")  # (0028,0051) CorrectedImage
    corrected = get_value(element)
    values = element.get("Value") if isinstance(element, dict) else None
    if isinstance(values, list):
        # Cornerstone quirk: Value.join('\\'), so all values in one string
        # (null items become empty strings)
        corrected = "\\".join("" if v is None else js_to_string(v) for v in values)
    return {
        "correctedImage": corrected,
        "units": get_value(data.get("00541001")),  # (0054,1001) Units
        "decayCorrection": get_value(data.get("00541102")),  # (0054,1102)
    }


def pet_image_module(frame: Frame, image_id: str) -> PetImageModule:
    """``petImageModule``: frame reference time and actual frame duration.

    Args:
        frame: The frame to read.
        image_id: The imageId asked about (unused).

    Returns:
        The module dict, for any modality.
    """
    data = frame.data
    return {
        "frameReferenceTime": get_number_value(data.get("00541300")),  # (0054,1300)
        "actualFrameDuration": get_number_value(data.get("00181242")),  # (0018,1242)
    }
