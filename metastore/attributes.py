"""The attributes people search by, read from one DICOM JSON instance.

Owns the small DICOM JSON accessors (first value, text, integer, date,
person name as Part 10 text) and :func:`search_attributes`: the study and
series attributes an instance is found by.  ``metastore.index.extract`` fills
an ``InstanceRecord`` with them, and the store reads them again from a
stored instance's DICOM JSON when the instance a study or series took its
attributes from is removed, so both see the same values.  Imports only
``metastore.types``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from metastore.types import DicomJson

_DATE = re.compile(r"[0-9]{8}")
_LEGACY_DATE = re.compile(r"[0-9]{4}\.[0-9]{2}\.[0-9]{2}")


def first_value(instance: DicomJson, tag: str) -> Any:
    """Return the first item of a DICOM JSON attribute's ``Value``, or ``None``."""
    element = instance.get(tag)
    if not isinstance(element, dict):
        return None
    value = element.get("Value")
    if isinstance(value, list) and value:
        return value[0]
    return None


def text_value(instance: DicomJson, tag: str) -> str | None:
    """Return the first value of a string attribute, or ``None`` if it is empty."""
    value = first_value(instance, tag)
    if value is None or isinstance(value, dict | list):
        return None
    # NUL as well as spaces: (0008,0018) SOPInstanceUID and other UI values
    # are padded with NUL to an even length, and DICOM JSON from some servers
    # keeps that padding ("1.2.3\u0000").
    text = str(value).strip().strip("\x00").strip()
    return text or None


def int_value(instance: DicomJson, tag: str) -> int | None:
    """Return the first value of an IS/US-like attribute as an ``int``, or ``None``."""
    value = first_value(instance, tag)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def date_value(instance: DicomJson, tag: str) -> str | None:
    """Return a DA attribute as ``YYYYMMDD`` (searchable, sortable), or ``None``.

    The ACR-NEMA form ``YYYY.MM.DD`` that old files still carry is converted;
    anything else that is not eight digits gives ``None``.
    """
    text = text_value(instance, tag)
    if text is None:
        return None
    if _LEGACY_DATE.fullmatch(text):
        text = text.replace(".", "")
    return text if _DATE.fullmatch(text) else None


def person_name_text(instance: DicomJson, tag: str) -> str | None:
    """Return a PN attribute as Part 10 text: ``Alphabetic=Ideographic=Phonetic``.

    Trailing empty groups are dropped as in Part 10; several values are joined
    with a backslash.
    """
    element = instance.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    if not isinstance(values, list):
        return None
    names = []
    for value in values:
        if isinstance(value, dict):
            groups = [
                str(value.get(k) or "")
                for k in ("Alphabetic", "Ideographic", "Phonetic")
            ]
            names.append("=".join(groups).rstrip("="))
        elif value is not None:
            names.append(str(value))  # non-conformant: a plain string
    text = "\\".join(names)
    return text or None


@dataclass(frozen=True, slots=True)
class SearchAttributes:
    """What a study and a series are found by, as one instance states it.

    The field names are those of ``InstanceRecord``, so the store treats a
    record and these alike.
    """

    #: (0020,000D) StudyInstanceUID: the study the instance's series is in.
    study_instance_uid: str | None
    patient_id: str | None
    #: Part 10 text, see :func:`person_name_text`.
    patient_name: str | None
    #: ``YYYYMMDD``, see :func:`date_value`.
    study_date: str | None
    study_time: str | None
    accession_number: str | None
    study_description: str | None
    modality: str | None
    series_number: int | None
    series_description: str | None
    #: The values of the store's search columns of revision 0003, per table
    #: (as ``InstanceRecord.search_values``): the store fills them in from
    #: the same DICOM JSON when it reads an instance back.
    search_values: dict[str, dict[str, Any]] | None = None


def search_attributes(instance: DicomJson) -> SearchAttributes:
    """The search attributes of one DICOM JSON instance."""
    return SearchAttributes(
        study_instance_uid=text_value(instance, "0020000D"),
        patient_id=text_value(instance, "00100020"),  # (0010,0020) PatientID
        patient_name=person_name_text(instance, "00100010"),  # (0010,0010)
        study_date=date_value(instance, "00080020"),  # (0008,0020) StudyDate
        study_time=text_value(instance, "00080030"),  # (0008,0030) StudyTime
        accession_number=text_value(instance, "00080050"),  # (0008,0050)
        study_description=text_value(instance, "00081030"),  # (0008,1030)
        modality=text_value(instance, "00080060"),  # (0008,0060) Modality
        series_number=int_value(instance, "00200011"),  # (0020,0011)
        series_description=text_value(instance, "0008103E"),  # (0008,103E)
    )
