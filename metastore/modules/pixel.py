"""The image pixel module of the WADO-RS provider.

Owns ``imagePixelModule``: pixel description numbers through JavaScript
``parseFloat``, with Cornerstone's raw ``highBit`` and first-value-only
``pixelAspectRatio``.  Imports only ``jsvalues``, ``frames``
and ``metastore.moduletypes``; never pydicom or SQLAlchemy.
"""

from __future__ import annotations

from metastore.modules.frames import Frame
from metastore.modules.jsvalues import get_number_value, get_number_values, get_value
from metastore.moduletypes import ImagePixelModule


def image_pixel_module(frame: Frame, image_id: str) -> ImagePixelModule:
    """``imagePixelModule``.

    Args:
        frame: The frame to read.
        image_id: The imageId asked about (unused).

    Returns:
        The module dict.  The palette descriptors are all their values as
        numbers; the palette data are numbers only when DICOM JSON carries
        them as ``Value`` (it normally uses InlineBinary or a BulkDataURI, so
        they are ``None``).
    """
    data = frame.data
    get = data.get
    return {
        "samplesPerPixel": get_number_value(get("00280002")),  # (0028,0002)
        "photometricInterpretation": get_value(get("00280004")),  # (0028,0004)
        "rows": get_number_value(get("00280010")),  # (0028,0010) Rows
        "columns": get_number_value(get("00280011")),  # (0028,0011) Columns
        "bitsAllocated": get_number_value(get("00280100")),  # (0028,0100)
        "bitsStored": get_number_value(get("00280101")),  # (0028,0101)
        # Cornerstone quirk: (0028,0102) HighBit is raw, not parseFloat'ed
        "highBit": get_value(get("00280102")),
        "pixelRepresentation": get_number_value(get("00280103")),  # (0028,0103)
        "planarConfiguration": get_number_value(get("00280006")),  # (0028,0006)
        # Cornerstone quirk: (0028,0034) PixelAspectRatio raw, first value only
        "pixelAspectRatio": get_value(get("00280034")),
        # (0028,0106) SmallestImagePixelValue, (0028,0107) LargestImagePixelValue
        "smallestPixelValue": get_number_value(get("00280106")),
        "largestPixelValue": get_number_value(get("00280107")),
        # (0028,1101-1103) Red/Green/Blue PaletteColorLookupTableDescriptor
        "redPaletteColorLookupTableDescriptor": get_number_values(get("00281101")),
        "greenPaletteColorLookupTableDescriptor": get_number_values(get("00281102")),
        "bluePaletteColorLookupTableDescriptor": get_number_values(get("00281103")),
        # (0028,1201-1203) Red/Green/Blue PaletteColorLookupTableData
        "redPaletteColorLookupTableData": get_number_values(get("00281201")),
        "greenPaletteColorLookupTableData": get_number_values(get("00281202")),
        "bluePaletteColorLookupTableData": get_number_values(get("00281203")),
    }
