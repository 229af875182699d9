"""General study, series and image modules of the WADO-RS provider.

Owns ``generalStudyModule``, ``generalSeriesModule`` and
``generalImageModule``: raw first values (``getValue``) except the numbers,
which go through JavaScript ``parseFloat``.  Imports only ``jsvalues``,
``frames`` and ``metastore.moduletypes``; never pydicom or SQLAlchemy.
"""

from __future__ import annotations

from metastore.modules.frames import Frame
from metastore.modules.jsvalues import get_number_value, get_value
from metastore.moduletypes import (
    GeneralImageModule,
    GeneralSeriesModule,
    GeneralStudyModule,
)


def general_study_module(frame: Frame, image_id: str) -> GeneralStudyModule:
    """``generalStudyModule``: description, date, time, accession (raw strings).

    Args:
        frame: The frame to read.
        image_id: The imageId asked about (unused).

    Returns:
        The module dict; every key present, ``None`` where the tag is missing.
    """
    data = frame.data
    return {
        "studyDescription": get_value(
            data.get("00081030")
        ),  # (0008,1030) StudyDescription
        "studyDate": get_value(
            data.get("00080020")
        ),  # (0008,0020) StudyDate, raw DA text
        "studyTime": get_value(
            data.get("00080030")
        ),  # (0008,0030) StudyTime, raw TM text
        "accessionNumber": get_value(
            data.get("00080050")
        ),  # (0008,0050) AccessionNumber
    }


def general_series_module(frame: Frame, image_id: str) -> GeneralSeriesModule:
    """``generalSeriesModule``: modality, UIDs, number, dates and times.

    Args:
        frame: The frame to read.
        image_id: The imageId asked about (unused).

    Returns:
        The module dict; ``seriesNumber`` is a float, the rest raw.
    """
    data = frame.data
    return {
        "modality": get_value(data.get("00080060")),  # (0008,0060) Modality
        "seriesInstanceUID": get_value(data.get("0020000E")),  # (0020,000E)
        "seriesDescription": get_value(data.get("0008103E")),  # (0008,103E)
        "seriesNumber": get_number_value(data.get("00200011")),  # (0020,0011)
        "studyInstanceUID": get_value(data.get("0020000D")),  # (0020,000D)
        "seriesDate": get_value(data.get("00080021")),  # (0008,0021) SeriesDate
        "seriesTime": get_value(data.get("00080031")),  # (0008,0031) SeriesTime
        "acquisitionDate": get_value(data.get("00080022")),  # (0008,0022)
        "acquisitionTime": get_value(data.get("00080032")),  # (0008,0032)
    }


def general_image_module(frame: Frame, image_id: str) -> GeneralImageModule:
    """``generalImageModule``: SOP instance UID, instance number, lossy fields.

    Args:
        frame: The frame to read.
        image_id: The imageId asked about (unused).

    Returns:
        The module dict.
    """
    data = frame.data
    return {
        "sopInstanceUID": get_value(data.get("00080018")),  # (0008,0018) SOPInstanceUID
        "instanceNumber": get_number_value(data.get("00200013")),  # (0020,0013)
        # (0028,2110) LossyImageCompression, (0028,2112) ...Ratio (first value
        # only), (0028,2114) ...Method (first value only)
        "lossyImageCompression": get_value(data.get("00282110")),
        "lossyImageCompressionRatio": get_number_value(data.get("00282112")),
        "lossyImageCompressionMethod": get_value(data.get("00282114")),
    }
