"""SOP-level modules of the WADO-RS provider: identity and encoding.

Owns ``sopCommonModule`` (SOP class and instance UIDs), ``transferSyntax``
and ``imageUrlModule`` (whose ``isVideo`` is read from the transfer syntax).
Imports only ``metastore.modules.jsvalues``, ``metastore.modules.frames``,
``metastore.moduletypes`` and ``metastore.types``; never pydicom or SQLAlchemy.
"""

from __future__ import annotations

from typing import Literal

from metastore.modules.frames import Frame
from metastore.modules.jsvalues import (
    UNDEFINED,
    get_value,
    js_json,
    js_truthy,
    raw_value,
)
from metastore.moduletypes import (
    ImageUrlModule,
    SopCommonModule,
    TransferSyntaxModule,
)
from metastore.types import DicomJson

#: Transfer syntaxes that make ``imageUrlModule.isVideo`` true (MPEG-2,
#: MPEG-4 AVC/H.264 and HEVC/H.265, as ``@cornerstonejs/metadata`` lists them).
VIDEO_TRANSFER_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.100",
        "1.2.840.10008.1.2.4.100.1",
        "1.2.840.10008.1.2.4.101",
        "1.2.840.10008.1.2.4.101.1",
        "1.2.840.10008.1.2.4.102",
        "1.2.840.10008.1.2.4.102.1",
        "1.2.840.10008.1.2.4.103",
        "1.2.840.10008.1.2.4.103.1",
        "1.2.840.10008.1.2.4.104",
        "1.2.840.10008.1.2.4.104.1",
        "1.2.840.10008.1.2.4.105",
        "1.2.840.10008.1.2.4.105.1",
        "1.2.840.10008.1.2.4.106",
        "1.2.840.10008.1.2.4.106.1",
        "1.2.840.10008.1.2.4.107",
        "1.2.840.10008.1.2.4.108",
    }
)


def _transfer_syntax_uid(data: DicomJson) -> object:
    """(0002,0010) TransferSyntaxUID, or (0008,3002) if that is falsy (raw)."""
    uid = raw_value(data.get("00020010"))
    if not js_truthy(uid):
        # Cornerstone quirk: JS `a || b`, so any falsy (0002,0010) ("") yields
        # (0008,3002) as it is, even when that is undefined
        uid = raw_value(data.get("00083002"))  # AvailableTransferSyntaxUID
    return uid


def transfer_syntax_module(frame: Frame, image_id: str) -> TransferSyntaxModule:
    """``transferSyntax``: ``{"transferSyntaxUID": ...}``.

    Args:
        frame: The frame to read.
        image_id: The imageId asked about (unused).

    Returns:
        The module dict; the UID is the first value, raw.
    """
    uid = _transfer_syntax_uid(frame.data)
    return {"transferSyntaxUID": None if uid is UNDEFINED else js_json(uid)}


def _is_video(uid: object) -> str | Literal[False] | None:
    """``isVideoTransferSyntax``: ``False``, the matching UID, or ``None``."""
    if not js_truthy(uid):
        return False
    candidates = uid if isinstance(uid, list) else [uid]
    for candidate in candidates:
        if isinstance(candidate, str) and candidate in VIDEO_TRANSFER_SYNTAXES:
            return candidate
    return None  # Array.prototype.find found nothing: undefined


def image_url_module(frame: Frame, image_id: str) -> ImageUrlModule:
    """``imageUrlModule``: ``isVideo``, ``rendered`` and ``thumbnail`` URLs.

    Args:
        frame: The frame to read.
        image_id: The imageId asked about: the URLs are made from it.

    Returns:
        The module dict.  ``isVideo`` is ``False`` without a transfer syntax,
        the UID itself for a video syntax, ``None`` otherwise.
    """
    is_video = _is_video(_transfer_syntax_uid(frame.data))
    # Cornerstone quirk: always drops 7 characters ("wadors:"), whatever the
    # scheme
    url = image_id[7:]
    thumbnail = url.replace("/frames/", "/thumbnail/", 1)
    rendered = url.replace("/frames/", "/rendered/", 1)
    if js_truthy(is_video):
        # Cornerstone quirk: also turns ".../rendered/12" into ".../rendered2"
        rendered = rendered.replace("/rendered/1", "/rendered", 1)
    return {"isVideo": is_video, "rendered": rendered, "thumbnail": thumbnail}


def sop_common_module(frame: Frame, image_id: str) -> SopCommonModule:
    """``sopCommonModule``: SOP class and instance UIDs.

    Args:
        frame: The frame to read.
        image_id: The imageId asked about (unused).

    Returns:
        The module dict.
    """
    data = frame.data
    return {
        "sopClassUID": get_value(data.get("00080016")),  # (0008,0016) SOPClassUID
        "sopInstanceUID": get_value(data.get("00080018")),  # (0008,0018)
    }
