"""Type-level checks of the typed module answers: run by mypy, never by pytest.

tests/test_module_types.py runs mypy (strict, ``warn_unused_ignores``) on
this file.  Each ``assert_type`` pins what a caller sees; each
``# type: ignore[...]`` marks a line that must stay a type error (a
misspelled module type or field): if it stopped being one, the ignore would
be unused and mypy would fail.  Nothing here is executed.
"""

from __future__ import annotations

from typing import assert_type

from metastore import (
    CalibrationModule,
    CineModule,
    DatabaseProvider,
    DicomJsonProvider,
    FrameModules,
    FrameOfReferenceModule,
    GeneralImageModule,
    GeneralSeriesModule,
    GeneralStudyModule,
    ImagePixelModule,
    ImagePlaneModule,
    ImageUrlModule,
    InMemoryProvider,
    InstanceModule,
    ModalityLutModule,
    ModuleAnswer,
    ModuleType,
    ModuleTypeName,
    MultiframeModule,
    NmMultiframeGeometryModule,
    OverlayPlaneModule,
    OverrideProvider,
    PatientDemographicModule,
    PatientModule,
    PatientStudyModule,
    PersonName,
    PetImageModule,
    PetIsotopeModule,
    PetSeriesModule,
    Registry,
    ScalingModule,
    SopCommonModule,
    TransferSyntaxModule,
    UltrasoundRegion,
    VoiLutModule,
    build_module,
    frame_modules,
    metadata,
)
from metastore.moduletypes import EcgModule
from metastore.types import DicomJson


def every_name_has_its_answer(registry: Registry, image_id: str) -> None:
    """The registry's get: one answer type per module type name."""
    get = registry.get
    assert_type(get("generalStudyModule", image_id), GeneralStudyModule | None)
    assert_type(get("generalSeriesModule", image_id), GeneralSeriesModule | None)
    assert_type(get("generalImageModule", image_id), GeneralImageModule | None)
    assert_type(get("patientModule", image_id), PatientModule | None)
    assert_type(get("patientStudyModule", image_id), PatientStudyModule | None)
    assert_type(
        get("nmMultiframeGeometryModule", image_id), NmMultiframeGeometryModule | None
    )
    assert_type(get("imagePlaneModule", image_id), ImagePlaneModule | None)
    assert_type(get("imagePixelModule", image_id), ImagePixelModule | None)
    assert_type(get("voiLutModule", image_id), VoiLutModule | None)
    assert_type(get("modalityLutModule", image_id), ModalityLutModule | None)
    assert_type(get("sopCommonModule", image_id), SopCommonModule | None)
    assert_type(get("petIsotopeModule", image_id), PetIsotopeModule | None)
    assert_type(get("petSeriesModule", image_id), PetSeriesModule | None)
    assert_type(get("petImageModule", image_id), PetImageModule | None)
    assert_type(get("overlayPlaneModule", image_id), OverlayPlaneModule | None)
    assert_type(get("transferSyntax", image_id), TransferSyntaxModule | None)
    assert_type(get("multiframeModule", image_id), MultiframeModule | None)
    assert_type(
        get("ultrasoundEnhancedRegionModule", image_id), list[UltrasoundRegion] | None
    )
    assert_type(get("calibrationModule", image_id), CalibrationModule | None)
    assert_type(get("imageUrlModule", image_id), ImageUrlModule | None)
    assert_type(get("cineModule", image_id), CineModule | None)
    assert_type(get("instance", image_id), InstanceModule | None)
    assert_type(get("frameOfReferenceModule", image_id), FrameOfReferenceModule | None)
    assert_type(get("scalingModule", image_id), ScalingModule | None)
    assert_type(
        get("patientDemographicModule", image_id), PatientDemographicModule | None
    )
    assert_type(get("ecgModule", image_id), EcgModule | None)


def names_and_enum_members(registry: Registry, image_id: str, *args: object) -> None:
    """Enum members, extra arguments, a ModuleTypeName variable, any string."""
    assert_type(registry.get(ModuleType.IMAGE_PLANE, image_id), ImagePlaneModule | None)
    assert_type(
        registry.get("imagePlaneModule", image_id, *args), ImagePlaneModule | None
    )
    assert_type(metadata.get("voiLutModule", image_id), VoiLutModule | None)
    some: ModuleTypeName = "cineModule"
    assert_type(registry.get(some, image_id), ModuleAnswer | None)
    for member in ModuleType:
        assert_type(registry.get(member, image_id), ModuleAnswer | None)
    assert_type(registry.get_any("calibratedPixelSpacing", image_id), object)
    assert_type(registry.get_after(metadata, "imagePlaneModule", image_id), object)


def misspelled_names_are_errors(registry: Registry, image_id: str) -> None:
    """A name outside ModuleTypeName, or a plain str, needs get_any."""
    registry.get("imagePlaneModul", image_id)  # type: ignore[call-overload]
    registry.get("ImagePlaneModule", image_id)  # type: ignore[call-overload]
    name: str = "imagePlaneModule"
    registry.get(name, image_id)  # type: ignore[call-overload]
    registry.get_any(name, image_id)


def fields_are_typed(registry: Registry, image_id: str) -> None:
    """Field types, nested shapes, and misspelled field names."""
    plane = registry.get("imagePlaneModule", image_id)
    if plane is not None:
        assert_type(plane["rowCosines"], list[float])
        assert_type(plane["pixelSpacing"], list[float] | None)
        assert_type(plane["usingDefaultValues"], bool)
        plane["rowCosine"]  # type: ignore[typeddict-item]
    patient = registry.get("patientModule", image_id)
    if patient is not None:
        assert_type(patient["patientName"], PersonName | None)
        patient["patientId"]  # type: ignore[typeddict-item]
    overlays = registry.get("overlayPlaneModule", image_id)
    if overlays is not None:
        assert_type(overlays["overlays"][0]["pixelData"], list[int] | None)
    pet = registry.get("petIsotopeModule", image_id)
    if pet is not None:
        info = pet["radiopharmaceuticalInfo"]
        assert_type(info["radionuclideHalfLife"], float | None)
    regions = registry.get("ultrasoundEnhancedRegionModule", image_id)
    if regions is not None:
        assert_type(regions[0]["physicalDeltaX"], float | None)
    url = registry.get("imageUrlModule", image_id)
    if url is not None:
        assert_type(url["rendered"], str)


def providers_are_typed(
    database: DatabaseProvider,
    dicom_json: DicomJsonProvider,
    memory: InMemoryProvider,
    overrides: OverrideProvider,
    image_id: str,
) -> None:
    """Every provider's get (and the provider called as a function)."""
    assert_type(database.get("imagePlaneModule", image_id), ImagePlaneModule | None)
    assert_type(database("imagePixelModule", image_id), ImagePixelModule | None)
    assert_type(dicom_json.get("voiLutModule", image_id), VoiLutModule | None)
    assert_type(dicom_json("instance", image_id), InstanceModule | None)
    assert_type(memory.get("scalingModule", image_id), ScalingModule | None)
    assert_type(overrides.get("imagePlaneModule", image_id), ImagePlaneModule | None)
    assert_type(database.get_any("anything", image_id), object)
    assert_type(memory.get_any("calibratedPixelSpacing", image_id), object)
    database.get("imagePlaneModul", image_id)  # type: ignore[call-overload]
    dicom_json.get("imagePlaneModul", image_id)  # type: ignore[call-overload]
    memory.get("scalingModul", image_id)  # type: ignore[call-overload]
    overrides.get("imagePlaneModul", image_id)  # type: ignore[call-overload]
    database("imagePlaneModul", image_id)  # type: ignore[call-overload]


def typed_providers_register(
    registry: Registry,
    database: DatabaseProvider,
    dicom_json: DicomJsonProvider,
    memory: InMemoryProvider,
) -> None:
    """Typed providers are providers: registered as objects or bound gets."""
    registry.add_provider(database)
    registry.add_provider(database.get, 10)
    registry.add_provider(dicom_json.get)
    registry.add_provider(memory, 100)
    registry.add_provider(OverrideProvider(registry).get, 1000)
    registry.add_provider(lambda t, i, *a: {"modality": "CT"})
    registry.get_normalized("wadors:x", ["generalSeriesModule"], database.get_any)


def builders_are_typed(instance: DicomJson, image_id: str) -> None:
    """build_module and frame_modules."""
    assert_type(
        build_module("imagePlaneModule", instance, image_id, 1),
        ImagePlaneModule | None,
    )
    build_module("imagePlaneModul", instance, image_id, 1)  # type: ignore[call-overload]
    modules = frame_modules(instance, image_id, None)
    assert_type(modules, FrameModules | None)
    if modules is not None:
        assert_type(modules["imagePlaneModule"], ImagePlaneModule | None)
        modules["imagePlaneModul"]  # type: ignore[typeddict-item]
