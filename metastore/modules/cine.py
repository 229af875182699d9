"""The cine module of the WADO-RS provider.

Owns ``cineModule``: (0018,0040) CineRate as it is and (0028,0008)
NumberOfFrames as a number.  Imports only ``metastore.modules.jsvalues``,
``metastore.modules.frames`` and ``metastore.moduletypes``; never pydicom or SQLAlchemy.
"""

from __future__ import annotations

from metastore.modules.frames import NUMBER_OF_FRAMES, Frame
from metastore.modules.jsvalues import get_number_value, get_value
from metastore.moduletypes import CineModule


def cine_module(frame: Frame, image_id: str) -> CineModule:
    """``cineModule``: ``cineRate`` (raw) and ``numberOfFrames``.

    Args:
        frame: The frame to read.
        image_id: The imageId asked about (unused).

    Returns:
        The module dict.
    """
    data = frame.data
    return {
        "cineRate": get_value(data.get("00180040")),  # (0018,0040) CineRate
        "numberOfFrames": get_number_value(data.get(NUMBER_OF_FRAMES)),
    }
