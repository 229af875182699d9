"""The overlay plane module, read from the real overlays (divergence 3).

Owns ``overlayPlaneModule``.  Cornerstone's WADO-RS provider looks overlays up
under dicomParser keys (``x60003000``) that DICOM JSON never has, so it always
answers ``{overlays: []}``; metastore reads groups 6000-601E and gives the
fields as the WADO-URI provider does, with ``pixelData`` ``None`` when the
overlay bits are not in the JSON (a BulkDataURI).  Imports only
``jsvalues``, ``frames``, ``metastore.moduletypes`` and ``metastore.types``;
never pydicom or SQLAlchemy.
"""

from __future__ import annotations

import base64
import binascii
import math
from functools import lru_cache
from itertools import chain

from metastore.modules.frames import Frame
from metastore.modules.jsvalues import (
    get_number_value,
    get_value,
    js_to_string,
    js_truthy,
)
from metastore.moduletypes import Overlay, OverlayPlaneModule
from metastore.types import JSON, DicomJson

#: Overlay groups: (6000,xxxx) to (601E,xxxx), even groups only.
OVERLAY_GROUPS = tuple(range(0x6000, 0x6020, 2))
_DATA_KEYS = tuple((group, f"{group:04X}3000") for group in OVERLAY_GROUPS)

# byte -> its 8 bits, least significant first (the URI provider's order)
_BITS = tuple(tuple((byte >> k) & 1 for k in range(8)) for byte in range(256))
_JS_WHITESPACE = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)


@lru_cache(maxsize=32)
def _unpack(data: bytes) -> tuple[int, ...]:
    """Bits of ``data``, LSB first; cached because every frame repeats them."""
    return tuple(chain.from_iterable(map(_BITS.__getitem__, data)))


def _bytes_from_values(
    values: list[JSON], vr: JSON, expected_bytes: int | None
) -> bytes | None:
    """Overlay bytes from a JSON ``Value`` array of integers.

    (60xx,3000) OverlayData is OB or OW.  OB values are bytes; OW values are
    16-bit words stored little-endian, except that some servers list OW data
    byte by byte, which shows as exactly the expected byte count with every
    value below 256.
    """
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return None
    if vr == "OB" or (
        expected_bytes is not None
        and len(values) in (expected_bytes, expected_bytes + expected_bytes % 2)
        and all(0 <= v < 256 for v in values)
    ):
        return bytes(v & 0xFF for v in values)
    return b"".join((v & 0xFFFF).to_bytes(2, "little") for v in values)


def _overlay_bytes(element: JSON, expected_bytes: int | None) -> bytes | None:
    """The raw overlay bytes of an OverlayData element, or ``None`` if not at hand."""
    if not isinstance(element, dict):
        return None
    inline = element.get("InlineBinary")
    if isinstance(inline, str):
        try:
            return base64.b64decode(inline, validate=False)
        except (binascii.Error, ValueError):
            return None
    values = element.get("Value")
    if isinstance(values, list):
        return _bytes_from_values(values, element.get("vr"), expected_bytes)
    if "BulkDataURI" in element or values is not None:
        return None  # the bits live elsewhere (or are unreadable)
    return b""  # an empty element: no bits, as the URI provider gives []


def _text(element: JSON) -> str | None:
    """A string attribute as dicomParser's ``string()``: all values, trimmed."""
    if not isinstance(element, dict):
        return None
    values = element.get("Value")
    if not isinstance(values, list) or not values:
        return None
    text = "\\".join("" if v is None else js_to_string(v) for v in values)
    return text.strip(_JS_WHITESPACE)


def _minus_one(value: float | None) -> float:
    """JavaScript ``value - 1`` where undefined gives NaN."""
    return math.nan if value is None else value - 1


def _overlay(data: DicomJson, group: int, element: JSON) -> Overlay:
    """One overlay dict for group ``group`` (fields as the URI provider's)."""
    prefix = f"{group:04X}"
    rows = get_number_value(data.get(prefix + "0010"))  # (60xx,0010) OverlayRows
    columns = get_number_value(data.get(prefix + "0011"))  # (60xx,0011) OverlayColumns
    # (60xx,0015) NumberOfFramesInOverlay: the data holds every overlay frame
    frames = get_number_value(data.get(prefix + "0015"))
    if frames is None or not math.isfinite(frames) or frames < 1:
        frames = 1
    expected = None
    if rows and columns and rows > 0 and columns > 0:
        size = rows * columns * frames
        expected = math.ceil(size / 8) if math.isfinite(size) else None
    raw = _overlay_bytes(element, expected)
    origin = data.get(prefix + "0050")  # (60xx,0050) OverlayOrigin: row\column, 1-based
    return {
        "rows": rows,
        "columns": columns,
        "type": get_value(data.get(prefix + "0040")),  # (60xx,0040) OverlayType
        "x": _minus_one(get_number_value(origin, 1)),
        "y": _minus_one(get_number_value(origin, 0)),
        "pixelData": None if raw is None else list(_unpack(raw)),
        "description": _text(data.get(prefix + "0022")),  # (60xx,0022)
        "label": _text(data.get(prefix + "1500")),  # (60xx,1500) OverlayLabel
        "roiArea": _text(data.get(prefix + "1301")),  # (60xx,1301) ROIArea
        "roiMean": _text(data.get(prefix + "1302")),  # (60xx,1302) ROIMean
        "roiStandardDeviation": _text(data.get(prefix + "1303")),  # (60xx,1303)
    }


def overlays(data: DicomJson) -> list[Overlay]:
    """Every overlay of groups 6000-601E that has (60xx,3000) OverlayData.

    Args:
        data: The frame's DICOM JSON.

    Returns:
        One dict per overlay, in group order.
    """
    found: list[Overlay] = []
    for group, key in _DATA_KEYS:
        element = data.get(key)  # (60xx,3000) OverlayData
        if element is None or not js_truthy(element):
            continue
        found.append(_overlay(data, group, element))
    return found


def overlay_plane_module(frame: Frame, image_id: str) -> OverlayPlaneModule:
    """``overlayPlaneModule``: ``{"overlays": [...]}`` (divergence 3).

    Args:
        frame: The frame to read.
        image_id: The imageId asked about (unused).

    Returns:
        ``{"overlays": [...]}``: rows, columns, type, x and y (0-based:
        OverlayOrigin column − 1 and row − 1), ``pixelData`` (bits unpacked
        LSB first, ``bytes × 8`` long, or ``None`` when the data is only a
        BulkDataURI), description, label and the ROI values as strings.
    """
    # Divergence 3: Cornerstone's WADO-RS provider always gives {overlays: []}
    return {"overlays": overlays(frame.data)}
