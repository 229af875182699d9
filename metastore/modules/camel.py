"""Cornerstone's two spellings of a module key: lowerCamel and UpperCamel.

Owns :func:`to_upper_camel_tag` (``toUpperCamelTag``: module keys to the
keyword-like names of the ``instance`` module and of ``getNormalized``) and
:func:`to_lower_camel_tag` (``toLowerCamelTag``), rule for rule as
``@cornerstonejs/metadata`` 5.14.0 has them.  The registry uses both through
``metastore.modules``.  Imports nothing of metastore.
"""

from __future__ import annotations

_UPPER_CAMEL: dict[str, str] = {}


def to_upper_camel_tag(tag: str) -> str:
    """Convert a lowerCamel module key to a DICOM-keyword-like UpperCamel name.

    Cornerstone 5.x ``toUpperCamelTag``, rule for rule: a ``sop`` prefix
    becomes ``SOP`` and a ``voi`` prefix ``VOI`` (and the result is returned
    as is); otherwise a trailing ``Id`` becomes ``ID``, then the first letter
    is upper-cased.

    Args:
        tag: A key such as ``"sopInstanceUID"`` or ``"patientId"``.

    Returns:
        For example ``"SOPInstanceUID"``, ``"PatientID"``, ``"VOILUTFunction"``.
    """
    cached = _UPPER_CAMEL.get(tag)
    if cached is not None:
        return cached
    if tag.startswith("sop"):
        # Cornerstone: returns early, so "sopFooId" keeps its "Id".
        result = "SOP" + tag[3:]
    elif tag.startswith("voi"):
        result = "VOI" + tag[3:]
    else:
        keyword = tag[:-2] + "ID" if tag.endswith("Id") else tag
        result = keyword[:1].upper() + keyword[1:]
    # the instance module renames the same few dozen keys on every frame;
    # getNormalized may see any key, so the memo stays bounded
    if len(_UPPER_CAMEL) < 4096:
        _UPPER_CAMEL[tag] = result
    return result


def to_lower_camel_tag(tag: str) -> str:
    """Convert an UpperCamel DICOM keyword to the lowerCamel module spelling.

    Cornerstone 5.x ``toLowerCamelTag``: a ``SOP`` prefix becomes ``sop`` and a
    ``VOI`` prefix ``voi`` (returned as is); otherwise a trailing ``ID`` that is
    not part of ``UID`` becomes ``Id``, then the first letter is lower-cased.

    Args:
        tag: A keyword such as ``"SOPInstanceUID"`` or ``"PatientID"``.

    Returns:
        For example ``"sopInstanceUID"``, ``"patientId"``, ``"studyInstanceUID"``.
    """
    if tag.startswith("SOP"):
        return "sop" + tag[3:]
    if tag.startswith("VOI"):
        return "voi" + tag[3:]
    if tag.endswith("ID") and not tag.endswith("UID"):
        tag = tag[:-2] + "Id"
    return tag[:1].lower() + tag[1:]
