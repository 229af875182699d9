"""The VOI LUT and modality LUT modules of the WADO-RS provider.

Owns ``voiLutModule`` (window centre and width as arrays of every value) and
``modalityLutModule`` (rescale intercept, slope and type).  The LUT sequences
themselves are not read by this provider.  Imports only ``metastore.modules.jsvalues``,
``metastore.modules.frames`` and ``metastore.moduletypes``; never pydicom or
SQLAlchemy.
"""

from __future__ import annotations

from metastore.modules.frames import Frame
from metastore.modules.jsvalues import get_number_value, get_number_values, get_value
from metastore.moduletypes import ModalityLutModule, VoiLutModule


def voi_lut_module(frame: Frame, image_id: str) -> VoiLutModule:
    """``voiLutModule``.

    Args:
        frame: The frame (functional groups merged: a per-frame
            FrameVOILUTSequence wins).
        image_id: The imageId asked about (unused).

    Returns:
        The module dict; ``windowCenter``/``windowWidth`` are lists of every
        value, or ``None``.
    """
    data = frame.data
    return {
        "windowCenter": get_number_values(data.get("00281050"), 1),  # (0028,1050)
        "windowWidth": get_number_values(data.get("00281051"), 1),  # (0028,1051)
        "voiLUTFunction": get_value(data.get("00281056")),  # (0028,1056) VOILUTFunction
    }


def modality_lut_module(frame: Frame, image_id: str) -> ModalityLutModule:
    """``modalityLutModule``.

    Args:
        frame: The frame to read.
        image_id: The imageId asked about (unused).

    Returns:
        The module dict (always a dict, even without rescale tags).
    """
    data = frame.data
    return {
        "rescaleIntercept": get_number_value(data.get("00281052")),  # (0028,1052)
        "rescaleSlope": get_number_value(data.get("00281053")),  # (0028,1053)
        "rescaleType": get_value(data.get("00281054")),  # (0028,1054) RescaleType
    }
