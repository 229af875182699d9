"""Patient modules of the WADO-RS provider.

Owns ``patientModule`` (ID and the PN object as DICOM JSON holds it) and
``patientStudyModule`` (age, size, weight through JavaScript ``parseFloat``,
sex raw).  Imports only ``metastore.modules.jsvalues``, ``metastore.modules.frames`` and
``metastore.moduletypes``; never pydicom or SQLAlchemy.
"""

from __future__ import annotations

from metastore.modules.frames import Frame
from metastore.modules.jsvalues import get_number_value, get_value
from metastore.moduletypes import PatientModule, PatientStudyModule


def patient_module(frame: Frame, image_id: str) -> PatientModule:
    """``patientModule``: ``patientID`` and ``patientName``.

    Args:
        frame: The frame to read.
        image_id: The imageId asked about (unused).

    Returns:
        The module dict.  ``patientName`` is the first PN value as JSON holds
        it: an object ``{"Alphabetic", "Ideographic"?, "Phonetic"?}``.
    """
    data = frame.data
    return {
        # Cornerstone quirk: capital "ID" here (5.x tag modules say patientId)
        "patientID": get_value(data.get("00100020")),  # (0010,0020) PatientID
        "patientName": get_value(data.get("00100010")),  # (0010,0010) PatientName
    }


def patient_study_module(frame: Frame, image_id: str) -> PatientStudyModule:
    """``patientStudyModule``: age, size, sex and weight.

    Args:
        frame: The frame to read.
        image_id: The imageId asked about (unused).

    Returns:
        The module dict.
    """
    data = frame.data
    return {
        # Cornerstone quirk: parseFloat ignores the AS unit, "018M" -> 18
        "patientAge": get_number_value(data.get("00101010")),  # (0010,1010) PatientAge
        "patientSize": get_number_value(
            data.get("00101020")
        ),  # (0010,1020) PatientSize
        "patientSex": get_value(data.get("00100040")),  # (0010,0040) PatientSex
        "patientWeight": get_number_value(data.get("00101030")),  # (0010,1030)
    }
