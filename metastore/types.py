"""Type aliases and protocols shared by every layer (a leaf module).

``DicomJson`` is one instance in DICOM JSON form (PS3.18 F.2): keys are
8-digit upper-case hex tags, values ``{"vr": ..., "Value": [...]}`` or
``{"vr": ..., "BulkDataURI": ...}`` / ``{"vr": ..., "InlineBinary": ...}``.

A provider is anything callable as ``provider(type, image_id, *args)`` that
returns a module value, or ``None`` for "no answer" (Cornerstone's
``undefined``; see ``metastore.registry``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol, TypeAlias

#: A JSON-like value: what module dicts and DICOM JSON are made of.
JSON: TypeAlias = Any
#: One DICOM JSON instance object.
DicomJson: TypeAlias = dict[str, Any]
#: The value of one module: usually a dict with camelCase keys, sometimes a
#: list (ultrasoundEnhancedRegionModule) or ``None``.
ModuleValue: TypeAlias = Any


class Provider(Protocol):
    """A metadata provider: ``provider(type, image_id, *args) -> value | None``."""

    def __call__(self, type: str, image_id: str, /, *args: Any) -> Any:
        """Answer one metadata question, or return ``None`` for no answer."""
        ...


class ModuleType(StrEnum):
    """The module types metastore answers, in the oracle's query order.

    The string values are Cornerstone's, byte for byte.
    """

    GENERAL_STUDY = "generalStudyModule"
    GENERAL_SERIES = "generalSeriesModule"
    GENERAL_IMAGE = "generalImageModule"
    PATIENT = "patientModule"
    PATIENT_STUDY = "patientStudyModule"
    NM_MULTIFRAME_GEOMETRY = "nmMultiframeGeometryModule"
    IMAGE_PLANE = "imagePlaneModule"
    IMAGE_PIXEL = "imagePixelModule"
    VOI_LUT = "voiLutModule"
    MODALITY_LUT = "modalityLutModule"
    SOP_COMMON = "sopCommonModule"
    PET_ISOTOPE = "petIsotopeModule"
    PET_SERIES = "petSeriesModule"
    PET_IMAGE = "petImageModule"
    OVERLAY_PLANE = "overlayPlaneModule"
    TRANSFER_SYNTAX = "transferSyntax"
    MULTIFRAME = "multiframeModule"
    ULTRASOUND_ENHANCED_REGION = "ultrasoundEnhancedRegionModule"
    CALIBRATION = "calibrationModule"
    IMAGE_URL = "imageUrlModule"
    CINE = "cineModule"
    INSTANCE = "instance"
    # Asked by the oracle, never answered by the WADO-RS provider.
    FRAME_OF_REFERENCE = "frameOfReferenceModule"
    SCALING = "scalingModule"
    PATIENT_DEMOGRAPHIC = "patientDemographicModule"
    ECG = "ecgModule"
