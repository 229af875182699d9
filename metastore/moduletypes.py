"""The module vocabulary: type names, the shape of every answer, typed lookups.

This module owns what Cornerstone's ``MetadataModules`` enum and
``MetadataModuleTypes`` own: :class:`ModuleType` (the names, as an enum),
:data:`ModuleTypeName` (the same names as a ``Literal``), one ``TypedDict``
per module type (:class:`ImagePlaneModule`, ...) with the nested shapes
(:class:`PersonName`, :class:`Overlay`, :class:`RadiopharmaceuticalInfo`,
:class:`UltrasoundRegion`), :class:`FrameModules` (every type of one frame),
and :class:`ModuleLookup`, the typed signature of every ``get(type,
image_id)`` in metastore: ``registry.get("imagePlaneModule", image_id)`` is an
``ImagePlaneModule | None`` to a type checker, and a misspelled type name is
a type error.

Types only: values stay plain ``dict``s and ``list``s at run time, nothing is
checked or copied.  The field types are those a conforming DICOM JSON source
gives (PS3.18 F.2: text VRs as strings, PN as an object, numbers as
numbers); fields read "raw" (Cornerstone's ``getValue``) hold whatever the
source holds, so a malformed source can put another JSON value there.
Numbers read through ``parseFloat`` are always ``float`` (NaN included) or
``None``.

At run time a provider may be asked any string (Cornerstone's semantics);
the names outside :data:`ModuleTypeName` go through each lookup's
``get_any``.  This module imports nothing of metastore (a leaf).
"""

# No ``from __future__ import annotations`` here: TypedDict would keep every
# field type as a string and compile each one at import (twice the import
# time), and typing.get_type_hints would need this module's namespace.

from collections.abc import Callable
from enum import StrEnum
from typing import (
    Any,
    Concatenate,
    Literal,
    NotRequired,
    ParamSpec,
    Protocol,
    TypeAlias,
    TypedDict,
    TypeVar,
    cast,
    overload,
)

__all__ = [
    "CalibrationModule",
    "CineModule",
    "EcgModule",
    "FrameModules",
    "FrameOfReferenceModule",
    "GeneralImageModule",
    "GeneralSeriesModule",
    "GeneralStudyModule",
    "ImagePixelModule",
    "ImagePlaneModule",
    "ImageUrlModule",
    "InstanceModule",
    "ModalityLutModule",
    "ModuleAnswer",
    "ModuleLookup",
    "ModuleLookupMethod",
    "ModuleType",
    "ModuleTypeName",
    "MultiframeModule",
    "NmMultiframeGeometryModule",
    "Overlay",
    "OverlayPlaneModule",
    "PatientDemographicModule",
    "PatientModule",
    "PatientStudyModule",
    "PersonName",
    "PetImageModule",
    "PetIsotopeModule",
    "PetSeriesModule",
    "RadiopharmaceuticalInfo",
    "ScalingModule",
    "SopCommonModule",
    "TransferSyntaxModule",
    "UltrasoundEnhancedRegionModule",
    "UltrasoundRegion",
    "VoiLutModule",
    "typed_lookup",
    "typed_lookup_method",
    "untyped_lookup_method",
]


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


#: Every :class:`ModuleType` value, as a ``Literal`` (same order).  A test
#: keeps the two equal.
ModuleTypeName: TypeAlias = Literal[
    "generalStudyModule",
    "generalSeriesModule",
    "generalImageModule",
    "patientModule",
    "patientStudyModule",
    "nmMultiframeGeometryModule",
    "imagePlaneModule",
    "imagePixelModule",
    "voiLutModule",
    "modalityLutModule",
    "sopCommonModule",
    "petIsotopeModule",
    "petSeriesModule",
    "petImageModule",
    "overlayPlaneModule",
    "transferSyntax",
    "multiframeModule",
    "ultrasoundEnhancedRegionModule",
    "calibrationModule",
    "imageUrlModule",
    "cineModule",
    "instance",
    "frameOfReferenceModule",
    "scalingModule",
    "patientDemographicModule",
    "ecgModule",
]


# -- nested shapes ----------------------------------------------------------


class PersonName(TypedDict, total=False):
    """A PN value as DICOM JSON holds it (PS3.18 F.2.2): one string per group."""

    Alphabetic: str
    Ideographic: str
    Phonetic: str


class RadiopharmaceuticalInfo(TypedDict):
    """``petIsotopeModule.radiopharmaceuticalInfo``: the first (0054,0016) item."""

    #: (0018,1072) RadiopharmaceuticalStartTime, raw TM text; ``""`` if absent.
    radiopharmaceuticalStartTime: str | None
    #: (0018,1078) RadiopharmaceuticalStartDateTime, raw DT text; ``""`` if absent.
    radiopharmaceuticalStartDateTime: str | None
    #: (0018,1074) RadionuclideTotalDose.
    radionuclideTotalDose: float | None
    #: (0018,1075) RadionuclideHalfLife.
    radionuclideHalfLife: float | None


class Overlay(TypedDict):
    """One overlay of ``overlayPlaneModule.overlays`` (groups 6000-601E)."""

    #: (60xx,0010) OverlayRows.
    rows: float | None
    #: (60xx,0011) OverlayColumns.
    columns: float | None
    #: (60xx,0040) OverlayType, raw ("G" or "R").
    type: str | None
    #: 0-based column of the origin: (60xx,0050) OverlayOrigin value 2, minus 1.
    x: float
    #: 0-based row of the origin: (60xx,0050) OverlayOrigin value 1, minus 1.
    y: float
    #: The overlay bits (0 or 1), LSB first; ``None`` when they are only a
    #: BulkDataURI.
    pixelData: list[int] | None
    #: (60xx,0022) OverlayDescription.
    description: str | None
    #: (60xx,1500) OverlayLabel.
    label: str | None
    #: (60xx,1301) ROIArea, as text.
    roiArea: str | None
    #: (60xx,1302) ROIMean, as text.
    roiMean: str | None
    #: (60xx,1303) ROIStandardDeviation, as text.
    roiStandardDeviation: str | None


class UltrasoundRegion(TypedDict):
    """One item of (0018,6011) SequenceOfUltrasoundRegions (first numbers)."""

    regionLocationMinY0: float | None
    regionLocationMaxY1: float | None
    regionLocationMinX0: float | None
    regionLocationMaxX1: float | None
    referencePixelX0: float | None
    referencePixelY0: float | None
    physicalDeltaX: float | None
    physicalDeltaY: float | None
    physicalUnitsXDirection: float | None
    physicalUnitsYDirection: float | None
    #: (0018,602A) ReferencePixelPhysicalValueY, under Cornerstone's name.
    referencePhysicalPixelValueY: float | None
    #: (0018,6028) ReferencePixelPhysicalValueX, under Cornerstone's name.
    referencePhysicalPixelValueX: float | None
    regionSpatialFormat: float | None
    regionDataType: float | None
    regionFlags: float | None
    transducerFrequency: float | None


# -- the modules ------------------------------------------------------------


class GeneralStudyModule(TypedDict):
    """``generalStudyModule``: raw text of four study attributes."""

    #: (0008,1030) StudyDescription.
    studyDescription: str | None
    #: (0008,0020) StudyDate, raw DA text.
    studyDate: str | None
    #: (0008,0030) StudyTime, raw TM text.
    studyTime: str | None
    #: (0008,0050) AccessionNumber.
    accessionNumber: str | None


class GeneralSeriesModule(TypedDict):
    """``generalSeriesModule``: modality, UIDs, number, dates and times."""

    #: (0008,0060) Modality.
    modality: str | None
    #: (0020,000E) SeriesInstanceUID.
    seriesInstanceUID: str | None
    #: (0008,103E) SeriesDescription.
    seriesDescription: str | None
    #: (0020,0011) SeriesNumber.
    seriesNumber: float | None
    #: (0020,000D) StudyInstanceUID.
    studyInstanceUID: str | None
    #: (0008,0021) SeriesDate, raw DA text.
    seriesDate: str | None
    #: (0008,0031) SeriesTime, raw TM text.
    seriesTime: str | None
    #: (0008,0022) AcquisitionDate, raw DA text.
    acquisitionDate: str | None
    #: (0008,0032) AcquisitionTime, raw TM text.
    acquisitionTime: str | None


class GeneralImageModule(TypedDict):
    """``generalImageModule``: SOP instance UID, instance number, lossy fields."""

    #: (0008,0018) SOPInstanceUID.
    sopInstanceUID: str | None
    #: (0020,0013) InstanceNumber.
    instanceNumber: float | None
    #: (0028,2110) LossyImageCompression, raw ("00" or "01").
    lossyImageCompression: str | None
    #: (0028,2112) LossyImageCompressionRatio, first value.
    lossyImageCompressionRatio: float | None
    #: (0028,2114) LossyImageCompressionMethod, first value, raw.
    lossyImageCompressionMethod: str | None


class PatientModule(TypedDict):
    """``patientModule`` (Cornerstone spells the ID key ``patientID`` here)."""

    #: (0010,0020) PatientID.
    patientID: str | None
    #: (0010,0010) PatientName, the first PN value as an object.
    patientName: PersonName | None


class PatientStudyModule(TypedDict):
    """``patientStudyModule``: age, size, sex and weight."""

    #: (0010,1010) PatientAge through parseFloat: "045Y" is 45.0.
    patientAge: float | None
    #: (0010,1020) PatientSize.
    patientSize: float | None
    #: (0010,0040) PatientSex, raw.
    patientSex: str | None
    #: (0010,1030) PatientWeight.
    patientWeight: float | None


class NmMultiframeGeometryModule(TypedDict):
    """``nmMultiframeGeometryModule``: NM geometry without defaults."""

    #: (0008,0060) Modality.
    modality: str | None
    #: (0008,0008) ImageType, first value only.
    imageType: str | None
    #: (0008,0008) ImageType, third value.
    imageSubType: str | None
    #: (0020,0037), else the first (0054,0022) item's, for NM RECON images.
    imageOrientationPatient: list[float] | None
    #: (0020,0032), else the first (0054,0022) item's, for NM RECON images.
    imagePositionPatient: list[float] | None
    #: (0018,0050) SliceThickness.
    sliceThickness: float | None
    #: (0018,0088) SpacingBetweenSlices.
    spacingBetweenSlices: float | None
    #: (0028,0030) PixelSpacing (row, column).
    pixelSpacing: list[float] | None
    #: (0028,0008) NumberOfFrames.
    numberOfFrames: float | None
    isNMReconstructable: bool


class ImagePlaneModule(TypedDict):
    """``imagePlaneModule``: orientation, position and spacing, with defaults."""

    #: (0020,0052) FrameOfReferenceUID.
    frameOfReferenceUID: str | None
    #: (0028,0010) Rows.
    rows: float | None
    #: (0028,0011) Columns.
    columns: float | None
    #: (0020,0037) ImageOrientationPatient; ``[1, 0, 0, 0, 1, 0]`` if missing.
    imageOrientationPatient: list[float]
    rowCosines: list[float]
    columnCosines: list[float]
    #: (0020,0032) ImagePositionPatient; ``[0, 0, 0]`` if missing.
    imagePositionPatient: list[float]
    #: (0018,0050) SliceThickness.
    sliceThickness: float | None
    #: (0020,1041) SliceLocation.
    sliceLocation: float | None
    #: (0028,0030) PixelSpacing (row, column); ``None`` if missing.
    pixelSpacing: list[float] | None
    #: PixelSpacing value 1; 1.0 if missing.
    rowPixelSpacing: float
    #: PixelSpacing value 2; 1.0 if missing.
    columnPixelSpacing: float
    #: Whether a default replaced orientation, position or spacing.
    usingDefaultValues: bool


class ImagePixelModule(TypedDict):
    """``imagePixelModule``: the pixel description and palette tables."""

    #: (0028,0002) SamplesPerPixel.
    samplesPerPixel: float | None
    #: (0028,0004) PhotometricInterpretation.
    photometricInterpretation: str | None
    #: (0028,0010) Rows.
    rows: float | None
    #: (0028,0011) Columns.
    columns: float | None
    #: (0028,0100) BitsAllocated.
    bitsAllocated: float | None
    #: (0028,0101) BitsStored.
    bitsStored: float | None
    #: (0028,0102) HighBit, raw: a JSON number (a string stays a string).
    highBit: float | str | None
    #: (0028,0103) PixelRepresentation.
    pixelRepresentation: float | None
    #: (0028,0006) PlanarConfiguration.
    planarConfiguration: float | None
    #: (0028,0034) PixelAspectRatio, first value, raw (IS: a JSON number, or
    #: text from servers that send IS as strings).
    pixelAspectRatio: float | str | None
    #: (0028,0106) SmallestImagePixelValue.
    smallestPixelValue: float | None
    #: (0028,0107) LargestImagePixelValue.
    largestPixelValue: float | None
    #: (0028,1101-1103) Red/Green/Blue PaletteColorLookupTableDescriptor.
    redPaletteColorLookupTableDescriptor: list[float] | None
    greenPaletteColorLookupTableDescriptor: list[float] | None
    bluePaletteColorLookupTableDescriptor: list[float] | None
    #: (0028,1201-1203) Red/Green/Blue PaletteColorLookupTableData, when the
    #: JSON carries them as ``Value`` (else ``None``).
    redPaletteColorLookupTableData: list[float] | None
    greenPaletteColorLookupTableData: list[float] | None
    bluePaletteColorLookupTableData: list[float] | None


class VoiLutModule(TypedDict):
    """``voiLutModule``: window centres and widths (every value)."""

    #: (0028,1050) WindowCenter.
    windowCenter: list[float] | None
    #: (0028,1051) WindowWidth.
    windowWidth: list[float] | None
    #: (0028,1056) VOILUTFunction, raw.
    voiLUTFunction: str | None


class ModalityLutModule(TypedDict):
    """``modalityLutModule``: rescale intercept, slope and type."""

    #: (0028,1052) RescaleIntercept.
    rescaleIntercept: float | None
    #: (0028,1053) RescaleSlope.
    rescaleSlope: float | None
    #: (0028,1054) RescaleType, raw.
    rescaleType: str | None


class SopCommonModule(TypedDict):
    """``sopCommonModule``: SOP class and instance UIDs."""

    #: (0008,0016) SOPClassUID.
    sopClassUID: str | None
    #: (0008,0018) SOPInstanceUID.
    sopInstanceUID: str | None


class PetIsotopeModule(TypedDict):
    """``petIsotopeModule`` (no answer without (0054,0016))."""

    radiopharmaceuticalInfo: RadiopharmaceuticalInfo


class PetSeriesModule(TypedDict):
    """``petSeriesModule``: corrected image, units and decay correction."""

    #: (0028,0051) CorrectedImage, every value joined with a backslash.
    correctedImage: str | None
    #: (0054,1001) Units.
    units: str | None
    #: (0054,1102) DecayCorrection.
    decayCorrection: str | None


class PetImageModule(TypedDict):
    """``petImageModule``: frame reference time and actual frame duration."""

    #: (0054,1300) FrameReferenceTime.
    frameReferenceTime: float | None
    #: (0018,1242) ActualFrameDuration.
    actualFrameDuration: float | None


class OverlayPlaneModule(TypedDict):
    """``overlayPlaneModule``: the real overlays (divergence 3)."""

    overlays: list[Overlay]


class TransferSyntaxModule(TypedDict):
    """``transferSyntax``."""

    #: (0002,0010) TransferSyntaxUID, else (0008,3002) AvailableTransferSyntaxUID.
    transferSyntaxUID: str | None


class MultiframeModule(TypedDict):
    """``multiframeModule``: NumberOfFrames and this frame's macro items."""

    #: (0028,0008) NumberOfFrames as Cornerstone's ``getTagValue`` reads it:
    #: the first value if truthy, else the ``Value`` array (``[0]``), else
    #: the element itself; ``None`` when absent.
    NumberOfFrames: float | str | list[Any] | dict[str, Any] | None
    #: The first item of each macro of this frame's (5200,9230) item, as raw
    #: DICOM JSON; present when functional groups apply.
    PerFrameFunctionalInformation: NotRequired[list[dict[str, Any]]]
    #: The first item of each (5200,9229) macro, as raw DICOM JSON.
    SharedFunctionalInformation: NotRequired[list[dict[str, Any]]]


#: ``ultrasoundEnhancedRegionModule``: the region list itself, not a dict
#: (``None`` when (0018,6011) is missing or empty).
UltrasoundEnhancedRegionModule: TypeAlias = list[UltrasoundRegion]


class CalibrationModule(TypedDict):
    """``calibrationModule`` (no answer unless Modality is ``"US"``)."""

    sequenceOfUltrasoundRegions: list[UltrasoundRegion] | None


class ImageUrlModule(TypedDict):
    """``imageUrlModule``: rendered and thumbnail URLs made from the imageId."""

    #: ``False`` without a transfer syntax, the UID for a video one, else None.
    isVideo: str | Literal[False] | None
    rendered: str
    thumbnail: str


class CineModule(TypedDict):
    """``cineModule``."""

    #: (0018,0040) CineRate, raw (IS: a number, or text from some servers).
    cineRate: float | str | None
    #: (0028,0008) NumberOfFrames.
    numberOfFrames: float | None


class InstanceModule(TypedDict):
    """``instance``: twelve modules merged, keys UpperCamel (``getNormalized``).

    The union of multiframeModule, generalSeriesModule, patientStudyModule,
    imagePixelModule, modalityLutModule, voiLutModule, sopCommonModule,
    petIsotopeModule, overlayPlaneModule, transferSyntax, petSeriesModule and
    petImageModule, each key renamed by ``to_upper_camel_tag``.  A module
    without an answer adds no keys.
    """

    NumberOfFrames: NotRequired[float | str | list[Any] | dict[str, Any] | None]
    PerFrameFunctionalInformation: NotRequired[list[dict[str, Any]]]
    SharedFunctionalInformation: NotRequired[list[dict[str, Any]]]
    Modality: str | None
    SeriesInstanceUID: str | None
    SeriesDescription: str | None
    SeriesNumber: float | None
    StudyInstanceUID: str | None
    SeriesDate: str | None
    SeriesTime: str | None
    AcquisitionDate: str | None
    AcquisitionTime: str | None
    PatientAge: float | None
    PatientSize: float | None
    PatientSex: str | None
    PatientWeight: float | None
    SamplesPerPixel: float | None
    PhotometricInterpretation: str | None
    Rows: float | None
    Columns: float | None
    BitsAllocated: float | None
    BitsStored: float | None
    HighBit: float | str | None
    PixelRepresentation: float | None
    PlanarConfiguration: float | None
    PixelAspectRatio: float | str | None
    SmallestPixelValue: float | None
    LargestPixelValue: float | None
    RedPaletteColorLookupTableDescriptor: list[float] | None
    GreenPaletteColorLookupTableDescriptor: list[float] | None
    BluePaletteColorLookupTableDescriptor: list[float] | None
    RedPaletteColorLookupTableData: list[float] | None
    GreenPaletteColorLookupTableData: list[float] | None
    BluePaletteColorLookupTableData: list[float] | None
    RescaleIntercept: float | None
    RescaleSlope: float | None
    RescaleType: str | None
    WindowCenter: list[float] | None
    WindowWidth: list[float] | None
    VOILUTFunction: str | None
    SOPClassUID: str | None
    SOPInstanceUID: str | None
    RadiopharmaceuticalInfo: NotRequired[RadiopharmaceuticalInfo]
    Overlays: list[Overlay]
    TransferSyntaxUID: str | None
    CorrectedImage: str | None
    Units: str | None
    DecayCorrection: str | None
    FrameReferenceTime: float | None
    ActualFrameDuration: float | None


#: ``frameOfReferenceModule``: a name Cornerstone 5.x defines without fields
#: or a provider; metastore never answers it.
FrameOfReferenceModule: TypeAlias = dict[str, object]


class ScalingModule(TypedDict):
    """``scalingModule``: PET SUV factors, computed elsewhere and added.

    The shape of ``@cornerstonejs/calculate-suv``'s result, as Cornerstone's
    demo ``ptScalingMetaDataProvider`` and OHIF store it; metastore's own
    providers never compute it (an :class:`~metastore.InMemoryProvider` holds
    it).
    """

    suvbw: float
    suvlbm: NotRequired[float]
    suvbsa: NotRequired[float]


class PatientDemographicModule(TypedDict):
    """``patientDemographicModule``: OHIF's (deprecated) module; not answered here."""

    patientSex: str | None


#: ``ecgModule``: answered by no metastore provider (Cornerstone 5.x dropped
#: the WADO-RS ECG branch), so its fields are not defined here.
EcgModule: TypeAlias = dict[str, object]


#: Any answer to a known module type (``None``, "no answer", aside).
ModuleAnswer: TypeAlias = (
    GeneralStudyModule
    | GeneralSeriesModule
    | GeneralImageModule
    | PatientModule
    | PatientStudyModule
    | NmMultiframeGeometryModule
    | ImagePlaneModule
    | ImagePixelModule
    | VoiLutModule
    | ModalityLutModule
    | SopCommonModule
    | PetIsotopeModule
    | PetSeriesModule
    | PetImageModule
    | OverlayPlaneModule
    | TransferSyntaxModule
    | MultiframeModule
    | UltrasoundEnhancedRegionModule
    | CalibrationModule
    | ImageUrlModule
    | CineModule
    | InstanceModule
    | FrameOfReferenceModule
    | ScalingModule
    | PatientDemographicModule
    | EcgModule
)


class FrameModules(TypedDict):
    """Every module type of one frame, as ``frame_modules`` gives it.

    One key per :data:`ModuleTypeName`, in its order; ``None`` is no answer.
    """

    generalStudyModule: GeneralStudyModule | None
    generalSeriesModule: GeneralSeriesModule | None
    generalImageModule: GeneralImageModule | None
    patientModule: PatientModule | None
    patientStudyModule: PatientStudyModule | None
    nmMultiframeGeometryModule: NmMultiframeGeometryModule | None
    imagePlaneModule: ImagePlaneModule | None
    imagePixelModule: ImagePixelModule | None
    voiLutModule: VoiLutModule | None
    modalityLutModule: ModalityLutModule | None
    sopCommonModule: SopCommonModule | None
    petIsotopeModule: PetIsotopeModule | None
    petSeriesModule: PetSeriesModule | None
    petImageModule: PetImageModule | None
    overlayPlaneModule: OverlayPlaneModule | None
    transferSyntax: TransferSyntaxModule | None
    multiframeModule: MultiframeModule | None
    ultrasoundEnhancedRegionModule: UltrasoundEnhancedRegionModule | None
    calibrationModule: CalibrationModule | None
    imageUrlModule: ImageUrlModule | None
    cineModule: CineModule | None
    instance: InstanceModule | None
    frameOfReferenceModule: FrameOfReferenceModule | None
    scalingModule: ScalingModule | None
    patientDemographicModule: PatientDemographicModule | None
    ecgModule: EcgModule | None


# -- typed lookups ----------------------------------------------------------

_P = ParamSpec("_P")
_S = TypeVar("_S")
_S_contra = TypeVar("_S_contra", contravariant=True)


class ModuleLookup(Protocol[_P]):
    """The typed ``get(type, ...)``: one overload per module type name.

    ``lookup("imagePlaneModule", image_id)`` is an ``ImagePlaneModule |
    None``; a :class:`ModuleType` member works as its string; a name that
    is not a :data:`ModuleTypeName` matches no overload (a type error: use
    the lookup's ``get_any`` for other strings).  ``_P`` is the rest of the
    signature after the type (``image_id, *args`` for providers and the
    registry).
    """

    # One overload per name, in ModuleType order; the last takes a
    # ModuleTypeName or ModuleType not known statically (a variable).
    @overload
    def __call__(
        self,
        type: Literal["generalStudyModule", ModuleType.GENERAL_STUDY],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> GeneralStudyModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["generalSeriesModule", ModuleType.GENERAL_SERIES],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> GeneralSeriesModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["generalImageModule", ModuleType.GENERAL_IMAGE],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> GeneralImageModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["patientModule", ModuleType.PATIENT],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> PatientModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["patientStudyModule", ModuleType.PATIENT_STUDY],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> PatientStudyModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["nmMultiframeGeometryModule", ModuleType.NM_MULTIFRAME_GEOMETRY],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> NmMultiframeGeometryModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["imagePlaneModule", ModuleType.IMAGE_PLANE],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> ImagePlaneModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["imagePixelModule", ModuleType.IMAGE_PIXEL],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> ImagePixelModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["voiLutModule", ModuleType.VOI_LUT],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> VoiLutModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["modalityLutModule", ModuleType.MODALITY_LUT],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> ModalityLutModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["sopCommonModule", ModuleType.SOP_COMMON],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> SopCommonModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["petIsotopeModule", ModuleType.PET_ISOTOPE],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> PetIsotopeModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["petSeriesModule", ModuleType.PET_SERIES],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> PetSeriesModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["petImageModule", ModuleType.PET_IMAGE],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> PetImageModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["overlayPlaneModule", ModuleType.OVERLAY_PLANE],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> OverlayPlaneModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["transferSyntax", ModuleType.TRANSFER_SYNTAX],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> TransferSyntaxModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["multiframeModule", ModuleType.MULTIFRAME],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> MultiframeModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal[
            "ultrasoundEnhancedRegionModule", ModuleType.ULTRASOUND_ENHANCED_REGION
        ],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> UltrasoundEnhancedRegionModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["calibrationModule", ModuleType.CALIBRATION],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> CalibrationModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["imageUrlModule", ModuleType.IMAGE_URL],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> ImageUrlModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["cineModule", ModuleType.CINE],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> CineModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["instance", ModuleType.INSTANCE],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> InstanceModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["frameOfReferenceModule", ModuleType.FRAME_OF_REFERENCE],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> FrameOfReferenceModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["scalingModule", ModuleType.SCALING],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> ScalingModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["patientDemographicModule", ModuleType.PATIENT_DEMOGRAPHIC],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> PatientDemographicModule | None: ...
    @overload
    def __call__(
        self,
        type: Literal["ecgModule", ModuleType.ECG],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> EcgModule | None: ...
    @overload
    def __call__(
        self,
        type: ModuleTypeName | ModuleType,
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> ModuleAnswer | None: ...


class ModuleLookupMethod(Protocol[_S_contra, _P]):
    """A method typed as :class:`ModuleLookup` once bound to an instance.

    What :func:`typed_lookup_method` makes of a ``get(self, type: str,
    image_id, *args)`` method, for type checkers only: read on an instance
    it is a :class:`ModuleLookup`; read on the class, the plain function.
    """

    @overload
    def __get__(
        self, instance: None, owner: type[Any], /
    ) -> Callable[Concatenate[_S_contra, str, _P], object]: ...
    @overload
    def __get__(self, instance: _S_contra, owner: type[Any], /) -> ModuleLookup[_P]: ...


def typed_lookup(
    function: Callable[Concatenate[str, _P], object],
) -> ModuleLookup[_P]:
    """Type a ``function(type: str, ...)`` as a :class:`ModuleLookup`.

    The function itself is returned: nothing changes at run time, so it
    still answers any string.  Only type checkers see the overloads.
    """
    return cast("ModuleLookup[_P]", function)


def typed_lookup_method(
    method: Callable[Concatenate[_S, str, _P], object],
) -> ModuleLookupMethod[_S, _P]:
    """Type a ``get(self, type: str, ...)`` method as a :class:`ModuleLookup`.

    The method itself is returned (no wrapper, no cost on calls); on an
    instance, type checkers see one overload per module type name.
    """
    return cast("ModuleLookupMethod[_S, _P]", method)


def untyped_lookup_method(
    method: ModuleLookupMethod[_S, _P],
) -> Callable[Concatenate[_S, str, _P], object]:
    """The plain ``(self, type: str, ...) -> object`` view of a typed method.

    For ``get_any = untyped_lookup_method(get)``: the same function at run
    time, which type checkers let take any string type (the escape hatch for
    names that are not a :data:`ModuleTypeName`).
    """
    return cast("Callable[Concatenate[_S, str, _P], object]", method)
