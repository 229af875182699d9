"""The search columns of revision 0003, and their values from DICOM JSON.

Revision 0003 gave the tables the QIDO-RS matching and return attributes
that :class:`~metastore.records.InstanceRecord` has no field for
(PS3.18 Table 10.6.1-5 and 10.6.3-3/4/5): this module names those columns
per table and computes their values from an instance's DICOM JSON.  The
write path (``store_encode.search_values``) and revision 0003's backfill
both call :func:`from_json`, so stored and migrated rows agree.  Pure
Python; no SQL, no pydicom.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from metastore.store.names import fold, fuzzy_key, pn_text

#: The columns per table, in the order the write path fills them.
STUDY_COLUMNS = (
    "referring_physician_name",
    "referring_physician_name_key",
    "referring_physician_name_fuzzy",
    "patient_name_fuzzy",
    "patient_birth_date",
    "patient_sex",
    "dicom_study_id",
    "dicom_study_id_key",
)
SERIES_COLUMNS = (
    "performed_procedure_step_start_date",
    "performed_procedure_step_start_time",
)
INSTANCE_COLUMNS = ("image_rows", "image_columns", "bits_allocated")

#: Longest (0010,0040) PatientSex stored (a CS value, PS3.5 6.2).
MAX_CODE = 16
_DATE = re.compile(r"[0-9]{8}")
_LEGACY_DATE = re.compile(r"[0-9]{4}\.[0-9]{2}\.[0-9]{2}")

Values = dict[str, dict[str, Any]]


def _first(instance: Any, tag: str) -> Any:
    element = instance.get(tag) if isinstance(instance, dict) else None
    value = element.get("Value") if isinstance(element, dict) else None
    if isinstance(value, list) and value:
        return value[0]
    return None


def _text(instance: Any, tag: str) -> str | None:
    """The first value of a text attribute, stripped of padding, or ``None``."""
    value = _first(instance, tag)
    if value is None or isinstance(value, dict | list):
        return None
    return str(value).strip().strip("\x00").strip() or None


def _date(instance: Any, tag: str) -> str | None:
    """A DA value as ``YYYYMMDD`` (``YYYY.MM.DD`` converted), else ``None``."""
    text = _text(instance, tag)
    if text is not None and _LEGACY_DATE.fullmatch(text):
        text = text.replace(".", "")
    return text if text is not None and _DATE.fullmatch(text) else None


def _int(instance: Any, tag: str) -> int | None:
    """A US/IS value as an int that a 32-bit column holds, else ``None``."""
    value = _first(instance, tag)
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and -(2**31) <= value < 2**31:
        return value
    return None


def _pn(instance: Any, tag: str) -> str | None:
    element = instance.get(tag) if isinstance(instance, dict) else None
    return pn_text(element.get("Value")) if isinstance(element, dict) else None


def from_json(
    instance: Any, patient_name: str | None, clean: Callable[[str], str]
) -> Values:
    """The search column values of one instance, per table.

    Args:
        instance: the instance's DICOM JSON (anything else gives empty values).
        patient_name: (0010,0010) PatientName as the ``studies.patient_name``
            column holds it (the record's, already cleaned): its fuzzy key is
            computed from that text.
        clean: makes text storable and cuts it to the indexed length
            (``store_encode``'s policy); applied before keys are derived.

    Returns:
        ``{"study": {...}, "series": {...}, "instance": {...}}`` keyed by
        the column names of :data:`STUDY_COLUMNS`, :data:`SERIES_COLUMNS`
        and :data:`INSTANCE_COLUMNS`.
    """

    def text(value: str | None) -> str | None:
        return None if value is None else clean(value)

    referring = text(_pn(instance, "00080090"))
    study_id = text(_text(instance, "00200010"))
    sex = text(_text(instance, "00100040"))
    return {
        "study": {
            "referring_physician_name": referring,
            "referring_physician_name_key": None
            if referring is None
            else fold(referring),
            "referring_physician_name_fuzzy": fuzzy_key(referring),
            "patient_name_fuzzy": fuzzy_key(patient_name),
            "patient_birth_date": _date(instance, "00100030"),
            "patient_sex": None if sex is None else sex[:MAX_CODE],
            "dicom_study_id": study_id,
            "dicom_study_id_key": None if study_id is None else fold(study_id),
        },
        "series": {
            "performed_procedure_step_start_date": _date(instance, "00400244"),
            "performed_procedure_step_start_time": text(_text(instance, "00400245")),
        },
        "instance": {
            "image_rows": _int(instance, "00280010"),
            "image_columns": _int(instance, "00280011"),
            "bits_allocated": _int(instance, "00280100"),
        },
    }
